"""Operator settings from the environment the chart sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from steno_operator.settings import GPU_TOLERATION, SettingsError, settings_from_env
from steno_operator.spec import Toleration

pytestmark = pytest.mark.unit


def test_defaults_tolerate_gpu_nodes_and_watch_everything() -> None:
    settings = settings_from_env({})
    assert settings.namespaces == () and settings.kubeconfig is None
    assert settings.placement.tolerations == (GPU_TOLERATION,)
    assert settings.worker.command == ("steno", "work") and settings.worker.gpu_resource == "nvidia.com/gpu"


def test_every_variable_is_read() -> None:
    settings = settings_from_env({
        "STENO_WORKER_IMAGE": "reg/steno@sha256:" + "1" * 64,
        "STENO_WORKER_COMMAND": '["/opt/steno/bin/steno", "work"]',
        "STENO_WORKER_ARGS": '["--device", "cuda"]',
        "STENO_WORKER_ENV": '{"STENO_CACHE_DIR": "/models"}',
        "STENO_NODE_SELECTOR": '{"pool": "gpu"}',
        "STENO_TOLERATIONS": '[{"key": "dedicated", "operator": "Equal", "value": "asr", "effect": "NoSchedule"}]',
        "STENO_PRIORITY_CLASS": "batch", "STENO_RUNTIME_CLASS": "nvidia",
        "STENO_NAMESPACES": "media, calls", "KUBECONFIG": "/k/config",
        "STENO_PROGRESS_PATCH_SECONDS": "2.5", "STENO_METRICS_PORT": "0",
    }, health_port=0)
    assert settings.worker.command == ("/opt/steno/bin/steno", "work")
    assert settings.worker.extra_args == ("--device", "cuda")
    assert settings.worker.extra_env == (("STENO_CACHE_DIR", "/models"),)
    assert settings.placement.node_selector == (("pool", "gpu"),)
    assert settings.placement.tolerations == (Toleration("dedicated", "Equal", "asr", "NoSchedule"),)
    assert (settings.placement.priority_class_name, settings.placement.runtime_class_name) == ("batch", "nvidia")
    assert settings.namespaces == ("media", "calls") and settings.kubeconfig == Path("/k/config")
    assert settings.progress_patch_s == 2.5 and settings.metrics_port == 0 and settings.health_port == 0


@pytest.mark.parametrize("env", [
    {"STENO_WORKER_COMMAND": "steno work"},
    {"STENO_TOLERATIONS": '[{"operator": "Equal"}]'},
    {"STENO_RESYNC_SECONDS": "-1"},
    {"STENO_PROGRESS_PORT": "zero"},
    {"STENO_WORKER_ENV": '{"A": 1}'},
])
def test_bad_values_are_refused_with_their_name(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))):
        settings_from_env(env)
