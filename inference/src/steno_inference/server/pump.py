"""One engine call on a thread of its own, its results handed over through a bounded queue.

``Engine.transcribe_many`` reports each window's segments through a callback
on the thread that iterates it; a streaming response must instead *yield*
them from the gRPC handler's generator. :class:`EngineRun` runs the engine
on a pump thread and hands windows and the final result to the handler.

* **Bounded.** At most :data:`MAX_PENDING_EVENTS` windows wait for a slow
  client; then the pump blocks, the engine stops taking results for this
  call, its windows-in-flight cap stops its reader, and the client's sends
  are held back by flow control. Memory stays bounded however long the call.
* **Stoppable.** The handler waits on its call's ``stopped`` event as well as
  on the queue. Once the call is stopped the engine drops its windows
  (``is_cancelled``) and should report the source as cancelled within a
  moment; if it has not after :data:`ENGINE_STOP_GRACE_S`, the handler
  returns anyway and leaves the pump thread behind (logged and counted), so
  a gRPC worker thread is never lost to an engine that missed a cancellation.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from steno_inference.audio import AudioSource
from steno_inference.engine import Engine, SourceResult
from steno_inference.options import TranscribeOptions
from steno_inference.transcript import Segment

LOG = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 16  # windows decoded and not yet sent to a slow client
WAKE_S = 0.5  # how often a waiting handler re-checks its call (see engine.CANCEL_POLL_S)
ENGINE_STOP_GRACE_S = 5.0  # a stopped call's engine run gets this long to report


@dataclass(frozen=True)
class WindowDone:
    """The segments of one window, in the order of the source's windows."""

    index: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class RunFinished:
    """The engine's result for the source."""

    result: SourceResult


class EngineAbandoned(RuntimeError):
    """The engine did not report a stopped call in time; its thread was left behind."""


class EngineRun:
    """``transcribe_many`` of one source on a pump thread."""

    def __init__(
        self,
        engine: Engine,
        source: AudioSource,
        name: str,
        options: TranscribeOptions,
        *,
        on_progress: Callable[[float], None],
        is_cancelled: Callable[[], bool],
        stream_segments: bool,
        on_abandoned: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._source = source
        self._name = name
        self._options = options
        self._on_progress = on_progress
        self._stream_segments = stream_segments
        self._on_abandoned = on_abandoned
        self._events: queue.Queue[WindowDone | RunFinished | BaseException] = queue.Queue(
            MAX_PENDING_EVENTS
        )
        self._consumer_gone = threading.Event()
        self._windows = 0

        def cancelled() -> bool:
            return self._consumer_gone.is_set() or is_cancelled()

        self._is_cancelled = cancelled
        self._thread = threading.Thread(target=self._pump, name="steno-call", daemon=True)

    def events(self, stopped: threading.Event) -> Iterator[WindowDone | RunFinished]:
        """Windows (if streaming) then the result; raises EngineAbandoned (see module doc)."""
        self._thread.start()
        stopped_at: float | None = None
        try:
            while True:
                try:
                    event = self._events.get(timeout=WAKE_S)
                except queue.Empty:
                    if stopped.is_set() or self._is_cancelled():
                        now = time.monotonic()
                        stopped_at = stopped_at if stopped_at is not None else now
                        if now - stopped_at > ENGINE_STOP_GRACE_S:
                            LOG.warning(
                                "%s: the engine did not report a stopped call within %.0f s; "
                                "leaving its thread behind", self._name, ENGINE_STOP_GRACE_S,
                            )
                            if self._on_abandoned is not None:
                                self._on_abandoned()
                            raise EngineAbandoned(self._name) from None
                    continue
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, RunFinished):
                    return
        finally:
            self._consumer_gone.set()

    # ------------------------------------------------------------- thread

    def _pump(self) -> None:
        try:
            results = self._engine.transcribe_many(
                [(self._source, self._name)],
                self._options,
                on_progress=self._on_progress,
                on_segments=self._segments if self._stream_segments else None,
                is_cancelled=self._is_cancelled,
            )
            with contextlib.closing(results):  # type: ignore[type-var]  # a generator
                for result in results:
                    self._put(RunFinished(result))
        except BaseException as error:  # handed to the handler, which maps it to a status
            self._put(error)

    def _segments(self, _source_index: int, segments: list[Segment]) -> None:
        self._put(WindowDone(self._windows, tuple(segments)))
        self._windows += 1

    def _put(self, event: WindowDone | RunFinished | BaseException) -> None:
        while not self._consumer_gone.is_set():
            try:
                self._events.put(event, timeout=WAKE_S)
                return
            except queue.Full:
                continue
