"""Condition logic: what each observation decides, and how stored conditions change."""

from __future__ import annotations

import pytest
from steno_operator import conditions as c
from steno_operator.conditions import (
    JobObservation,
    Observation,
    Phase,
    Planning,
    PlanningState,
    PodsObservation,
    Reason,
    Results,
    ResultState,
)

pytestmark = pytest.mark.unit

PLANNED = Planning(PlanningState.PLANNED, files=3, shards=2)
RUNNING_JOB = JobObservation(exists=True, active=2, ready=2)


def _status(verdict: c.Verdict, kind: str) -> tuple[str, str] | None:
    found = verdict.condition(kind)
    return None if found is None else (found.status, str(found.reason))


def test_invalid_spec_fails_at_once_without_accepting() -> None:
    verdict = c.decide(Observation(spec_error="spec.task: must be one of transcribe, translate"))
    assert verdict.phase is Phase.FAILED and verdict.phase.terminal
    assert _status(verdict, c.ACCEPTED) == ("False", "InvalidSpec")
    assert _status(verdict, c.FAILED) == ("True", "InvalidSpec")
    assert "spec.task" in verdict.condition(c.FAILED).message


def test_planning_states() -> None:
    assert _status(c.decide(Observation()), c.ACCEPTED) == ("Unknown", "Planning")
    retrying = c.decide(Observation(planning=Planning(PlanningState.RETRYING, Reason.STORAGE_ERROR, "503")))
    assert retrying.phase is Phase.PENDING
    assert _status(retrying, c.ACCEPTED) == ("False", "StorageError")
    rejected = c.decide(Observation(planning=Planning(PlanningState.REJECTED, Reason.OUTPUT_IN_USE, "taken")))
    assert rejected.phase is Phase.FAILED and _status(rejected, c.FAILED) == ("True", "OutputInUse")
    suspended = c.decide(Observation(suspend=True))
    assert suspended.phase is Phase.SUSPENDED


