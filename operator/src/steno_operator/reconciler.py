"""The reconcile loop of one TranscriptionJob: observe, compare with the desired state, act.

One path for creation, operator restart and update. Each pass starts from
what exists, not from the event that woke it (level-triggered):

1. **spec** — parse and validate; invalid → Failed/InvalidSpec, no retries.
2. **plan** — adopt the plan object if it is already stored (a restart after
   writing it), else list the inputs and write it create-only.
3. **Job** — get the child Job by its deterministic name; create it when
   missing (a 409 means another pass or process won: adopt it, never a
   second Job); align ``spec.suspend``.
4. **pods** — unschedulable pods, running pods (their WatchProgress streams
   are started and stopped to match), the first pod's start.
5. **results** — manifests of finished shards (progress); once the Job is
   complete, every manifest is verified and the result manifest written.
6. **status** — :func:`~steno_operator.conditions.decide` computes phase and
   conditions, merged kubebuilder-style; the patch is skipped when nothing
   changed, and progress-only changes are rate-limited. An Event is posted
   for each condition that changed to a reason worth telling.

Every write is idempotent (deterministic names, create-only objects, merge
patches of a status computed from scratch), so an operator killed at any
point and started again resumes from what it finds: no job is lost, no Job
or result is written twice.

Failures of a pass (API conflicts and server errors, storage trouble) are
retried with exponential back-off, counted in a metric and reported once as
a Warning Event. What the reconciler remembers between passes (the plan, a
storage client, verified manifests) is only a cache of what it can read again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from steno_operator import conditions as cond
from steno_operator.conditions import (
    Observation,
    Phase,
    Planning,
    PlanningState,
    Reason,
    Results,
    ResultState,
)
from steno_operator.kube import AlreadyExistsError, ApiError, KubeClient, TransientApiError
from steno_operator.manifests import (
    JobIdentity,
    PlanRef,
    build_job,
    child_job_name,
    is_owned_by,
    label_selector,
)
from steno_operator.metrics import OperatorMetrics
from steno_operator.observe import completed_indexes, job_finished, observe_job, observe_pods
from steno_operator.planning import (
    InvalidPlanError,
    PlanConflictError,
    PlanInfo,
    TooManyInputsError,
    ensure_plan,
)
from steno_operator.progress import (
    JobProgress,
    ProgressThrottle,
    ProgressWatcher,
    ShardProgress,
    aggregate,
)
from steno_operator.results import ManifestInvalidError, ShardResult, commit_result, read_shard
from steno_operator.settings import OperatorSettings
from steno_operator.spec import (
    API_VERSION,
    KIND,
    SpecError,
    TranscriptionJobSpec,
    parse_spec,
    spec_fingerprint,
)
from steno_operator.storage import ObjectStore, StorageError, StorageSettings

LOG = logging.getLogger(__name__)

# Status fields whose change alone is rate-limited (progress), not urgent.
PROGRESS_FIELDS = frozenset({"progress", "failures"})
# Condition reasons that make a Warning Event; other announced reasons are Normal.
WARNING_REASONS = frozenset({
    Reason.INVALID_SPEC, Reason.PLANNING_FAILED, Reason.OUTPUT_IN_USE, Reason.UNSCHEDULABLE,
    Reason.RESULTS_INVALID, Reason.DEADLINE_EXCEEDED, Reason.BACKOFF_LIMIT_EXCEEDED,
    Reason.SHARDS_FAILED, Reason.WORKER_REJECTED_SPEC, Reason.JOB_FAILED,
    Reason.JOB_NAME_CONFLICT, Reason.SPEC_CHANGE_IGNORED, Reason.SECRET_NOT_FOUND,
    Reason.STORAGE_ERROR,
})
# Reasons not worth an Event (routine intermediate states).
QUIET_REASONS = frozenset({Reason.PLANNING, Reason.WAITING_FOR_PODS, Reason.JOB_FINISHED,
                           Reason.VERIFYING_RESULTS, Reason.PODS_SCHEDULED})


@dataclass(frozen=True)
class Outcome:
    finished: bool  # terminal: nothing more to do for this job
    wait_s: float = 0.0  # look again after this long, unless woken earlier
    retrying: bool = False  # something failed and is retried: wait the back-off instead


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    _next_s: float = 0.0

    def next(self) -> float:
        delay = self._next_s or self.initial_s
        self._next_s = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next_s = 0.0


class SecretNotFoundError(RuntimeError):
    pass


@dataclass
class JobState:
    """What the reconciler remembers about one job between passes (all of it re-derivable)."""

    identity: JobIdentity
    status: dict[str, Any]  # as last written (or read at start)
    watcher: ProgressWatcher
    throttle: ProgressThrottle
    backoff: Backoff
    plan: PlanInfo | None = None
    store: ObjectStore | None = None
    store_version: str | None = None  # the Secret's resourceVersion the store was built from
    shards: dict[int, ShardResult] = field(default_factory=dict)
    last_error: str | None = None


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def shard_progress(result: ShardResult) -> ShardProgress:
    failures = tuple((f.uri, f"{f.failure_reason}: {f.failure_message}".strip(": "))
                     for f in result.failed)
    return ShardProgress(
        audio_s_done=result.audio_s, audio_s_total=result.audio_s,
        files_done=len(result.files), files_total=len(result.files),
        files_failed=len(failures), failures=failures, finished=True,
    )


class Reconciler:
    """Reconciles TranscriptionJobs; one :meth:`run` per job, all sharing one client."""

    def __init__(self, settings: OperatorSettings, kube: KubeClient,
                 metrics: OperatorMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.clock = clock

    # --- the loop -----------------------------------------------------------------

    async def run(self, identity: JobIdentity, read_body: Callable[[], Mapping[str, Any]],
                  wake: asyncio.Event, stopped: Callable[[], bool]) -> None:
        """Reconcile until the job is finished or the operator stops (cancellation)."""
        state = JobState(
            identity=identity,
            status=dict(read_body().get("status") or {}),
            watcher=ProgressWatcher(on_change=wake.set),
            throttle=ProgressThrottle(self.settings.progress_patch_s),
            backoff=Backoff(self.settings.retry_initial_s, self.settings.retry_max_s),
        )
        try:
            while not stopped():
                wake.clear()  # before the pass: a change during it wakes the next one
                outcome = await self._pass(state, read_body())
                if outcome.finished:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=outcome.wait_s)
        finally:
            await state.watcher.close()

    async def _pass(self, state: JobState, body: Mapping[str, Any]) -> Outcome:
        try:
            outcome = await self.reconcile(state, body)
        except (ApiError, StorageError) as error:
            kind = "storage" if isinstance(error, StorageError) else "api"
            self.metrics.reconcile_errors.labels(kind=kind).inc()
            transient = isinstance(error, TransientApiError) or (
                isinstance(error, StorageError) and error.retryable)
            LOG.warning("%s/%s: %s error (%s), retrying: %s", state.identity.namespace,
                        state.identity.name, kind, "transient" if transient else "persistent",
                        error)
            await self._report_error(state, str(error))
            return Outcome(False, state.backoff.next(), retrying=True)
        except Exception as error:  # a bug must not kill the daemon: report, back off, retry
            self.metrics.reconcile_errors.labels(kind="unexpected").inc()
            LOG.exception("%s/%s: reconcile failed", state.identity.namespace,
                          state.identity.name)
            await self._report_error(state, f"{type(error).__name__}: {error}")
            return Outcome(False, state.backoff.next(), retrying=True)
        state.last_error = None
        if outcome.retrying:
            return Outcome(outcome.finished, state.backoff.next(), retrying=True)
        state.backoff.reset()
        return outcome

    async def _report_error(self, state: JobState, message: str) -> None:
        if message == state.last_error:
            return  # one Event per distinct error, not one per retry
        state.last_error = message
        await self._event(state.identity, "Warning", "ReconcileError", message)

    # --- one pass -------------------------------------------------------------------

    async def reconcile(self, state: JobState, body: Mapping[str, Any]) -> Outcome:
        """One level-triggered pass (see the module docstring)."""
        metadata = body.get("metadata") or {}
        generation = int(metadata.get("generation") or 1)
        if metadata.get("deletionTimestamp"):
            await state.watcher.close()
            return Outcome(True)
        if state.status.get("phase") in (Phase.SUCCEEDED, Phase.FAILED):
            await state.watcher.close()
            return Outcome(True)
        raw_spec = dict(body.get("spec") or {})
        try:
            spec = parse_spec(raw_spec)
        except SpecError as error:
            await self._write(state, generation, Observation(spec_error=str(error)), {})
            return Outcome(True)
        fingerprint = spec_fingerprint(raw_spec)
        planned_fingerprint = state.status.get("specFingerprint") or fingerprint

        if state.plan is None:
            planning = await self._plan(state, spec)
            if planning.state is not PlanningState.PLANNED:
                await self._write(state, generation,
                                  Observation(suspend=spec.suspend, planning=planning), {})
                if planning.state is PlanningState.REJECTED:
                    return Outcome(True)
                return Outcome(False, retrying=True)
        plan = state.plan
        if plan is None:  # _plan returned PLANNED without a plan: a bug
            raise RuntimeError("planning reported success without a plan")
        planning = Planning(PlanningState.PLANNED, files=plan.files, shards=plan.shards)
        identity = state.identity
        if state.status.get("planUri") != plan.uri:
            # Say "accepted" before the Job exists: a job whose Job cannot be created
            # (quota, admission) shows how far it got.
            await self._write(state, generation, Observation(
                spec_changed=planned_fingerprint != fingerprint, suspend=spec.suspend,
                planning=planning), {"specFingerprint": planned_fingerprint, "planUri": plan.uri,
                                     "jobName": child_job_name(identity)})

        job = await self._ensure_job(state, spec, plan)
        job_view = observe_job(job, identity)
        pods = [] if job is None or job_view.foreign else await asyncio.to_thread(
            self.kube.list_pods, identity.namespace, label_selector(identity))
        pods_view = observe_pods(pods, self.settings.worker.progress_port)
        watching = job_view.exists and not job_view.foreign and not job_finished(job_view)
        state.watcher.sync(pods_view.targets if watching else ())

        results_view = await self._read_shards(state, plan, completed_indexes(job))
        if results_view is None and job_view.complete and not job_view.foreign:
            results_view = await self._commit(state, plan)
        results = results_view or Results()

        observation = Observation(
            spec_changed=planned_fingerprint != fingerprint,
            suspend=spec.suspend,
            planning=planning,
            job=job_view,
            pods=pods_view.summary,
            results=results,
            was_suspended=cond.condition_status(state.status.get("conditions") or [],
                                                cond.SUSPENDED) is not None,
        )
        verdict_phase = cond.decide(observation).phase
        extra = self._status_fields(state, plan, planned_fingerprint, pods_view.first_started_at,
                                    pods_view.summary.running > 0 or job_view.ready > 0,
                                    job, results, verdict_phase.terminal)
        patch_wait = await self._write(state, generation, observation, extra,
                                       created=str(metadata.get("creationTimestamp") or ""))

        if verdict_phase.terminal:
            await state.watcher.close()
            if verdict_phase is Phase.FAILED and job_view.exists and not job_view.foreign \
                    and not job_finished(job_view) and not job_view.suspended:
                # Failed on our side (results invalid): stop the pods, keep what they wrote.
                await asyncio.to_thread(self.kube.patch_job, identity.namespace,
                                        child_job_name(identity), {"spec": {"suspend": True}})
            return Outcome(True)
        if results.state is ResultState.RETRYING:
            return Outcome(False, retrying=True)
        if pods_view.summary.any or (job_view.exists and not job_view.suspended):
            wait = self.settings.active_poll_s
        else:
            wait = self.settings.resync_s
        return Outcome(False, min(wait, patch_wait) if patch_wait > 0 else wait)

    def _status_fields(self, state: JobState, plan: PlanInfo, fingerprint: str,
                       first_started_at: str | None, working: bool,
                       job: Mapping[str, Any] | None, results: Results,
                       terminal: bool) -> dict[str, Any]:
        """The status besides phase and conditions: plan, progress, times, results."""
        progress = self._progress(state, plan)
        fields: dict[str, Any] = {
            "specFingerprint": fingerprint,
            "planUri": plan.uri,
            "jobName": child_job_name(state.identity),
            "progress": progress.status(),
            "failures": progress.failures_status(),
        }
        started = state.status.get("startTime")
        if not started and working:
            started = first_started_at or now_rfc3339()
        if not started and terminal and job is not None:
            # Finished while no operator watched: the Job's own start is the best we know.
            started = (job.get("status") or {}).get("startTime")
        if started:
            fields["startTime"] = started
        if results.state is ResultState.VERIFIED:
            fields["resultManifestUri"] = results.manifest_uri
        if terminal:
            completed = state.status.get("completionTime") or now_rfc3339()
            fields["completionTime"] = completed
            began, ended = parse_time(started), parse_time(completed)
            if began is not None and ended is not None and ended > began:
                fields["realTimeFactor"] = round(progress.audio_s_done / (ended - began), 2)
        return fields

    # --- planning -------------------------------------------------------------------

    async def _store(self, state: JobState, secret_name: str | None) -> ObjectStore:
        """A storage client for the job (rebuilt when its Secret changes)."""
        identity = state.identity
        values: dict[str, str] = {}
        version = ""
        if secret_name is not None:
            secret = await asyncio.to_thread(self.kube.read_secret, identity.namespace,
                                             secret_name)
            if secret is None:
                raise SecretNotFoundError(
                    f"Secret {identity.namespace}/{secret_name} (spec.storageSecretRef) "
                    "does not exist")
            version = str((secret.get("metadata") or {}).get("resourceVersion", ""))
            values = {key: base64.b64decode(value).decode("utf-8", "replace")
                      for key, value in (secret.get("data") or {}).items()}
            values.update(secret.get("stringData") or {})
        if state.store is None or state.store_version != version:
            settings = StorageSettings.from_variables(values, self.settings.storage_timeout_s)
            state.store = await asyncio.to_thread(ObjectStore, settings)
            state.store_version = version
        return state.store

    async def _plan(self, state: JobState, spec: TranscriptionJobSpec) -> Planning:
        try:
            store = await self._store(state, spec.storage_secret_name)
            plan = await asyncio.to_thread(ensure_plan, store, spec, state.identity.uid)
        except SecretNotFoundError as error:
            return Planning(PlanningState.RETRYING, Reason.SECRET_NOT_FOUND, str(error))
        except PlanConflictError as error:
            return Planning(PlanningState.REJECTED, Reason.OUTPUT_IN_USE, str(error))
        except InvalidPlanError as error:
            return Planning(PlanningState.REJECTED, Reason.OUTPUT_IN_USE, str(error))
        except TooManyInputsError as error:
            return Planning(PlanningState.REJECTED, Reason.INVALID_SPEC, str(error))
        except StorageError as error:
            self.metrics.reconcile_errors.labels(kind="storage").inc()
            return Planning(PlanningState.RETRYING, Reason.STORAGE_ERROR, str(error))
        state.plan = plan
        if plan.files == 0:
            await self._event(state.identity, "Warning", Reason.NO_INPUTS,
                              "the job has no inputs: it will succeed with an empty result")
        return Planning(PlanningState.PLANNED, files=plan.files, shards=plan.shards)

    # --- the Job ----------------------------------------------------------------------

    async def _ensure_job(self, state: JobState, spec: TranscriptionJobSpec, plan: PlanInfo
                          ) -> dict[str, Any] | None:
        identity = state.identity
        name = child_job_name(identity)
        job = await asyncio.to_thread(self.kube.get_job, identity.namespace, name)
        if job is None:
            manifest = build_job(identity, spec, PlanRef(plan.uri, plan.sha256, plan.shards),
                                 self.settings)
            try:
                job = await asyncio.to_thread(self.kube.create_job, manifest)
                self.metrics.jobs_created.inc()
                await self._event(identity, "Normal", "JobCreated",
                                  f"created Job {name} with {plan.shards} shard(s)")
            except AlreadyExistsError:
                # Created by an earlier pass or process (or still being deleted): adopt it.
                job = await asyncio.to_thread(self.kube.get_job, identity.namespace, name)
        if job is None or not is_owned_by(job, identity):
            return job
        if (job.get("metadata") or {}).get("deletionTimestamp"):
            return None  # someone deleted it: it is recreated once it is gone
        if not job_finished(observe_job(job, identity)) and \
                bool((job.get("spec") or {}).get("suspend")) != spec.suspend:
            job = await asyncio.to_thread(self.kube.patch_job, identity.namespace, name,
                                          {"spec": {"suspend": spec.suspend}})
        return job

    # --- results ----------------------------------------------------------------------

    async def _read_shards(self, state: JobState, plan: PlanInfo, completed: set[int]
                           ) -> Results | None:
        """Read the manifests of newly completed shards; an invalid one fails the job."""
        if state.store is None:
            return None
        for shard in sorted(completed - set(state.shards)):
            if shard >= plan.shards:
                continue
            try:
                result = await asyncio.to_thread(read_shard, state.store, plan, shard)
            except ManifestInvalidError as error:
                return Results(ResultState.INVALID, message=str(error))
            except StorageError as error:
                LOG.info("%s: shard %d manifest not readable yet: %s", state.identity.name,
                         shard, error)
                return None
            if result is not None:
                state.shards[shard] = result
        return None

    async def _commit(self, state: JobState, plan: PlanInfo) -> Results:
        store = state.store
        if store is None:
            return Results(ResultState.RETRYING, message="no storage client yet")
        try:
            uri = await asyncio.to_thread(commit_result, store, state.identity, plan,
                                          state.shards)
        except ManifestInvalidError as error:
            return Results(ResultState.INVALID, message=str(error))
        except StorageError as error:
            self.metrics.reconcile_errors.labels(kind="storage").inc()
            return Results(ResultState.RETRYING, message=f"verifying the results: {error}")
        return Results(ResultState.VERIFIED, manifest_uri=uri)

    def _progress(self, state: JobState, plan: PlanInfo) -> JobProgress:
        shard_files = {s: 0 for s in range(plan.shards)}
        for item in plan.inputs:
            shard_files[item.shard] += 1
        done = {s: shard_progress(r) for s, r in state.shards.items()}
        return aggregate(shard_files, done, state.watcher.live())

    # --- status and events ---------------------------------------------------------

    async def _write(self, state: JobState, generation: int, observation: Observation,
                     extra: dict[str, Any], created: str = "") -> float:
        """Patch the status if it changed; returns seconds until a throttled patch is due."""
        verdict = cond.decide(observation)
        old_conditions = list(state.status.get("conditions") or [])
        conditions = cond.merge_conditions(old_conditions, verdict.conditions, generation,
                                           now_rfc3339())
        desired = {**extra, "observedGeneration": generation, "phase": str(verdict.phase),
                   "conditions": conditions}
        changed = {key for key, value in desired.items() if state.status.get(key) != value}
        if not changed:
            return 0.0
        now_s = self.clock()
        if changed <= PROGRESS_FIELDS:
            due = state.throttle.due_in(now_s)
            if due > 0:
                return due
        identity = state.identity
        answer = await asyncio.to_thread(self.kube.patch_status, identity.namespace,
                                         identity.name, desired)
        self.metrics.status_patches.inc()
        if changed & PROGRESS_FIELDS:
            state.throttle.mark(now_s)
        previous = state.status
        state.status = dict(answer.get("status") or desired)
        self.metrics.set_phase(identity.uid, str(verdict.phase))
        if "startTime" in desired and not previous.get("startTime"):
            began, born = parse_time(desired["startTime"]), parse_time(created)
            if began is not None and born is not None:
                self.metrics.time_to_first_pod.observe(max(0.0, began - born))
        announced: set[tuple[str, str]] = set()
        for changed_condition in cond.transitions(old_conditions, conditions):
            reason, message = changed_condition["reason"], changed_condition["message"]
            if reason in QUIET_REASONS or (reason, message) in announced:
                continue  # Failed/InvalidSpec and Accepted/InvalidSpec are one piece of news
            announced.add((reason, message))
            kind = "Warning" if reason in WARNING_REASONS else "Normal"
            await self._event(identity, kind, reason, message)
        failed_files = len(desired.get("failures") or [])
        if verdict.phase is Phase.SUCCEEDED and failed_files:
            total = (desired.get("progress") or {}).get("filesFailed", failed_files)
            await self._event(identity, "Warning", "FilesFailed",
                              f"{total} input(s) could not be transcribed; see status.failures")
        return 0.0

    async def _event(self, identity: JobIdentity, kind: str, reason: str, message: str) -> None:
        LOG.info("%s/%s: %s %s: %s", identity.namespace, identity.name, kind, reason, message)
        involved = {"apiVersion": API_VERSION, "kind": KIND, "namespace": identity.namespace,
                    "name": identity.name, "uid": identity.uid}
        try:
            await asyncio.to_thread(self.kube.post_event, involved, kind, str(reason), message)
        except ApiError as error:  # an Event is news, not state: never fail a pass for one
            LOG.info("could not post event %s for %s: %s", reason, identity.name, error)
