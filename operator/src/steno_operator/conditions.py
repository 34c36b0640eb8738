"""What a TranscriptionJob's status should say, decided from what was observed: pure logic.

The reconciler gathers an :class:`Observation` (the spec's validity, the plan,
the child Job, its pods, the verified results) and :func:`decide` turns it
into a :class:`Verdict`: a phase and the conditions, each with a CamelCase
reason and a message. :func:`merge_conditions` then applies the verdict to
the stored conditions the way kubebuilder's ``meta.SetStatusCondition`` does:
``lastTransitionTime`` moves only when a condition's status changes, and
every condition carries the ``observedGeneration`` it was computed for.

No clock, no I/O and no Kubernetes client here: the rules can be tested
exhaustively, and a restarted operator computes the same status from the same
observation (level-triggered: nothing depends on which event was seen last).

Condition types (the Kubernetes API conventions: adjectives or past-tense
verbs, True when the named state holds):

==========  =================================================================
Accepted    the spec is valid and the job is planned (False: InvalidSpec,
            PlanningFailed while retrying; Unknown while planning)
Scheduled   every pod of the Job has a node (False: Unschedulable, with the
            scheduler's message; WaitingForPods before any pod exists)
Running     pods are working on shards
Suspended   ``spec.suspend`` stopped the pods (present once ever suspended)
Succeeded   every shard's manifest is verified and the result manifest written
Failed      the job gave up; the reason says why (terminal, never retried)
==========  =================================================================
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Condition types.
ACCEPTED = "Accepted"
SCHEDULED = "Scheduled"
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SPEC_LOCKED = "SpecLocked"
CONDITION_ORDER = (ACCEPTED, SCHEDULED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, SPEC_LOCKED)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class Phase(enum.StrEnum):
    """The one-word summary shown by ``kubectl get tj``."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class Reason(enum.StrEnum):
    """Every reason the operator writes, CamelCase as the API conventions ask."""

    PLANNING = "Planning"
    PLANNED = "Planned"
    INVALID_SPEC = "InvalidSpec"
    PLANNING_FAILED = "PlanningFailed"
    SECRET_NOT_FOUND = "SecretNotFound"
    STORAGE_ERROR = "StorageError"
    OUTPUT_IN_USE = "OutputInUse"
    NO_INPUTS = "NoInputs"
    WAITING_FOR_PODS = "WaitingForPods"
    PODS_SCHEDULED = "PodsScheduled"
    UNSCHEDULABLE = "Unschedulable"
    PODS_RUNNING = "PodsRunning"
    SUSPENDED_BY_SPEC = "SuspendedBySpec"
    RESUMED = "Resumed"
    JOB_FINISHED = "JobFinished"
    VERIFYING_RESULTS = "VerifyingResults"
    RESULTS_VERIFIED = "ResultsVerified"
    RESULTS_INVALID = "ResultsInvalid"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    SHARDS_FAILED = "ShardsFailed"
    WORKER_REJECTED_SPEC = "WorkerRejectedSpec"
    JOB_FAILED = "JobFailed"
    JOB_NAME_CONFLICT = "JobNameConflict"
    SPEC_CHANGE_IGNORED = "SpecChangeIgnored"


# Reasons of a failed Kubernetes Job (batch/v1 JobFailed condition) → ours.
JOB_FAILURE_REASONS: Mapping[str, Reason] = {
    "DeadlineExceeded": Reason.DEADLINE_EXCEEDED,
    "BackoffLimitExceeded": Reason.BACKOFF_LIMIT_EXCEEDED,
    "FailedIndexes": Reason.SHARDS_FAILED,
    "MaxFailedIndexesExceeded": Reason.SHARDS_FAILED,
    # The only FailJob rule of our podFailurePolicy matches the worker's bad-spec exit code.
    "PodFailurePolicy": Reason.WORKER_REJECTED_SPEC,
}


class PlanningState(enum.Enum):
    NOT_STARTED = "not-started"
    RETRYING = "retrying"  # a transient failure (storage unreachable): tried again later
    REJECTED = "rejected"  # a permanent failure: the job fails
    PLANNED = "planned"


@dataclass(frozen=True)
class Planning:
    state: PlanningState
    reason: Reason | None = None  # for RETRYING and REJECTED
    message: str = ""
    files: int = 0
    shards: int = 0


@dataclass(frozen=True)
class JobObservation:
    """The child Job, summarized (``batch/v1`` status)."""

    exists: bool = False
    foreign: bool = False  # a Job of that name that another owner controls
    suspended: bool = False  # its Suspended condition is True
    complete: bool = False
    failed: bool = False
    failure_reason: str = ""  # the Job's Failed condition reason
    failure_message: str = ""
    active: int = 0
    ready: int = 0
    succeeded: int = 0


