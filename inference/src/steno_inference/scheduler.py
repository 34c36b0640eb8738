"""One decode loop per engine, fed by every caller: windows of different calls share batches.

Callers (CLI files, gRPC calls, job-worker files) submit windows with a
callback; a single thread runs :meth:`WhisperRunner.decode` over this
scheduler as its feed and hands each result to its window's callback. The
queue is measured in windows and in audio seconds, so the server's admission
control can refuse work before it is queued rather than after. Windows whose
caller has gone away, or whose deadline has passed, are dropped when they
reach the front and never touch the GPU.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from steno_inference.runner import DecodeRequest, DecodeResult, RequestFeed

LOG = logging.getLogger(__name__)

ResultCallback = Callable[[DecodeResult], None]


class DecodeLoop(Protocol):
    """What the scheduler drives: WhisperRunner, or OnnxWhisperRunner on the onnx backend."""

    def decode(self, requests: RequestFeed) -> Iterator[DecodeResult]:
        """Results of the feed's windows as they finish; ends when the feed is closed."""
        ...


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot for metrics and admission control."""

    queued_windows: int
    queued_audio_s: float
    busy_slots: int
    windows_done: int


class DecodeScheduler:
    """A thread-safe feed for one runner, and the thread that drives it."""

    def __init__(self, runner: DecodeLoop) -> None:
        self._runner = runner
        self._queue: deque[tuple[DecodeRequest, float]] = deque()
        self._callbacks: dict[int, tuple[object, ResultCallback]] = {}
        self._tickets = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._queued_audio_s = 0.0
        self._busy = 0
        self._done = 0
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # -------------------------------------------------------------- callers

    def submit(self, request: DecodeRequest, audio_s: float, on_result: ResultCallback) -> None:
        """Queue a window; ``on_result`` runs on the decoder thread when it finishes."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the decoder is shut down")
            if self._failure is not None:
                raise RuntimeError(f"the decoder failed: {self._failure}")
            ticket = next(self._tickets)
            self._callbacks[ticket] = (request.key, on_result)
            self._queue.append((replace(request, key=ticket), audio_s))
            self._queued_audio_s += audio_s
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="steno-decoder", daemon=True
                )
                self._thread.start()

    def stats(self) -> SchedulerStats:
        with self._cond:
            return SchedulerStats(len(self._queue), self._queued_audio_s, self._busy, self._done)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking work; the loop ends once busy windows finish."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    # ----------------------------------------------------------------- feed

    def take(self, limit: int, wait: bool) -> list[DecodeRequest] | None:
        with self._cond:
            while wait and not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue and self._closed:
                return None
            batch: list[DecodeRequest] = []
            while self._queue and len(batch) < limit:
                request, audio_s = self._queue.popleft()
                self._queued_audio_s -= audio_s
                batch.append(request)
            self._busy += len(batch)
            return batch

    # ----------------------------------------------------------------- loop

    def _loop(self) -> None:
        try:
            for result in self._runner.decode(self):
                self._deliver(result)
        except Exception as error:  # the thread must report to every waiting caller, not vanish
            LOG.exception("decoder loop failed")
            with self._cond:
                self._failure = error
                pending = list(self._callbacks.values())
                self._callbacks.clear()
                self._queue.clear()
                self._queued_audio_s = 0.0
            for key, callback in pending:
                callback(
                    DecodeResult(key, (), (), None, 0.0, 0.0, truncated=False, cancelled=True,
                                 failure=f"decoder failed: {error}")
                )

    def _deliver(self, result: DecodeResult) -> None:
        with self._cond:
            key, callback = self._callbacks.pop(result.key)  # type: ignore[call-overload]
            self._busy -= 1
            self._done += 1
        try:
            callback(replace(result, key=key))
        except Exception:  # one caller's bug must not stop everyone's decoding
            LOG.exception("result callback failed")
