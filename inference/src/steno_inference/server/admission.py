"""Admission control: a bounded queue measured in audio seconds, refused early with a retry hint.

Every call that transcribes holds a :class:`Ticket` for its share of one
budget, ``max_queue_audio_s``, the audio the server has accepted but not yet
decoded. The rule is decided once, when the call arrives:

* **A short call** (its duration known, at most ``long_call_reserve_s``)
  reserves its whole duration and gives it back window by window as the
  decoder finishes them. Such a call is never slowed down once admitted.
* **A long call** (a stream, an s3:// object, audio whose container does not
  state its duration, or audio longer than ``long_call_reserve_s``) reserves
  ``long_call_reserve_s`` for its lifetime, and its audio is fed to the
  engine only while the decoder's real queue is below the limit
  (:meth:`AdmissionController.wait_for_room`). So a three-hour stream takes
  its turn at the pace the decoder drains, and its client is slowed by
  HTTP/2 flow control instead of filling the server's memory.

The load a new call is measured against is the larger of the reservations
and the decoder's real queue (the engine's scheduler counts every queued
window, including those of callers that bypass admission, such as a job
worker in the same process). A call that does not fit is refused at once with
:class:`~steno_inference.server.errors.Overloaded`, whose ``retry_after_s`` is
the time the decoder needs, at its measured throughput, to make room. An
admitted call's wait is therefore bounded by about
``max_queue_audio_s / throughput``, whatever the offered load.

A long call never waits on reservations, only on the real queue, which drains
on its own: a server full of streams cannot deadlock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from steno_inference.server.failures import Overloaded
from steno_inference.server.limits import DEFAULT_LONG_CALL_RESERVE_S, DEFAULT_MAX_QUEUE_AUDIO_S

THROUGHPUT_WINDOW_S = 30.0  # decoded audio over the last 30 s gives the throughput
MIN_THROUGHPUT_SPAN_S = 1.0  # one burst of finished windows is not an instant
DEFAULT_RETRY_AFTER_S = 1.0  # the hint before any throughput has been measured
MIN_RETRY_AFTER_S = 0.1
MIN_EXCESS_S = 1.0  # a call of unknown size refused by check_room needs at least this much
MAX_RETRY_AFTER_S = 60.0
# A paced call re-checks the real queue at least this often: windows of
# callers outside admission (a job worker) finish without notifying it.
QUEUE_RECHECK_S = 0.25


@dataclass(frozen=True)
class AdmissionLimits:
    """The budget, in seconds of audio."""

    max_queue_audio_s: float = DEFAULT_MAX_QUEUE_AUDIO_S  # accepted and not yet decoded
    long_call_reserve_s: float = DEFAULT_LONG_CALL_RESERVE_S  # what a paced call reserves

    def validated(self) -> AdmissionLimits:
        if not self.max_queue_audio_s > 0:
            raise ValueError(f"max queue must be positive, not {self.max_queue_audio_s} s")
        if not 0 < self.long_call_reserve_s <= self.max_queue_audio_s:
            raise ValueError(
                f"long-call reserve must be positive and at most the queue limit "
                f"({self.max_queue_audio_s} s), not {self.long_call_reserve_s} s"
            )
        return self


class AdmissionController:
    """The budget shared by every call of one server; thread-safe."""

    def __init__(
        self,
        limits: AdmissionLimits,
        queue_probe: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``queue_probe`` returns the audio seconds queued at the decoder right now."""
        self.limits = limits.validated()
        self._queue_probe = queue_probe
        self._clock = clock
        self._cond = threading.Condition()
        self._reserved_s = 0.0
        self._done: deque[tuple[float, float]] = deque()  # (time, audio seconds decoded)

    # ------------------------------------------------------------ callers

    def admit(self, audio_s: float | None) -> Ticket:
        """A ticket for a call of ``audio_s`` seconds (None: unknown or unbounded).

        Raises Overloaded when the call does not fit now.
        """
        limit = self.limits.max_queue_audio_s
        short = audio_s is not None and audio_s <= self.limits.long_call_reserve_s
        wanted = max(0.0, audio_s) if short and audio_s is not None else (
            self.limits.long_call_reserve_s
        )
        queued = self._queue_probe()
        with self._cond:
            load = max(self._reserved_s, queued)
            if load > 0 and load + wanted > limit:
                retry = self._retry_after_locked(load + wanted - limit)
                raise Overloaded(load, wanted, limit, retry)
            self._reserved_s += wanted
        return Ticket(self, wanted, paced=not short)

    def check_room(self) -> None:
        """Refuse at once when the queue is already full, before any work on the request.

        Under overload this keeps a refusal cheap (no audio header is parsed);
        the full check is :meth:`admit`, once the call's duration is known.
        """
        limit = self.limits.max_queue_audio_s
        queued = self._queue_probe()
        with self._cond:
            load = max(self._reserved_s, queued)
            if load >= limit:
                retry = self._retry_after_locked(load - limit + MIN_EXCESS_S)
                raise Overloaded(load, None, limit, retry)

    def wait_for_room(self, stop: Callable[[], bool]) -> bool:
        """Block while the decoder's queue is at the limit; False if ``stop()`` turned True."""
        limit = self.limits.max_queue_audio_s
        while True:
            if stop():
                return False
            if self._queue_probe() < limit:
                return True
            with self._cond:
                self._cond.wait(QUEUE_RECHECK_S)

    # ------------------------------------------------------------- gauges

    def reserved_s(self) -> float:
        with self._cond:
            return self._reserved_s

    def load_s(self) -> float:
        """What a new call is measured against: reservations or the real queue."""
        queued = self._queue_probe()
        with self._cond:
            return max(self._reserved_s, queued)

    def throughput_audio_s_per_s(self) -> float:
        """Audio seconds decoded per second over the last ``THROUGHPUT_WINDOW_S``."""
        with self._cond:
            return self._throughput_locked()

    # ----------------------------------------------------------- internal

    def _record_done(self, seconds: float, release_s: float) -> None:
        now = self._clock()
        with self._cond:
            self._reserved_s = max(0.0, self._reserved_s - release_s)
            if seconds > 0:
                self._done.append((now, seconds))
            self._prune_locked(now)
            self._cond.notify_all()

    def _release(self, seconds: float) -> None:
        with self._cond:
            self._reserved_s = max(0.0, self._reserved_s - seconds)
            self._cond.notify_all()

    def _prune_locked(self, now: float) -> None:
        while self._done and self._done[0][0] < now - THROUGHPUT_WINDOW_S:
            self._done.popleft()

    def _throughput_locked(self) -> float:
        # Over the span the recent windows actually cover, so a burst after an
        # idle hour is not diluted by the idle part of the window.
        now = self._clock()
        self._prune_locked(now)
        if not self._done:
            return 0.0
        span = min(THROUGHPUT_WINDOW_S, max(MIN_THROUGHPUT_SPAN_S, now - self._done[0][0]))
        return sum(seconds for _, seconds in self._done) / span

    def _retry_after_locked(self, excess_s: float) -> float:
        rate = self._throughput_locked()
        if rate <= 0:
            return DEFAULT_RETRY_AFTER_S
        return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, excess_s / rate))


class Ticket:
    """One call's share of the budget; close it (or use ``with``) when the call ends."""

    def __init__(self, controller: AdmissionController, reserved_s: float, paced: bool) -> None:
        self._controller = controller
        self._lock = threading.Lock()
        self._held_s = reserved_s
        self.reserved_s = reserved_s
        self.paced = paced  # fed to the engine at the decoder's pace (wait_for_room)
        self._closed = False

    def done(self, seconds: float) -> None:
        """``seconds`` of this call's audio were decoded."""
        release = 0.0
        with self._lock:
            if not self._closed and not self.paced:
                release = min(self._held_s, max(0.0, seconds))
                self._held_s -= release
        self._controller._record_done(seconds, release)

    def wait_for_room(self, stop: Callable[[], bool]) -> bool:
        """For paced calls: block until the decoder's queue has room (see the controller)."""
        return self._controller.wait_for_room(stop)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held, self._held_s = self._held_s, 0.0
        self._controller._release(held)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