@dataclass(frozen=True)
class PodsObservation:
    """The Job's pods, summarized."""

    running: int = 0  # phase Running
    pending_scheduled: int = 0  # Pending but bound to a node (pulling, starting)
    unschedulable: int = 0  # Pending with PodScheduled=False/Unschedulable
    unschedulable_message: str = ""  # the scheduler's words for the first of them
    waiting: int = 0  # Pending and not yet looked at by the scheduler

    @property
    def any(self) -> bool:
        return bool(self.running or self.pending_scheduled or self.unschedulable or self.waiting)


class ResultState(enum.Enum):
    NOT_YET = "not-yet"  # the Job has not completed
    VERIFIED = "verified"
    RETRYING = "retrying"  # storage trouble while verifying: tried again
    INVALID = "invalid"  # a manifest is missing or does not match the plan: the job fails


@dataclass(frozen=True)
class Results:
    state: ResultState = ResultState.NOT_YET
    manifest_uri: str = ""
    message: str = ""


@dataclass(frozen=True)
class Observation:
    """Everything :func:`decide` looks at."""

    spec_error: str | None = None  # why the spec is invalid, if it is
    spec_changed: bool = False  # the fixed fields differ from what was planned
    suspend: bool = False  # spec.suspend
    planning: Planning = Planning(PlanningState.NOT_STARTED)
    job: JobObservation = JobObservation()
    pods: PodsObservation = PodsObservation()
    results: Results = Results()
    was_suspended: bool = False  # a Suspended condition exists already


@dataclass(frozen=True)
class ConditionVerdict:
    type: str
    status: str
    reason: Reason
    message: str


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    conditions: tuple[ConditionVerdict, ...]

    def condition(self, condition_type: str) -> ConditionVerdict | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


def _failed(reason: Reason, message: str, *, accepted: bool) -> tuple[ConditionVerdict, ...]:
    accepted_verdict = (
        ConditionVerdict(ACCEPTED, TRUE, Reason.PLANNED, "the job was planned")
        if accepted
        else ConditionVerdict(ACCEPTED, FALSE, reason, message)
    )
    return (accepted_verdict, ConditionVerdict(FAILED, TRUE, reason, message))


def decide(observation: Observation) -> Verdict:
    """The phase and conditions the observation calls for (see the module docstring)."""
    o = observation
    if o.spec_error is not None:
        return Verdict(Phase.FAILED, _failed(Reason.INVALID_SPEC, o.spec_error, accepted=False))
    planning = o.planning
    if planning.state is PlanningState.REJECTED:
        reason = planning.reason or Reason.INVALID_SPEC
        return Verdict(Phase.FAILED, _failed(reason, planning.message, accepted=False))
    if planning.state is not PlanningState.PLANNED:
        if planning.state is PlanningState.RETRYING:
            accepted = ConditionVerdict(ACCEPTED, FALSE, planning.reason or Reason.PLANNING_FAILED,
                                        planning.message)
        else:
            accepted = ConditionVerdict(ACCEPTED, UNKNOWN, Reason.PLANNING,
                                        "listing the inputs and writing the plan")
        phase = Phase.SUSPENDED if o.suspend else Phase.PENDING
        return Verdict(phase, (accepted,))

    accepted = ConditionVerdict(
        ACCEPTED, TRUE, Reason.PLANNED,
        f"planned {planning.files} file(s) in {planning.shards} shard(s)",
    )
    extra: list[ConditionVerdict] = []
    if o.spec_changed:
        extra.append(ConditionVerdict(
            SPEC_LOCKED, TRUE, Reason.SPEC_CHANGE_IGNORED,
            "the spec changed after the job was planned; the job goes on as planned "
            "(only suspend may change)",
        ))
    job = o.job
    if job.foreign:
        return Verdict(Phase.FAILED, (*_failed(
            Reason.JOB_NAME_CONFLICT,
            "a Job with this job's name exists and belongs to something else",
            accepted=True), *extra))
    if o.results.state is ResultState.VERIFIED:
        return Verdict(Phase.SUCCEEDED, (
            accepted,
            ConditionVerdict(SCHEDULED, TRUE, Reason.PODS_SCHEDULED, "every shard ran"),
            ConditionVerdict(RUNNING, FALSE, Reason.JOB_FINISHED, "every shard is done"),
            ConditionVerdict(SUCCEEDED, TRUE, Reason.RESULTS_VERIFIED,
                             f"every shard manifest verified; results in {o.results.manifest_uri}"),
            *extra,
        ))
    if o.results.state is ResultState.INVALID:
        return Verdict(Phase.FAILED, (*_failed(Reason.RESULTS_INVALID, o.results.message,
                                               accepted=True), *extra))
    if job.failed:
        reason = JOB_FAILURE_REASONS.get(job.failure_reason, Reason.JOB_FAILED)
        message = job.failure_message or f"the Job failed ({job.failure_reason or 'no reason'})"
        return Verdict(Phase.FAILED, (*_failed(reason, message, accepted=True), *extra))

    conditions: list[ConditionVerdict] = [accepted]
    suspended = o.suspend or job.suspended
    if job.complete:
        # The Job is done; the results are being verified (or verification is retrying).
        conditions.append(ConditionVerdict(SCHEDULED, TRUE, Reason.PODS_SCHEDULED,
                                           "every shard ran"))
        conditions.append(ConditionVerdict(
            RUNNING, FALSE, Reason.VERIFYING_RESULTS,
            o.results.message or "every shard finished; verifying the shard manifests",
        ))
        phase = Phase.RUNNING
    elif suspended:
        conditions.append(ConditionVerdict(SCHEDULED, FALSE, Reason.SUSPENDED_BY_SPEC,
                                           "the job is suspended"))
        conditions.append(ConditionVerdict(RUNNING, FALSE, Reason.SUSPENDED_BY_SPEC,
                                           "the job is suspended; finished shards are kept"))
        phase = Phase.SUSPENDED
    else:
        conditions.append(_scheduled(o.pods, job))
        if o.pods.running or job.ready:
            count = max(o.pods.running, job.ready)
            conditions.append(ConditionVerdict(RUNNING, TRUE, Reason.PODS_RUNNING,
                                               f"{count} pod(s) working"))
            phase = Phase.RUNNING
        elif job.succeeded:
            # Some shards are done and the rest are between pods (or the Job is
            # about to report Complete): the job has started and never goes back
            # to Pending.
            conditions.append(ConditionVerdict(RUNNING, TRUE, Reason.PODS_RUNNING,
                                               f"{job.succeeded} shard(s) done"))
            phase = Phase.RUNNING
        else:
            conditions.append(ConditionVerdict(RUNNING, FALSE, Reason.WAITING_FOR_PODS,
                                               "no pod is running yet"))
            phase = Phase.PENDING
    if suspended and not job.complete:
        conditions.append(ConditionVerdict(SUSPENDED, TRUE, Reason.SUSPENDED_BY_SPEC,
                                           "spec.suspend is true"))
    elif o.was_suspended:
        conditions.append(ConditionVerdict(SUSPENDED, FALSE, Reason.RESUMED,
                                           "spec.suspend is false"))
    return Verdict(phase, (*conditions, *extra))