def test_waiting_then_unschedulable_then_running() -> None:
    waiting = c.decide(Observation(planning=PLANNED, job=JobObservation(exists=True)))
    assert waiting.phase is Phase.PENDING
    assert _status(waiting, c.SCHEDULED) == ("False", "WaitingForPods")
    assert _status(waiting, c.ACCEPTED) == ("True", "Planned")

    pods = PodsObservation(unschedulable=1, unschedulable_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    stuck = c.decide(Observation(planning=PLANNED, job=JobObservation(exists=True, active=1), pods=pods))
    assert stuck.phase is Phase.PENDING
    assert _status(stuck, c.SCHEDULED) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in stuck.condition(c.SCHEDULED).message

    running = c.decide(Observation(planning=PLANNED, job=RUNNING_JOB, pods=PodsObservation(running=2)))
    assert running.phase is Phase.RUNNING
    assert _status(running, c.SCHEDULED) == ("True", "PodsScheduled")
    assert _status(running, c.RUNNING) == ("True", "PodsRunning")
    assert running.condition(c.SUCCEEDED) is None and running.condition(c.FAILED) is None


def test_one_unschedulable_pod_is_reported_even_when_others_run() -> None:
    pods = PodsObservation(running=1, unschedulable=1, unschedulable_message="no GPU")
    verdict = c.decide(Observation(planning=PLANNED, job=RUNNING_JOB, pods=pods))
    assert verdict.phase is Phase.RUNNING
    assert _status(verdict, c.SCHEDULED) == ("False", "Unschedulable")


def test_suspend_and_resume() -> None:
    suspended = c.decide(Observation(suspend=True, planning=PLANNED, job=JobObservation(exists=True, suspended=True)))
    assert suspended.phase is Phase.SUSPENDED
    assert _status(suspended, c.SUSPENDED) == ("True", "SuspendedBySpec")
    assert _status(suspended, c.RUNNING) == ("False", "SuspendedBySpec")
    resumed = c.decide(Observation(planning=PLANNED, job=RUNNING_JOB, pods=PodsObservation(running=1), was_suspended=True))
    assert resumed.phase is Phase.RUNNING
    assert _status(resumed, c.SUSPENDED) == ("False", "Resumed")
    never = c.decide(Observation(planning=PLANNED, job=RUNNING_JOB, pods=PodsObservation(running=1)))
    assert never.condition(c.SUSPENDED) is None


def test_complete_job_waits_for_verified_results() -> None:
    complete = JobObservation(exists=True, complete=True, succeeded=2)
    verifying = c.decide(Observation(planning=PLANNED, job=complete))
    assert verifying.phase is Phase.RUNNING
    assert _status(verifying, c.RUNNING) == ("False", "VerifyingResults")
    retrying = c.decide(Observation(planning=PLANNED, job=complete,
                                    results=Results(ResultState.RETRYING, message="503 from the store")))
    assert retrying.phase is Phase.RUNNING and "503" in retrying.condition(c.RUNNING).message
    done = c.decide(Observation(planning=PLANNED, job=complete,
                                results=Results(ResultState.VERIFIED, "s3://r/o/_steno/manifest.json")))
    assert done.phase is Phase.SUCCEEDED
    assert _status(done, c.SUCCEEDED) == ("True", "ResultsVerified")
    assert "s3://r/o/_steno/manifest.json" in done.condition(c.SUCCEEDED).message
    bad = c.decide(Observation(planning=PLANNED, job=complete,
                               results=Results(ResultState.INVALID, message="shard 1 is missing")))
    assert bad.phase is Phase.FAILED and _status(bad, c.FAILED) == ("True", "ResultsInvalid")


@pytest.mark.parametrize(("job_reason", "ours"), [
    ("DeadlineExceeded", "DeadlineExceeded"),
    ("BackoffLimitExceeded", "BackoffLimitExceeded"),
    ("FailedIndexes", "ShardsFailed"),
    ("PodFailurePolicy", "WorkerRejectedSpec"),
    ("SomethingNew", "JobFailed"),
])
def test_job_failures_map_to_reasons(job_reason: str, ours: str) -> None:
    job = JobObservation(exists=True, failed=True, failure_reason=job_reason, failure_message="why")
    verdict = c.decide(Observation(planning=PLANNED, job=job))
    assert verdict.phase is Phase.FAILED
    assert _status(verdict, c.FAILED) == ("True", ours)
    assert _status(verdict, c.ACCEPTED) == ("True", "Planned")


def test_a_foreign_job_is_never_adopted() -> None:
    verdict = c.decide(Observation(planning=PLANNED, job=JobObservation(exists=True, foreign=True)))
    assert verdict.phase is Phase.FAILED and _status(verdict, c.FAILED) == ("True", "JobNameConflict")


def test_a_changed_spec_is_reported_and_ignored() -> None:
    verdict = c.decide(Observation(spec_changed=True, planning=PLANNED, job=RUNNING_JOB,
                                   pods=PodsObservation(running=1)))
    assert verdict.phase is Phase.RUNNING
    assert _status(verdict, c.SPEC_LOCKED) == ("True", "SpecChangeIgnored")


def test_reasons_are_camel_case() -> None:
    for reason in Reason:
        assert reason.value[0].isupper() and reason.value.isalnum()


def test_merge_keeps_transition_time_unless_the_status_changes() -> None:
    first = c.merge_conditions([], [c.ConditionVerdict(c.RUNNING, "False", Reason.WAITING_FOR_PODS, "no pod")], 1, "T1")
    assert first == [{"type": "Running", "status": "False", "reason": "WaitingForPods", "message": "no pod",
                      "observedGeneration": 1, "lastTransitionTime": "T1"}]
    same_status = c.merge_conditions(first, [c.ConditionVerdict(c.RUNNING, "False", Reason.SUSPENDED_BY_SPEC, "held")], 2, "T2")
    assert same_status[0]["lastTransitionTime"] == "T1"
    assert (same_status[0]["reason"], same_status[0]["observedGeneration"]) == ("SuspendedBySpec", 2)
    flipped = c.merge_conditions(same_status, [c.ConditionVerdict(c.RUNNING, "True", Reason.PODS_RUNNING, "1 pod")], 2, "T3")
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_merge_orders_conditions_and_keeps_terminal_ones() -> None:
    verdict = c.decide(Observation(planning=PLANNED, job=JobObservation(exists=True, complete=True),
                                   results=Results(ResultState.VERIFIED, "s3://r/m.json")))
    merged = c.merge_conditions([], verdict.conditions, 1, "T")
    assert [m["type"] for m in merged] == ["Accepted", "Scheduled", "Running", "Succeeded"]
    # A later verdict that leaves Succeeded out does not erase it.
    again = c.merge_conditions(merged, (c.ConditionVerdict(c.ACCEPTED, "True", Reason.PLANNED, "p"),), 1, "T2")
    assert [m["type"] for m in again] == ["Accepted", "Succeeded"]


def test_transitions_are_the_news() -> None:
    before = [{"type": "Running", "status": "False", "reason": "WaitingForPods"},
              {"type": "Accepted", "status": "True", "reason": "Planned"}]
    after = [{"type": "Running", "status": "True", "reason": "PodsRunning"},
             {"type": "Accepted", "status": "True", "reason": "Planned"},
             {"type": "Scheduled", "status": "False", "reason": "Unschedulable"}]
    assert [t["type"] for t in c.transitions(before, after)] == ["Running", "Scheduled"]
    assert c.transitions(after, after) == []
