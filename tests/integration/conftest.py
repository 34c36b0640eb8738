"""Engine fixtures: the packaged tiny.en on CPU, loaded once per session."""

from __future__ import annotations

import os
import shutil

import pytest
from steno_inference.engine import Engine, EngineConfig
from support.speech import have_flite, have_pocketsphinx_data


@pytest.fixture(scope="session", autouse=True)
def _quiet_cpu_threads() -> None:
    # On 2 busy cores, torch's spinning OpenMP workers slow everything down.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def speech_data() -> None:
    if not have_pocketsphinx_data():
        pytest.fail("Debian's pocketsphinx-testdata is missing: run scripts/setup with the dev extra")


@pytest.fixture(scope="session")
def flite() -> None:
    if not have_flite() or shutil.which("flite") is None:
        pytest.fail("flite is missing: run scripts/setup with the dev extra")


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    # The torch backend explicitly: these tests pin its runner (auto is onnx on CPU).
    return Engine.load(EngineConfig(model="tiny.en", device="cpu", batch_size=8, backend="torch"))