def _scheduled(pods: PodsObservation, job: JobObservation) -> ConditionVerdict:
    if pods.unschedulable:
        return ConditionVerdict(
            SCHEDULED, FALSE, Reason.UNSCHEDULABLE,
            f"{pods.unschedulable} pod(s) cannot be scheduled: "
            f"{pods.unschedulable_message or 'no node fits'}",
        )
    if pods.running or pods.pending_scheduled or job.succeeded:
        return ConditionVerdict(SCHEDULED, TRUE, Reason.PODS_SCHEDULED,
                                "the pods are placed on nodes")
    return ConditionVerdict(SCHEDULED, FALSE, Reason.WAITING_FOR_PODS,
                            "waiting for the Job's pods to be created and scheduled")


def merge_conditions(
    existing: Iterable[Mapping[str, Any]],
    verdict: Sequence[ConditionVerdict],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The stored conditions updated with ``verdict`` (``now`` is an RFC 3339 timestamp).

    A condition the verdict names takes its status, reason and message; its
    ``lastTransitionTime`` stays unless the status changed. A terminal
    condition (Succeeded, Failed) is never dropped once written: the status
    of a finished job does not flicker. Conditions the verdict leaves out are
    dropped otherwise (the verdict is the whole truth about the present).
    """
    old = {str(c.get("type")): dict(c) for c in existing if c.get("type")}
    merged: dict[str, dict[str, Any]] = {}
    for new in verdict:
        previous = old.get(new.type)
        changed = previous is None or previous.get("status") != new.status
        merged[new.type] = {
            "type": new.type,
            "status": new.status,
            "reason": str(new.reason),
            "message": new.message,
            "observedGeneration": generation,
            "lastTransitionTime": now if changed or previous is None
            else previous.get("lastTransitionTime", now),
        }
    for kept in (SUCCEEDED, FAILED):
        if kept not in merged and kept in old and old[kept].get("status") == TRUE:
            merged[kept] = old[kept]
    order = {name: i for i, name in enumerate(CONDITION_ORDER)}
    return sorted(merged.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))


def condition_status(conditions: Iterable[Mapping[str, Any]], condition_type: str) -> str | None:
    """The status of ``condition_type`` in stored conditions, or None when absent."""
    for condition in conditions:
        if condition.get("type") == condition_type:
            return str(condition.get("status"))
    return None


def transitions(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Conditions of ``after`` whose status or reason differ from ``before``: the news.

    The reconciler posts one Kubernetes Event per such change, so Events
    follow the status (and a restarted operator, finding the status already
    written, posts none twice).
    """
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in before}
    return [dict(c) for c in after
            if old.get(c.get("type")) != (c.get("status"), c.get("reason"))]
