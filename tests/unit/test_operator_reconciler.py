"""The reconcile loop's error handling and status writing, with a fake API at the edge."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from steno_operator.conditions import Observation, Planning, PlanningState
from steno_operator.kube import TransientApiError
from steno_operator.manifests import JobIdentity
from steno_operator.metrics import OperatorMetrics
from steno_operator.progress import ProgressThrottle, ProgressWatcher
from steno_operator.reconciler import Backoff, JobState, Reconciler
from steno_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

IDENTITY = JobIdentity("ns", "job", "uid-1")


class FakeKube:
    """Records status patches and Events; fails the first patches as told."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = list(failures or [])
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if self.failures:
            raise self.failures.pop(0)
        self.patches.append(status)
        return {"status": status}

    def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason))


def _state(reconciler: Reconciler) -> JobState:
    settings = reconciler.settings
    return JobState(IDENTITY, {}, ProgressWatcher(on_change=lambda: None),
                    ProgressThrottle(settings.progress_patch_s),
                    Backoff(settings.retry_initial_s, settings.retry_max_s))


def test_api_errors_are_retried_with_backoff_and_reported_once() -> None:
    kube = FakeKube([TransientApiError("patch", 409, "Conflict", "try again"),
                     TransientApiError("patch", 409, "Conflict", "try again"),
                     TransientApiError("patch", 503, "ServiceUnavailable", "etcd")])
    metrics = OperatorMetrics()
    reconciler = Reconciler(OperatorSettings(retry_initial_s=1.0, retry_max_s=3.0), kube, metrics)
    state = _state(reconciler)
    body = {"metadata": {"generation": 1}, "spec": {"input": {}, "output": {"uri": "s3://b/o/"}}}

    async def passes() -> list[Any]:
        return [await reconciler._pass(state, body) for _ in range(4)]

    outcomes = asyncio.run(passes())
    assert [(o.retrying, o.wait_s) for o in outcomes[:3]] == [(True, 1.0), (True, 2.0), (True, 3.0)]
    assert outcomes[3].finished  # the invalid spec is written once the API answers
    assert kube.patches[-1]["phase"] == "Failed"
    assert metrics.registry.get_sample_value("steno_operator_reconcile_errors_total", {"kind": "api"}) == 3
    # One Event per distinct error, then the InvalidSpec Event once the status is written.
    assert kube.events == [("Warning", "ReconcileError"), ("Warning", "ReconcileError"),
                           ("Warning", "InvalidSpec")]


def test_progress_only_changes_wait_for_the_throttle() -> None:
    now = [100.0]
    kube = FakeKube()
    reconciler = Reconciler(OperatorSettings(progress_patch_s=5.0), kube, OperatorMetrics(),
                            clock=lambda: now[0])
    state = _state(reconciler)
    observation = Observation(planning=Planning(PlanningState.PLANNED, files=2, shards=1))

    async def write(percent: int) -> float:
        return await reconciler._write(state, 1, observation, {"progress": {"percent": percent}})

    assert asyncio.run(write(10)) == 0.0 and len(kube.patches) == 1
    assert asyncio.run(write(10)) == 0.0 and len(kube.patches) == 1  # nothing changed: no patch
    now[0] = 102.0
    assert asyncio.run(write(20)) == pytest.approx(3.0) and len(kube.patches) == 1  # deferred
    now[0] = 105.0
    assert asyncio.run(write(30)) == 0.0 and len(kube.patches) == 2
    assert kube.patches[-1]["progress"] == {"percent": 30}
    # A change of the conditions is written at once, throttle or not.
    now[0] = 106.0
    urgent = Observation(spec_error="spec.task: bad")
    asyncio.run(reconciler._write(state, 1, urgent, {"progress": {"percent": 30}}))
    assert len(kube.patches) == 3 and kube.patches[-1]["phase"] == "Failed"
