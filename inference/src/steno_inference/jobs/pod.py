"""One job pod from start to exit code: read the plan, load the engine, run the shard.

:func:`run_job_pod` is what both ``steno work --plan URI --shard N`` and
``steno serve --job PLAN_URI`` call; it never raises, it returns one of the
exit codes of :mod:`.exitcodes`. Before the engine is loaded it

* reads and validates the plan and the shard index (bad → exit 2);
* checks that the store honours ``If-None-Match: *``, the condition the
  commit protocol stands on: it repeats the create-only write of the plan
  with the plan's own bytes, which must be refused with 412 (a store that
  ignores the header overwrites the plan with identical bytes, harmlessly,
  and the pod stops with exit 2 instead of committing unsafely);
* returns at once when the shard's manifest already exists (a pod restarted
  after its work was done needs no model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from steno_inference.audio import AudioSource
from steno_inference.engine import EngineError, SourceResult, TranscriptionCancelled
from steno_inference.jobs import layout
from steno_inference.jobs.commit import CommitError
from steno_inference.jobs.exitcodes import EXIT_BAD_SPEC, EXIT_DONE, EXIT_FAILED, EXIT_RETRYABLE
from steno_inference.jobs.plan import MAX_PLAN_BYTES, Plan, PlanError, parse_plan
from steno_inference.jobs.records import RecordError
from steno_inference.jobs.spec import JobSpecError
from steno_inference.jobs.worker import (
    EngineFailure,
    ShardInterrupted,
    ShardOutcome,
    Transcriber,
    WorkerSettings,
    log_event,
    run_shard,
)
from steno_inference.models.errors import HubUnavailableError, ModelError
from steno_inference.options import OptionsError, TranscribeOptions
from steno_inference.progress import ProgressBoard
from steno_inference.storage.client import ObjectStorage
from steno_inference.storage.config import StorageConfigurationError
from steno_inference.storage.errors import (
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
)
from steno_inference.storage.uri import InvalidUriError, S3Uri, parse_uri
from steno_inference.transcript import Segment

LOG = logging.getLogger(__name__)

EngineLoader = Callable[[str], Transcriber]  # model name (from the plan) → loaded engine

BAD_SPEC_ERRORS: tuple[type[BaseException], ...] = (
    JobSpecError, PlanError, RecordError, OptionsError, InvalidUriError,
    StorageConfigError, StorageConfigurationError,
)
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    EngineFailure, EngineError, TranscriptionCancelled, ShardInterrupted, HubUnavailableError,
    KeyboardInterrupt, ConnectionError, TimeoutError,
)


class UnsupportedStoreError(StorageConfigError):
    """The store ignores conditional writes, so results could be doubled: refuse to work."""


@dataclass(frozen=True)
class PodResult:
    exit_code: int
    outcome: ShardOutcome | None = None
    error: BaseException | None = None


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that ended a pod (see :mod:`.exitcodes`)."""
    if isinstance(error, HubUnavailableError):  # a ModelError that may go away
        return EXIT_RETRYABLE
    if isinstance(error, (*BAD_SPEC_ERRORS, ModelError)):
        return EXIT_BAD_SPEC
    if isinstance(error, StorageError):
        return EXIT_RETRYABLE if error.retryable else EXIT_BAD_SPEC
    if isinstance(error, RETRYABLE_ERRORS):
        return EXIT_RETRYABLE
    if isinstance(error, CommitError):
        return EXIT_FAILED
    return EXIT_FAILED


def check_conditional_writes(storage: ObjectStorage, plan_uri: S3Uri, plan_bytes: bytes) -> None:
    """Raise :class:`UnsupportedStoreError` unless a create-only write of an existing key fails."""
    try:
        storage.put(plan_uri, plan_bytes, create_only=True)
    except PreconditionFailedError:
        return
    except StorageConfigError as error:  # no write permission where the plan lives
        LOG.warning("cannot check that the store honours If-None-Match (%s)", error)
        return
    raise UnsupportedStoreError(
        str(plan_uri),
        "the store accepted a create-only write (If-None-Match: *) over an existing object; "
        "steno's commit protocol needs conditional writes (AWS S3, MinIO, Ceph RGW and "
        "SeaweedFS support them)",
    )


class _LazyEngine:
    """Loads the engine on first use: a shard that is already done never loads it."""

    def __init__(self, load: EngineLoader, model: str) -> None:
        self._load = load
        self._model = model
        self._engine: Transcriber | None = None

    def get(self) -> Transcriber:
        if self._engine is None:
            self._engine = self._load(self._model)
        return self._engine

    def check_options(self, options: TranscribeOptions) -> TranscribeOptions:
        return self.get().check_options(options)

    def transcribe_many(
        self,
        sources: Sequence[tuple[AudioSource, str]],
        options: TranscribeOptions,
        on_progress: Callable[[float], None] | None = None,
        on_segments: Callable[[int, list[Segment]], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[SourceResult]:
        return self.get().transcribe_many(sources, options, on_progress, on_segments,
                                          is_cancelled)


def load_plan(storage: ObjectStorage, plan_uri: str) -> tuple[Plan, S3Uri, bytes]:
    uri = parse_uri(plan_uri)
    data = storage.get_bytes(uri, MAX_PLAN_BYTES)
    return parse_plan(data, plan_uri), uri, data


def run_job_pod(
    plan_uri: str,
    shard_index: int,
    *,
    storage: ObjectStorage,
    load_engine: EngineLoader,
    board: ProgressBoard,
    is_cancelled: Callable[[], bool] | None = None,
    settings: WorkerSettings | None = None,
    on_event: Callable[[str, dict[str, object]], None] = log_event,
) -> PodResult:
    """Work through shard ``shard_index`` of the plan at ``plan_uri``; never raises."""
    try:
        plan, uri, data = load_plan(storage, plan_uri)
        plan.shard(shard_index)
        check_conditional_writes(storage, uri, data)
        engine = _LazyEngine(load_engine, plan.spec.model)
        outcome = run_shard(
            engine, storage, plan, shard_index, board,
            settings=settings or WorkerSettings(), is_cancelled=is_cancelled, on_event=on_event,
        )
    except BaseException as error:  # every way out becomes an exit code
        code = exit_code_for(error)
        if code == EXIT_FAILED:
            LOG.exception("shard %s of %s failed unexpectedly", shard_index, plan_uri)
        else:
            LOG.error("shard %s of %s: %s", shard_index, plan_uri, error)
        if board.snapshot().state != "failed":
            board.update(state="failed", finished=True, message=str(error)[:500])
        return PodResult(code, None, error)
    LOG.info(
        "shard %d: %d files (%d failed), %.1f s of audio; manifest %s%s",
        outcome.shard, outcome.files, outcome.failed, outcome.audio_s,
        layout.manifest_uri(plan.spec.output, shard_index),
        " (already done)" if outcome.already_done else "",
    )
    return PodResult(EXIT_DONE, outcome)
