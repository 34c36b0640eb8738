"""The operator's settings: one frozen object, built once in ``main`` and passed explicitly.

Nothing reads the environment at import time. :func:`settings_from_env` is
called by the entry point with ``os.environ`` (the chart sets these
variables); command-line flags override a few of them. Everything else in the
operator receives an :class:`OperatorSettings` argument.

Worker pods get their image, command and GPU placement from here: the chart's
values are the cluster's defaults, and a TranscriptionJob's ``spec.placement``
overrides placement field by field.

=====================================  ==============================================
variable                               meaning (default)
=====================================  ==============================================
``STENO_WORKER_IMAGE``                 the pinned worker image (set by the chart)
``STENO_WORKER_IMAGE_PULL_POLICY``     its pull policy (IfNotPresent)
``STENO_WORKER_COMMAND``               JSON list: the worker's command (steno work)
``STENO_WORKER_ARGS``                  JSON list: extra worker arguments (none)
``STENO_WORKER_ENV``                   JSON object: extra worker environment (none)
``STENO_WORKER_SERVICE_ACCOUNT``       worker pods' ServiceAccount (the namespace's default)
``STENO_WORKER_CPU`` / ``_MEMORY``     requests (4 / 16Gi; memory is also the limit)
``STENO_WORKER_RUN_AS_USER``           numeric user of the worker (10001)
``STENO_SCRATCH_SIZE``                 the /tmp emptyDir's size limit (20Gi)
``STENO_GPU_RESOURCE``                 extended resource name (nvidia.com/gpu)
``STENO_NODE_SELECTOR``                JSON object (none)
``STENO_TOLERATIONS``                  JSON list (tolerate the nvidia.com/gpu taint)
``STENO_PRIORITY_CLASS``               PriorityClass of worker pods (none)
``STENO_RUNTIME_CLASS``                RuntimeClass of worker pods (none)
``STENO_PROGRESS_PORT``                the worker's WatchProgress port (50051)
``STENO_BACKOFF_LIMIT_PER_INDEX``      retries of one shard (3)
``STENO_TTL_SECONDS_AFTER_FINISHED``   how long finished Jobs stay (86400)
``STENO_NAMESPACES``                   exact namespace names, comma-separated (all)
``STENO_RESYNC_SECONDS``               idle re-check of each job (30)
``STENO_ACTIVE_POLL_SECONDS``          pod check while pods exist (5)
``STENO_PROGRESS_PATCH_SECONDS``       least time between progress patches (5)
``STENO_METRICS_PORT``                 Prometheus port, 0 to disable (8080)
``STENO_HEALTH_PORT``                  Kopf's liveness port, 0 to disable (8081)
=====================================  ==============================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steno_operator.spec import SpecError, Toleration, parse_toleration

GPU_RESOURCE = "nvidia.com/gpu"
# The taint GPU node pools carry (GKE, EKS and the NVIDIA GPU operator's docs use it).
GPU_TOLERATION = Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
DEFAULT_WORKER_COMMAND = ("steno", "work")
DEFAULT_PROGRESS_PORT = 50051
DEFAULT_RUN_AS_USER = 10001  # STENO_UID of the worker image (images/versions.env)
DEFAULT_BACKOFF_LIMIT_PER_INDEX = 3  # a shard retried 3 times then counts as failed
DEFAULT_TTL_SECONDS_AFTER_FINISHED = 24 * 3600  # the TranscriptionJob keeps the status anyway
DEFAULT_TERMINATION_GRACE_S = 30  # the worker stops within 20 s of SIGTERM (STOP_GRACE_S)
DEFAULT_RESYNC_S = 30.0
DEFAULT_ACTIVE_POLL_S = 5.0
DEFAULT_PROGRESS_PATCH_S = 5.0
DEFAULT_METRICS_PORT = 8080
DEFAULT_HEALTH_PORT = 8081


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class PlacementDefaults:
    """Where worker pods go unless a job says otherwise."""

    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = (GPU_TOLERATION,)
    priority_class_name: str | None = None
    runtime_class_name: str | None = None


@dataclass(frozen=True)
class WorkerPodSettings:
    """The worker pods' shape."""

    image: str = "steno-inference:latest"
    image_pull_policy: str = "IfNotPresent"
    command: tuple[str, ...] = DEFAULT_WORKER_COMMAND
    extra_args: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    service_account_name: str | None = None
    cpu_request: str = "4"
    memory: str = "16Gi"  # request and limit: a worker past it is killed, not the node
    scratch_size: str = "20Gi"
    run_as_user: int = DEFAULT_RUN_AS_USER
    gpu_resource: str = GPU_RESOURCE
    progress_port: int = DEFAULT_PROGRESS_PORT
    termination_grace_s: int = DEFAULT_TERMINATION_GRACE_S
    backoff_limit_per_index: int = DEFAULT_BACKOFF_LIMIT_PER_INDEX
    ttl_seconds_after_finished: int = DEFAULT_TTL_SECONDS_AFTER_FINISHED


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator is told, fixed for the process's life."""

    worker: WorkerPodSettings = field(default_factory=WorkerPodSettings)
    placement: PlacementDefaults = field(default_factory=PlacementDefaults)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: Path | None = None  # None: in-cluster, else $KUBECONFIG as given to main
    resync_s: float = DEFAULT_RESYNC_S  # re-check of a job with nothing in flight
    active_poll_s: float = DEFAULT_ACTIVE_POLL_S  # re-check while its pods exist
    progress_patch_s: float = DEFAULT_PROGRESS_PATCH_S  # bounded rate of progress patches
    retry_initial_s: float = 1.0  # back-off after an API or storage error, doubling
    retry_max_s: float = 60.0
    metrics_port: int = DEFAULT_METRICS_PORT  # 0: no metrics endpoint
    metrics_host: str = "0.0.0.0"
    health_port: int = DEFAULT_HEALTH_PORT  # 0: no liveness endpoint
    storage_timeout_s: float = 20.0  # per storage request of the operator

    def __post_init__(self) -> None:
        for name in ("resync_s", "active_poll_s", "progress_patch_s", "retry_initial_s",
                     "retry_max_s", "storage_timeout_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be positive")
        if self.retry_max_s < self.retry_initial_s:
            raise SettingsError("retry_max_s must be at least retry_initial_s")


