"""Where built and unpacked binaries live: a cache directory outside the repo.

The root is ``$STENO_CACHE_DIR`` when set, else ``~/.cache/steno``. Under it,
``devcluster/`` holds one folder per component *and version*
(``kubernetes-v1.37.1/bin/kube-apiserver``, ``kwok-v0.8.0/bin/kwok``,
``helm-…/bin/helm``), so bumping a pin never reuses a stale binary and two
versions can sit side by side. A folder counts as complete only once its
``.complete`` stamp exists: builds write into the folder first and stamp it
last, so an interrupted build is redone rather than trusted.

The root is resolved when asked for (never at import time), so tests and the
CLI can point it elsewhere through the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR_ENV = "STENO_CACHE_DIR"
# Marks a component folder whose contents were fully written.
COMPLETE_STAMP = ".complete"


def default_cache_root() -> Path:
    """``$STENO_CACHE_DIR`` if set and non-empty, else ``~/.cache/steno``."""
    configured = os.environ.get(CACHE_DIR_ENV, "")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "steno"


@dataclass(frozen=True)
class Cache:
    """The development cluster's part of the cache, one folder per version."""

    root: Path  # the steno cache root; everything here lives in root/devcluster

    @classmethod
    def default(cls) -> Cache:
        return cls(default_cache_root())

    @property
    def base(self) -> Path:
        return self.root / "devcluster"

    def component_dir(self, name: str, version: str) -> Path:
        """Folder for one component at one version, e.g. ``kubernetes-v1.37.1``."""
        return self.base / f"{name}-{version}"

    def bin_dir(self, name: str, version: str) -> Path:
        return self.component_dir(name, version) / "bin"

    def is_complete(self, name: str, version: str) -> bool:
        return (self.component_dir(name, version) / COMPLETE_STAMP).is_file()

    def mark_complete(self, name: str, version: str) -> None:
        (self.component_dir(name, version) / COMPLETE_STAMP).write_text(version + "\n")

    @property
    def go_work_dir(self) -> Path:
        """Scratch space for wrapper Go modules (kept: it makes rebuilds incremental)."""
        return self.base / "gowork"

    @property
    def runs_dir(self) -> Path:
        """Parent of per-cluster state folders (certificates, etcd data, logs)."""
        return self.base / "runs"
