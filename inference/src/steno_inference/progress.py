"""Progress of a job worker's shard, shared between the worker and the gRPC WatchProgress stream.

The worker updates one :class:`ProgressBoard`; any number of watchers read
consistent snapshots and can block until something changes (with a timeout,
so a stream can send keep-alives and notice cancellation). Transport-free:
the gRPC servicer only converts snapshots to protobuf messages.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class FileFailure:
    """An input that could not be transcribed, and why (one line)."""

    uri: str
    reason: str


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a shard stands. ``version`` grows with every change."""

    version: int = 0
    audio_s_done: float = 0.0
    audio_s_total: float = 0.0
    files_done: int = 0  # committed, including failed ones
    files_total: int = 0
    files_failed: int = 0
    failures: tuple[FileFailure, ...] = ()
    finished: bool = False  # the shard is done (its manifest written) or gave up
    state: str = "pending"  # pending | running | succeeded | failed
    message: str = ""  # the reason when state is failed


@dataclass
class ProgressBoard:
    """Thread-safe holder of the latest snapshot."""

    _snapshot: ProgressSnapshot = field(default_factory=ProgressSnapshot)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def snapshot(self) -> ProgressSnapshot:
        with self._cond:
            return self._snapshot

    def update(self, **changes: object) -> ProgressSnapshot:
        """Apply field changes (any of ProgressSnapshot's fields but ``version``)."""
        with self._cond:
            self._snapshot = replace(
                self._snapshot, version=self._snapshot.version + 1, **changes  # type: ignore[arg-type]
            )
            self._cond.notify_all()
            return self._snapshot

    def add_audio(self, seconds: float) -> None:
        with self._cond:
            done = self._snapshot.audio_s_done + seconds
            self._snapshot = replace(
                self._snapshot, version=self._snapshot.version + 1, audio_s_done=done
            )
            self._cond.notify_all()

    def file_done(self, failure: FileFailure | None = None) -> None:
        with self._cond:
            snap = self._snapshot
            failures = snap.failures + ((failure,) if failure is not None else ())
            self._snapshot = replace(
                snap,
                version=snap.version + 1,
                files_done=snap.files_done + 1,
                files_failed=snap.files_failed + (failure is not None),
                failures=failures,
            )
            self._cond.notify_all()

    def wait_for_change(self, after_version: int, timeout_s: float) -> ProgressSnapshot:
        """The snapshot once its version exceeds ``after_version``, or the current one
        after ``timeout_s``."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._snapshot.version > after_version or self._snapshot.finished,
                timeout=timeout_s,
            )
            return self._snapshot