def settings_from_env(env: Mapping[str, str], **overrides: Any) -> OperatorSettings:
    """Settings from the variables in the module docstring; ``overrides`` replace fields."""
    worker = WorkerPodSettings(
        image=env.get("STENO_WORKER_IMAGE", WorkerPodSettings.image),
        image_pull_policy=env.get("STENO_WORKER_IMAGE_PULL_POLICY",
                                  WorkerPodSettings.image_pull_policy),
        command=tuple(_json_strings(env, "STENO_WORKER_COMMAND", list(DEFAULT_WORKER_COMMAND))),
        extra_args=tuple(_json_strings(env, "STENO_WORKER_ARGS", [])),
        extra_env=tuple(sorted(_json_mapping(env, "STENO_WORKER_ENV").items())),
        service_account_name=env.get("STENO_WORKER_SERVICE_ACCOUNT") or None,
        cpu_request=env.get("STENO_WORKER_CPU", WorkerPodSettings.cpu_request),
        memory=env.get("STENO_WORKER_MEMORY", WorkerPodSettings.memory),
        scratch_size=env.get("STENO_SCRATCH_SIZE", WorkerPodSettings.scratch_size),
        run_as_user=_int(env, "STENO_WORKER_RUN_AS_USER", DEFAULT_RUN_AS_USER, 1),
        gpu_resource=env.get("STENO_GPU_RESOURCE", GPU_RESOURCE),
        progress_port=_int(env, "STENO_PROGRESS_PORT", DEFAULT_PROGRESS_PORT, 1),
        backoff_limit_per_index=_int(env, "STENO_BACKOFF_LIMIT_PER_INDEX",
                                     DEFAULT_BACKOFF_LIMIT_PER_INDEX, 0),
        ttl_seconds_after_finished=_int(env, "STENO_TTL_SECONDS_AFTER_FINISHED",
                                        DEFAULT_TTL_SECONDS_AFTER_FINISHED, 0),
    )
    tolerations: tuple[Toleration, ...] = (GPU_TOLERATION,)
    if "STENO_TOLERATIONS" in env:
        raw = _json(env, "STENO_TOLERATIONS")
        if not isinstance(raw, list):
            raise SettingsError("STENO_TOLERATIONS must be a JSON list of tolerations")
        try:
            tolerations = tuple(parse_toleration(item, f"STENO_TOLERATIONS[{i}]")
                                for i, item in enumerate(raw))
        except SpecError as error:
            raise SettingsError(str(error)) from None
    placement = PlacementDefaults(
        node_selector=tuple(sorted(_json_mapping(env, "STENO_NODE_SELECTOR").items())),
        tolerations=tolerations,
        priority_class_name=env.get("STENO_PRIORITY_CLASS") or None,
        runtime_class_name=env.get("STENO_RUNTIME_CLASS") or None,
    )
    namespaces = tuple(n.strip() for n in env.get("STENO_NAMESPACES", "").split(",") if n.strip())
    kubeconfig = env.get("KUBECONFIG")
    values: dict[str, Any] = {
        "worker": worker,
        "placement": placement,
        "namespaces": namespaces,
        "kubeconfig": Path(kubeconfig) if kubeconfig else None,
        "resync_s": _float(env, "STENO_RESYNC_SECONDS", DEFAULT_RESYNC_S),
        "active_poll_s": _float(env, "STENO_ACTIVE_POLL_SECONDS", DEFAULT_ACTIVE_POLL_S),
        "progress_patch_s": _float(env, "STENO_PROGRESS_PATCH_SECONDS", DEFAULT_PROGRESS_PATCH_S),
        "metrics_port": _int(env, "STENO_METRICS_PORT", DEFAULT_METRICS_PORT, 0),
        "health_port": _int(env, "STENO_HEALTH_PORT", DEFAULT_HEALTH_PORT, 0),
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    return OperatorSettings(**values)


def _json(env: Mapping[str, str], name: str) -> Any:
    try:
        return json.loads(env[name])
    except ValueError as error:
        raise SettingsError(f"{name} is not valid JSON: {error}") from None


def _json_strings(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    if name not in env:
        return default
    value = _json(env, name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingsError(f"{name} must be a JSON list of strings")
    return value


def _json_mapping(env: Mapping[str, str], name: str) -> dict[str, str]:
    if name not in env:
        return {}
    value = _json(env, name)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SettingsError(f"{name} must be a JSON object of strings")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {text!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {text!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be positive, not {value}")
    return value
