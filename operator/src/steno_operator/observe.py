"""Reading the child Job and its pods into the small summaries the decisions need: pure.

The Kubernetes objects arrive as JSON dicts (see ``kube``); these functions
pick out what :func:`steno_operator.conditions.decide` looks at (Job
conditions and counts; pods running, placed, unschedulable with the
scheduler's message) and what the progress watcher needs (running pods'
addresses and shard indexes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steno_operator.conditions import JobObservation, PodsObservation
from steno_operator.manifests import JobIdentity, is_owned_by
from steno_operator.progress import PodTarget

# The Indexed Job controller writes each pod's index here (annotation and label).
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def _true_conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        str(c.get("type")): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }


def observe_job(job: Mapping[str, Any] | None, identity: JobIdentity) -> JobObservation:
    """The Job's state; a Job of our name that we do not control is ``foreign``."""
    if job is None:
        return JobObservation()
    if not is_owned_by(dict(job), identity):
        return JobObservation(exists=True, foreign=True)
    status = job.get("status") or {}
    conditions = _true_conditions(job)
    failed = conditions.get("Failed")
    return JobObservation(
        exists=True,
        suspended="Suspended" in conditions,
        complete="Complete" in conditions,
        failed=failed is not None,
        failure_reason=str(failed.get("reason", "")) if failed else "",
        failure_message=str(failed.get("message", "")) if failed else "",
        active=int(status.get("active") or 0),
        ready=int(status.get("ready") or 0),
        succeeded=int(status.get("succeeded") or 0),
    )


def job_finished(job: JobObservation) -> bool:
    return job.complete or job.failed


def completed_indexes(job: Mapping[str, Any] | None) -> set[int]:
    """The Job's ``status.completedIndexes`` (``"0-2,5"``) as a set."""
    if job is None:
        return set()
    return parse_indexes(str((job.get("status") or {}).get("completedIndexes") or ""))


def parse_indexes(text: str) -> set[int]:
    found: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


@dataclass(frozen=True)
class PodsView:
    summary: PodsObservation
    targets: tuple[PodTarget, ...]  # running pods with an address, to watch
    first_started_at: str | None  # earliest start of a running container (RFC 3339)


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def observe_pods(pods: Iterable[Mapping[str, Any]], progress_port: int) -> PodsView:
    running = pending_scheduled = unschedulable = waiting = 0
    message = ""
    targets: list[PodTarget] = []
    started: list[str] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            continue  # on its way out: neither running work nor waiting for a node
        status = pod.get("status") or {}
        phase = status.get("phase")
        if phase == "Running":
            running += 1
            index = (metadata.get("annotations") or {}).get(COMPLETION_INDEX_KEY)
            ip = status.get("podIP")
            if ip and index is not None and str(index).isdigit():
                targets.append(PodTarget(str(metadata.get("uid")), int(index),
                                         _address(str(ip), progress_port)))
            for container in status.get("containerStatuses") or []:
                at = ((container.get("state") or {}).get("running") or {}).get("startedAt")
                if at:
                    started.append(str(at))
        elif phase == "Pending":
            scheduled = next((c for c in status.get("conditions") or []
                              if c.get("type") == "PodScheduled"), None)
            if (pod.get("spec") or {}).get("nodeName"):
                pending_scheduled += 1
            elif (scheduled is not None and scheduled.get("status") == "False"
                  and scheduled.get("reason") == "Unschedulable"):
                unschedulable += 1
                message = message or str(scheduled.get("message", ""))
            else:
                waiting += 1
    return PodsView(
        PodsObservation(running, pending_scheduled, unschedulable, message, waiting),
        tuple(sorted(targets, key=lambda t: (t.shard, t.uid))),
        min(started) if started else None,
    )
