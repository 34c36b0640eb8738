"""The job worker: one shard of a plan, from input objects to a committed manifest.

``run_shard`` is a library call (the ``steno work`` command and ``steno
serve --job`` both use it through :mod:`steno_inference.jobs.pod`):

1. If the shard's manifest exists, the shard is done: report it and return.
2. Abort incomplete multipart uploads to this shard's keys (left by a
   worker killed mid-upload; a live worker always aborts its own).
3. Files whose commit record exists were decided by an earlier run (or by
   a worker racing this one): verify their outputs, rewrite any missing
   one from the record, and skip them.
4. The rest stream into one ``Engine.transcribe_many`` call (heads
   prefetched, see :mod:`.prefetch`); each result is committed on a small
   thread pool while the engine goes on (see :mod:`.commit`): a transcript,
   or a per-file failure when the file cannot be decoded (empty, not audio,
   corrupt, too large a header), is missing or changed since planning.
5. When every file is committed, the manifest is written create-only from
   the records. A worker that finds it already written (a racing worker
   won) checks that it lists the same records and returns.

A read or write failure of the store, or a failure of the engine itself,
is not a property of the file: it stops the shard with the error (the pod
exits "retryable" and the rerun resumes from the commit records).

Progress goes to a :class:`~steno_inference.progress.ProgressBoard`, which a
gRPC ``WatchProgress`` stream reads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from steno_inference.audio import AudioError, AudioSource
from steno_inference.engine import SourceResult
from steno_inference.jobs import layout
from steno_inference.jobs.commit import Committer, EventSink, failure_for_plan_problem
from steno_inference.jobs.plan import REASON_MISSING, Plan, PlannedInput
from steno_inference.jobs.prefetch import PREFETCH_FILES, PREFETCH_HEAD_BYTES, Prefetcher
from steno_inference.jobs.records import (
    MAX_MANIFEST_BYTES,
    REASON_CHANGED,
    FileRecord,
    ManifestEntry,
    RecordError,
    manifest_dict,
    parse_manifest,
)
from steno_inference.options import TranscribeOptions
from steno_inference.progress import FileFailure, ProgressBoard
from steno_inference.storage.client import ObjectInfo, ObjectStorage
from steno_inference.storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
)
from steno_inference.storage.reader import ObjectReader
from steno_inference.storage.uri import S3Uri
from steno_inference.transcript import Segment

LOG = logging.getLogger(__name__)
EVENTS = logging.getLogger("steno_inference.jobs.events")  # one JSON line per commit decision

COMMIT_THREADS = 4  # commits (a few small PUTs each) in flight while the engine goes on
MAX_PENDING_COMMITS = 16  # results waiting for their commit; the engine waits beyond this
MAX_MESSAGE_CHARS = 500  # of a failure's message on the progress board


class Transcriber(Protocol):
    """What the worker needs of the engine (``steno_inference.engine.Engine``)."""

    def check_options(self, options: TranscribeOptions) -> TranscribeOptions: ...

    def transcribe_many(
        self,
        sources: Sequence[tuple[AudioSource, str]],
        options: TranscribeOptions,
        on_progress: Callable[[float], None] | None = None,
        on_segments: Callable[[int, list[Segment]], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[SourceResult]: ...


class EngineFailure(RuntimeError):
    """The engine failed on a file for a reason that is not the file's (device, cancel)."""


class ShardInterrupted(RuntimeError):
    """The worker was asked to stop before the shard was done; committed files stay."""


@dataclass(frozen=True)
class WorkerSettings:
    prefetch_files: int = PREFETCH_FILES
    prefetch_head_bytes: int = PREFETCH_HEAD_BYTES
    commit_threads: int = COMMIT_THREADS
    max_pending_commits: int = MAX_PENDING_COMMITS


@dataclass(frozen=True)
class ShardOutcome:
    """What a finished shard looks like."""

    shard: int
    manifest_uri: S3Uri
    files: int
    succeeded: int
    failed: int
    decided_here: int  # records this run wrote (won)
    adopted: int  # records found written (earlier run or a racing worker)
    audio_s: float
    already_done: bool  # the manifest existed when the worker started


def log_event(event: str, fields: dict[str, Any]) -> None:
    """The default event sink: one JSON line on the ``steno_inference.jobs.events`` logger."""
    EVENTS.info("%s", json.dumps({"event": event, **fields}, sort_keys=True))


