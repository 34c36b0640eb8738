"""The committed Python code of proto/steno_api/v1 is what scripts/gen-proto makes of the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("transcription_pb2.py", "transcription_pb2.pyi", "transcription_pb2_grpc.py")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        check=True, cwd=ROOT, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True, timeout=120,
    )
    for name in GENERATED:
        fresh = (tmp_path / "steno_api" / "v1" / name).read_text()
        committed = (ROOT / "proto" / "steno_api" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen-proto"


def test_generated_imports_use_the_package_path() -> None:
    text = (ROOT / "proto" / "steno_api" / "v1" / "transcription_pb2_grpc.py").read_text()
    assert "from steno_api.v1 import transcription_pb2" in text
