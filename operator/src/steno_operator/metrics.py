"""Prometheus metrics of the operator, in a registry of its own (no module-global state).

=============================================  ==========  ===============================
metric                                         type        meaning
=============================================  ==========  ===============================
``steno_operator_jobs{phase}``                 gauge       TranscriptionJobs seen, by phase
``steno_operator_reconcile_errors_total        counter     reconcile passes that failed
{kind}``                                                   (api, storage, unexpected)
``steno_operator_time_to_first_pod_seconds``   histogram   job creation → first pod running
``steno_operator_jobs_created_total``          counter     Kubernetes Jobs this process
                                                           created (adoptions not counted)
``steno_operator_status_patches_total``        counter     status patches written
=============================================  ==========  ===============================

The jobs-by-phase gauge is computed at scrape time from a map that the
TranscriptionJob event handler keeps (every event carries the object's phase;
a deletion removes it), so it counts finished jobs too and needs no
bookkeeping of increments and decrements.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from steno_operator.conditions import Phase

# Seconds from a TranscriptionJob's creation to its first running pod: planning,
# Job creation, scheduling, image pull and start-up (a cold GPU node can take minutes).
FIRST_POD_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
UNKNOWN_PHASE = "Unknown"  # a job the operator has not written a status for yet


class OperatorMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        self.reconcile_errors = Counter(
            "steno_operator_reconcile_errors", "Reconcile passes that failed, by kind",
            ["kind"], registry=self.registry)
        self.time_to_first_pod = Histogram(
            "steno_operator_time_to_first_pod_seconds",
            "Seconds from a TranscriptionJob's creation to its first running pod",
            buckets=FIRST_POD_BUCKETS_S, registry=self.registry)
        self.jobs_created = Counter(
            "steno_operator_jobs_created", "Kubernetes Jobs created for TranscriptionJobs",
            registry=self.registry)
        self.status_patches = Counter(
            "steno_operator_status_patches", "TranscriptionJob status patches written",
            registry=self.registry)
        self.registry.register(_PhaseCollector(self))

    def set_phase(self, uid: str, phase: str | None) -> None:
        with self._lock:
            self._phases[uid] = phase or UNKNOWN_PHASE

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phases.pop(uid, None)

    def phase_counts(self) -> dict[str, int]:
        with self._lock:
            counts = Counter(self._phases.values())
        result = {str(phase): 0 for phase in Phase}
        result.update(counts)
        return result

    def serve(self, port: int, host: str) -> None:
        """Serve ``/metrics`` on a daemon thread (prometheus_client's own HTTP server)."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)


class _PhaseCollector:
    """Yields the jobs-by-phase gauge from the current map at scrape time."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("steno_operator_jobs", "TranscriptionJobs by phase",
                                   labels=["phase"])
        for phase, count in sorted(self._metrics.phase_counts().items()):
            family.add_metric([phase], count)
        yield family