def run_shard(
    engine: Transcriber,
    storage: ObjectStorage,
    plan: Plan,
    shard_index: int,
    board: ProgressBoard,
    *,
    settings: WorkerSettings | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    on_event: EventSink = log_event,
) -> ShardOutcome:
    """Transcribe and commit shard ``shard_index`` of ``plan`` (see the module docstring)."""
    run = _ShardRun(engine, storage, plan, shard_index, board, settings or WorkerSettings(),
                    is_cancelled or (lambda: False), on_event)
    try:
        return run.execute()
    except BaseException as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        board.update(state="failed", finished=True, message=first_line[:MAX_MESSAGE_CHARS])
        raise


class _ShardRun:
    def __init__(
        self,
        engine: Transcriber,
        storage: ObjectStorage,
        plan: Plan,
        shard: int,
        board: ProgressBoard,
        settings: WorkerSettings,
        is_cancelled: Callable[[], bool],
        on_event: EventSink,
    ) -> None:
        self.engine = engine
        self.storage = storage
        self.plan = plan
        self.shard = shard
        self.items = plan.shard(shard)
        self.board = board
        self.settings = settings
        self.is_cancelled = is_cancelled
        self.on_event = on_event
        self.committer = Committer(storage, plan, on_event)
        self.manifest_uri = layout.manifest_uri(plan.spec.output, shard)
        self.decided: dict[int, FileRecord] = {}  # plan index → authoritative record
        self.won = 0
        self.adopted = 0
        self.audio_total_s = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------- the run

    def execute(self) -> ShardOutcome:
        self.board.update(state="running", files_total=len(self.items), finished=False)
        if self.storage.head(self.manifest_uri) is not None:
            return self._already_done()
        options = self.engine.check_options(self.plan.spec.options)
        aborted = self.storage.abort_incomplete_uploads(self.plan.spec.output, self._owns)
        if aborted:
            self.on_event("aborted_uploads", {"count": aborted, "shard": self.shard})
        todo = self._resume()
        if todo:
            self._transcribe(todo, options)
        if self.is_cancelled():
            raise ShardInterrupted(f"shard {self.shard}: stopped before it was done")
        return self._finish()

    def _owns(self, uri: S3Uri) -> bool:
        """Whether ``uri`` is a key this shard writes (its outputs, records, manifest)."""
        if uri == self.manifest_uri:
            return True
        for item in self.items:
            if uri == self.committer.record_uri(item):
                return True
            if item.stem is not None and any(
                uri == layout.output_uri(self.plan.spec.output, item.stem, fmt)
                for fmt in self.plan.spec.formats
            ):
                return True
        return False

    def _already_done(self) -> ShardOutcome:
        manifest = parse_manifest(
            self.storage.get_bytes(self.manifest_uri, MAX_MANIFEST_BYTES), str(self.manifest_uri)
        )
        summary = manifest.get("summary", {})
        if manifest.get("jobId") != self.plan.spec.job_id:
            raise RecordError(f"{self.manifest_uri} belongs to job {manifest.get('jobId')!r}")
        failed = int(summary.get("failed", 0))
        self.board.update(
            state="succeeded", finished=True, files_done=len(self.items),
            files_failed=failed, audio_s_done=float(summary.get("audioS", 0.0)),
            audio_s_total=float(summary.get("audioS", 0.0)),
        )
        return ShardOutcome(self.shard, self.manifest_uri, len(self.items),
                            len(self.items) - failed, failed, 0, 0,
                            float(summary.get("audioS", 0.0)), already_done=True)

    def _resume(self) -> list[PlannedInput]:
        """Adopt files decided before (verifying their outputs); return the rest."""
        prefix = layout.records_prefix(self.plan.spec.output)
        existing = {info.uri for info in self.storage.list_objects(prefix)}
        todo: list[PlannedInput] = []
        for item in self.items:
            if self.is_cancelled():
                raise ShardInterrupted(f"shard {self.shard}: stopped while resuming")
            if self.committer.record_uri(item) in existing:
                record = self.committer.load(item)
                if record is not None:
                    self.committer.write_outputs(record, check_existing=True)
                    self.on_event("verified", {"index": item.index, "uri": str(item.uri)})
                    self._done(item, record, "resumed")
                    continue
            if item.problem is not None:  # known from planning: nothing to transcribe
                self._commit(item, failure_for_plan_problem(self.committer, item))
                continue
            todo.append(item)
        return todo

    def _transcribe(self, todo: list[PlannedInput], options: TranscribeOptions) -> None:
        readers = [
            self.storage.open(ObjectInfo(item.uri, item.size, item.etag)) for item in todo
        ]
        pending: list[Future[None]] = []
        with Prefetcher(readers, self.settings.prefetch_files,
                        self.settings.prefetch_head_bytes) as prefetcher, ThreadPoolExecutor(
            max_workers=self.settings.commit_threads, thread_name_prefix="steno-commit"
        ) as committers:
            sources: list[tuple[AudioSource, str]] = [
                (source, source.name) for source in prefetcher.sources
            ]
            results = self.engine.transcribe_many(
                sources, options, on_progress=self.board.add_audio,
                is_cancelled=self.is_cancelled,
            )
            try:
                for result in results:
                    readers[result.index].close()
                    if self.is_cancelled():
                        break
                    item = todo[result.index]
                    record = self._record_for(item, result, readers[result.index])
                    pending.append(committers.submit(self._commit, item, record))
                    pending = _reap(pending, self.settings.max_pending_commits)
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()  # leaving early stops the engine's work for this call
                wait(pending)  # commits already started finish either way
        for future in pending:
            error = future.exception()
            if error is not None:
                raise error

    def _record_for(
        self, item: PlannedInput, result: SourceResult, reader: ObjectReader
    ) -> FileRecord:
        """The record a result deserves, or raise when the failure is not the file's."""
        storage_error = reader.storage_error
        if storage_error is not None:
            if isinstance(storage_error, ObjectNotFoundError):
                return self.committer.failure_record(
                    item, REASON_MISSING, "the object was deleted after the job was planned")
            if isinstance(storage_error, PreconditionFailedError):
                return self.committer.failure_record(
                    item, REASON_CHANGED, "the object changed after the job was planned "
                    "(its ETag no longer matches the plan)")
            raise storage_error
        if result.transcript is not None:
            return self.committer.success_record(item, result.transcript)
        failure = result.failure
        if isinstance(failure, AudioError):
            return self.committer.failure_record(item, failure.reason, failure.problem)
        raise EngineFailure(f"{item.uri}: {result.error or 'no result'}")

    def _commit(self, item: PlannedInput, record: FileRecord) -> None:
        decided = self.committer.commit(item, record)
        self._done(item, decided, "won" if decided is record else "lost")

    def _done(self, item: PlannedInput, record: FileRecord, how: str) -> None:
        """Count a decided file; ``how``: won (written here), lost (a racing worker's
        record), resumed (decided by an earlier run)."""
        with self._lock:
            self.decided[item.index] = record
            if how == "won":
                self.won += 1
            else:
                self.adopted += 1
            self.audio_total_s += record.duration_s
            total = self.audio_total_s
        failure = None
        if record.failure is not None:
            failure = FileFailure(str(item.uri), f"{record.failure.reason}: "
                                                 f"{record.failure.message}")
        self.board.file_done(failure)
        # Seconds of audio in the shard "as far as known": grows as files finish.
        self.board.update(audio_s_total=total)
        if how == "resumed":  # the engine reported the others' seconds as it went
            self.board.add_audio(record.duration_s)

    # ------------------------------------------------------------ manifest

    def _finish(self) -> ShardOutcome:
        missing = [item.index for item in self.items if item.index not in self.decided]
        if missing:
            raise EngineFailure(f"shard {self.shard}: no result for inputs {missing[:10]}")
        entries = [
            ManifestEntry(item.index, self.committer.record_uri(item), self.decided[item.index])
            for item in self.items
        ]
        manifest = manifest_dict(self.plan, self.shard, entries)
        data = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        try:
            self.storage.put(self.manifest_uri, data, create_only=True)
            self.on_event("manifest_written", {"uri": str(self.manifest_uri)})
        except PreconditionFailedError:
            self._check_existing_manifest(manifest)
        summary = manifest["summary"]
        self.board.update(state="succeeded", finished=True, audio_s_total=summary["audioS"])
        return ShardOutcome(
            shard=self.shard, manifest_uri=self.manifest_uri, files=summary["files"],
            succeeded=summary["succeeded"], failed=summary["failed"], decided_here=self.won,
            adopted=self.adopted, audio_s=summary["audioS"], already_done=False,
        )

    def _check_existing_manifest(self, mine: dict[str, Any]) -> None:
        theirs = parse_manifest(
            self.storage.get_bytes(self.manifest_uri, MAX_MANIFEST_BYTES), str(self.manifest_uri)
        )
        if theirs != mine:
            # Both were built from the same create-only records; a difference means
            # another steno version wrote it. The manifest written first stays the
            # commit point; say so loudly.
            LOG.error("%s was written by another worker and differs from this one's",
                      self.manifest_uri)
        self.on_event("manifest_adopted", {"uri": str(self.manifest_uri)})


def _reap(pending: list[Future[None]], limit: int) -> list[Future[None]]:
    """Raise the first commit failure; wait while too many commits are pending."""
    while True:
        still: list[Future[None]] = []
        for future in pending:
            if future.done():
                error = future.exception()
                if error is not None:
                    raise error
            else:
                still.append(future)
        if len(still) < limit:
            return still
        wait(still, return_when="FIRST_COMPLETED")
        pending = still
