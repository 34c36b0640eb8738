"""The server's transport-free core: admission, engine calls, drain, progress watching.

The gRPC servicer converts messages into the plain types of this module and
back, and nothing else; everything a call *does* happens here, so the rules
below hold for every method and are testable without a network:

* A call is refused while the server drains (:class:`Draining`), and counted
  while it runs so a drain can wait for it.
* A server whose queue is already full refuses at once, before parsing
  anything (cheap refusals under overload). Otherwise options are checked
  against the engine before any audio is read, and the audio's duration is
  found from its header before the call is admitted, so bad input costs no
  queue space.
* Admission (:mod:`~steno_inference.server.admission`) reserves the call's
  audio seconds or refuses it with a retry hint; long calls are paced.
* The engine runs the call on a pump thread (:mod:`~steno_inference.server.pump`);
  its ``is_cancelled`` turns True as soon as the call stops (client cancel,
  deadline, shutdown), so queued windows are dropped before they reach the
  decoder and busy ones free their slots.
* A stopped call ends with the status of its cause: DEADLINE_EXCEEDED,
  CANCELLED, or UNAVAILABLE when the drain's grace period ran out.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from steno_inference.audio import (
    PCM_BYTES_PER_SAMPLE,
    AudioError,
    AudioNotFoundError,
    AudioSource,
    RawPcm,
    ReadableBinary,
    probe_duration_s,
)
from steno_inference.engine import Engine, SourceResult, TranscriptionCancelled
from steno_inference.formats import render
from steno_inference.options import OptionsError, OutputFormat, TranscribeOptions
from steno_inference.progress import FileFailure, ProgressBoard, ProgressSnapshot
from steno_inference.server.admission import AdmissionController, Ticket
from steno_inference.server.calls import AudioInput, CallOptions, CallTiming, RawPcmSpec
from steno_inference.server.failures import (
    AudioTooLarge,
    CallCancelled,
    DeadlineExpired,
    Draining,
    ModelNotServed,
    NoShard,
    ShuttingDown,
    StorageUnavailable,
    UnsupportedUri,
)
from steno_inference.server.pump import EngineAbandoned, EngineRun, RunFinished, WindowDone
from steno_inference.server.readers import ChunkReader, PacedReader
from steno_inference.transcript import Segment, Transcript

SUPPORTED_URI_SCHEMES = ("s3://",)
PROGRESS_WAKE_S = 0.5  # a progress watcher re-checks its call this often
PROGRESS_HEARTBEAT_S = 15.0  # the current state is re-sent at least this often
PROGRESS_MIN_INTERVAL_S = 0.2  # at most five progress messages a second per watcher

UriOpener = Callable[[str], ReadableBinary]


class CallObserver(Protocol):
    """What the core reports for metrics (see :mod:`~steno_inference.server.metrics`)."""

    def window_done(self, audio_s: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def engine_abandoned(self) -> None: ...


class _NoObserver:
    def window_done(self, audio_s: float) -> None:
        pass

    def queue_wait(self, seconds: float) -> None:
        pass

    def engine_abandoned(self) -> None:
        pass


# ------------------------------------------------------------------ inputs


class CallControl:
    """A call as the core sees it: a deadline, and an event set when the call ended."""

    def __init__(self, stopped: threading.Event, deadline: float | None) -> None:
        self.stopped = stopped  # set by the transport: cancelled, deadline passed, or finished
        self.deadline = deadline  # time.monotonic() value, or None

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


# ----------------------------------------------------------------- results


@dataclass(frozen=True)
class UnaryResult:
    transcript: Transcript
    outputs: tuple[tuple[OutputFormat, str], ...]
    timing: CallTiming


@dataclass(frozen=True)
class WindowSegments:
    """One window of a stream."""

    window_index: int
    segments: tuple[Segment, ...]
    audio_s_done: float


@dataclass(frozen=True)
class StreamSummary:
    """The end of a stream."""

    transcript: Transcript
    segment_count: int
    outputs: tuple[tuple[OutputFormat, str], ...]
    timing: CallTiming


StreamEvent = WindowSegments | StreamSummary


@dataclass(frozen=True)
class ProgressUpdate:
    snapshot: ProgressSnapshot
    new_failures: tuple[FileFailure, ...]


class _Clock:
    """Admission time, first and last decoded window of one call."""

    def __init__(self) -> None:
        self.admitted = time.monotonic()
        self.first_done: float | None = None
        self.audio_s_done = 0.0

    def timing(self) -> CallTiming:
        now = time.monotonic()
        first = self.first_done if self.first_done is not None else now
        return CallTiming(round(first - self.admitted, 4), round(now - self.admitted, 4))


# -------------------------------------------------------------------- core


class TranscriptionCore:
    """Calls on one engine, shared by every method of one server."""

    def __init__(
        self,
        engine: Engine,
        admission: AdmissionController,
        *,
        max_audio_bytes: int,
        open_uri: UriOpener,
        progress: ProgressBoard | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.engine = engine
        self.admission = admission
        self.max_audio_bytes = max_audio_bytes
        self.progress = progress
        self._open_uri = open_uri
        self._observer: CallObserver = observer or _NoObserver()
        self._draining = threading.Event()
        self._aborting = threading.Event()
        self._cond = threading.Condition()
        self._in_flight = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @property
    def aborting(self) -> bool:
        return self._aborting.is_set()

    def begin_drain(self) -> None:
        """Refuse new calls from now on; running ones go on."""
        self._draining.set()

    def abort(self) -> None:
        """Stop every running call (the drain's grace period is over)."""
        self._draining.set()
        self._aborting.set()
        with self._cond:
            self._cond.notify_all()

    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call runs; False if some still do after ``timeout_s``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    @contextlib.contextmanager
    def _call(self, call: CallControl) -> Iterator[None]:
        with self._cond:
            if self._draining.is_set():
                raise Draining()
            self._in_flight += 1
        try:
            if call.deadline_passed():
                raise DeadlineExpired()
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    # ---------------------------------------------------------------- info

    def model_names(self) -> tuple[str, ...]:
        names = [self.engine.model_name]
        if self.engine.config.model not in names:
            names.append(self.engine.config.model)
        return tuple(names)

    # --------------------------------------------------------------- unary

    def transcribe(self, audio: AudioInput, request: CallOptions, call: CallControl) -> UnaryResult:
        """One source to one transcript; raises what :mod:`errors` maps to a status."""
        with self._call(call):
            self.admission.check_room()  # a full server refuses before reading anything
            options = self._check(request)
            source, duration_s, closer = self._open(audio)
            try:
                with self.admission.admit(duration_s) as ticket:
                    if ticket.paced:
                        source = self._paced(source, audio.name, ticket, call)
                    clock = _Clock()
                    result: SourceResult | None = None
                    for event in self._run(source, audio.name, options, ticket, clock, call,
                                           stream_segments=False):
                        if isinstance(event, RunFinished):
                            result = event.result
            finally:
                closer()
            _raise_storage_failure(source, audio.name)
            transcript = self._transcript(result, call)
            return UnaryResult(transcript, _render(transcript, request.formats), clock.timing())

    # ------------------------------------------------------------- streams

    def stream(
        self,
        chunks: Iterator[bytes],
        name: str,
        raw_pcm: RawPcmSpec | None,
        request: CallOptions,
        call: CallControl,
    ) -> Iterator[StreamEvent]:
        """Audio chunks in; each window's segments, then a summary, out."""
        with self._call(call):
            self.admission.check_room()
            options = self._check(request)
            if options.diarize:
                # The engine keeps a diarized source's whole audio: unbounded for a stream.
                raise OptionsError(
                    "diarization needs the whole recording: use Transcribe (bytes or an "
                    "s3:// URI) rather than StreamTranscribe"
                )
            reader = ChunkReader(chunks, name)
            with self.admission.admit(None) as ticket:
                paced = PacedReader(reader, name, ticket, self._stopper(call))
                source: AudioSource = paced if raw_pcm is None else _raw(paced, raw_pcm)
                clock = _Clock()
                result: SourceResult | None = None
                count = 0
                for event in self._run(source, name, options, ticket, clock, call,
                                       stream_segments=True):
                    if isinstance(event, WindowDone):
                        count += len(event.segments)
                        yield WindowSegments(event.index, event.segments, clock.audio_s_done)
                    else:
                        result = event.result
            if reader.error is not None:
                raise reader.error
            transcript = self._transcript(result, call)
            outputs = _render(transcript, request.formats)
            yield StreamSummary(transcript, count, outputs, clock.timing())

    # ------------------------------------------------------------ progress

    def watch_progress(self, call: CallControl) -> Iterator[ProgressUpdate]:
        """The shard's state now, then each change (throttled), heartbeats, until finished."""
        board = self.progress
        if board is None:
            raise NoShard()
        sent_failures = 0
        snapshot = board.snapshot()
        last_sent = time.monotonic()
        while True:
            new = snapshot.failures[sent_failures:]
            sent_failures = len(snapshot.failures)
            yield ProgressUpdate(snapshot, new)
            last_sent = time.monotonic()
            if snapshot.finished:
                return
            if call.stopped.wait(PROGRESS_MIN_INTERVAL_S):
                return
            version = snapshot.version
            while True:
                if self._aborting.is_set():
                    raise ShuttingDown()
                if call.stopped.is_set():
                    return
                snapshot = board.wait_for_change(version, PROGRESS_WAKE_S)
                if snapshot.version != version or snapshot.finished:
                    break
                if time.monotonic() - last_sent >= PROGRESS_HEARTBEAT_S:
                    break

    # ------------------------------------------------------------- helpers

    def _check(self, request: CallOptions) -> TranscribeOptions:
        if request.model and request.model not in self.model_names():
            raise ModelNotServed(
                f"model {request.model!r} is not served here; this server serves "
                f"{self.engine.model_name!r}"
            )
        return self.engine.check_options(request.options)

    def _open(self, audio: AudioInput) -> tuple[AudioSource, float | None, Callable[[], None]]:
        """The engine's source, its duration when known, and how to close it."""
        if audio.uri is not None:
            readable = self._open_object(audio.uri, audio.name)
            source: AudioSource = readable if audio.raw_pcm is None else _raw(
                readable, audio.raw_pcm
            )
            return source, None, _closer(readable)
        data = audio.data or b""
        if len(data) > self.max_audio_bytes:
            raise AudioTooLarge(len(data), self.max_audio_bytes)
        if audio.raw_pcm is not None:
            raw = _raw(data, audio.raw_pcm)
            return raw, _raw_duration_s(len(data), audio.raw_pcm), _nothing
        # The header says how long the audio is; empty or non-audio bytes fail here,
        # before they take any room in the queue.
        return data, probe_duration_s(data, name=audio.name), _nothing

    def _open_object(self, uri: str, name: str) -> ReadableBinary:
        if not uri.startswith(SUPPORTED_URI_SCHEMES):
            raise UnsupportedUri(
                f"{name}: unsupported URI; use one of: {', '.join(SUPPORTED_URI_SCHEMES)}"
            )
        try:
            return self._open_uri(uri)
        except FileNotFoundError:
            raise AudioNotFoundError(name, "object not found") from None
        except ValueError as error:
            raise UnsupportedUri(f"{name}: {error}") from None
        except Exception as error:
            if getattr(error, "retryable", False):  # the storage package's transient failures
                raise StorageUnavailable(name) from error
            raise

    def _paced(
        self, source: AudioSource, name: str, ticket: Ticket, call: CallControl
    ) -> AudioSource:
        stopped = self._stopper(call)
        if isinstance(source, RawPcm):
            data = source.data
            readable = _as_readable(data)
            paced = PacedReader(readable, name, ticket, stopped)
            return RawPcm(paced, source.sample_rate, source.channels, source.sample_format)
        return PacedReader(_as_readable(source), name, ticket, stopped)

    def _stopper(self, call: CallControl) -> Callable[[], bool]:
        def stopped() -> bool:
            return call.stopped.is_set() or call.deadline_passed() or self._aborting.is_set()

        return stopped

    def _run(
        self,
        source: AudioSource,
        name: str,
        options: TranscribeOptions,
        ticket: Ticket,
        clock: _Clock,
        call: CallControl,
        *,
        stream_segments: bool,
    ) -> Iterator[WindowDone | RunFinished]:
        def on_progress(seconds: float) -> None:
            ticket.done(seconds)
            clock.audio_s_done += seconds
            if clock.first_done is None:
                clock.first_done = time.monotonic()
                self._observer.queue_wait(clock.first_done - clock.admitted)
            self._observer.window_done(seconds)

        run = EngineRun(
            self.engine, source, name, options,
            on_progress=on_progress,
            is_cancelled=self._stopper(call),
            stream_segments=stream_segments,
            on_abandoned=self._observer.engine_abandoned,
        )
        try:
            yield from run.events(call.stopped)
        except EngineAbandoned:
            raise self._stop_reason(call) from None

    def _transcript(self, result: SourceResult | None, call: CallControl) -> Transcript:
        if result is None:  # the engine yields one result per source; none means it stopped
            raise self._stop_reason(call)
        if result.failure is not None:
            if self._stopper(call)() or isinstance(result.failure, TranscriptionCancelled):
                raise self._stop_reason(call) from None
            raise result.failure
        if result.transcript is None:
            raise AudioError(result.name, "no result")
        return result.transcript

    def _stop_reason(self, call: CallControl) -> Exception:
        if self._aborting.is_set():
            return ShuttingDown()
        if call.deadline_passed():
            return DeadlineExpired()
        return CallCancelled()


# -------------------------------------------------------------- functions


def _raise_storage_failure(source: AudioSource, name: str) -> None:
    """A read of an s3:// object that failed in storage, not in the audio, is no INVALID_ARGUMENT.

    The storage package's reader keeps the failure in ``storage_error`` (the
    engine only sees "cannot decode"); transient ones become UNAVAILABLE.
    """
    reader: object = source.data if isinstance(source, RawPcm) else source
    while isinstance(reader, PacedReader):
        reader = reader.raw
    error = getattr(reader, "storage_error", None)
    if isinstance(error, Exception):
        if getattr(error, "retryable", False):
            raise StorageUnavailable(name) from error
        raise error


def _raw(data: bytes | ReadableBinary, spec: RawPcmSpec) -> RawPcm:
    return RawPcm(data, spec.sample_rate_hz, spec.channels, spec.sample_format)


def _raw_duration_s(n_bytes: int, spec: RawPcmSpec) -> float:
    frame = PCM_BYTES_PER_SAMPLE[spec.sample_format] * spec.channels
    return (n_bytes // frame) / spec.sample_rate_hz


def _as_readable(data: object) -> ReadableBinary:
    if isinstance(data, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(data))
    read = getattr(data, "read", None)
    if callable(read):
        return data  # type: ignore[return-value]
    raise TypeError(f"cannot pace a source of type {type(data).__name__}")


def _render(
    transcript: Transcript, formats: tuple[OutputFormat, ...]
) -> tuple[tuple[OutputFormat, str], ...]:
    return tuple((fmt, render(transcript, fmt)) for fmt in dict.fromkeys(formats))


def _closer(readable: object) -> Callable[[], None]:
    close = getattr(readable, "close", None)
    if callable(close):
        def closer() -> None:
            with contextlib.suppress(Exception):  # closing a finished download must not fail a call
                close()

        return closer
    return _nothing


def _nothing() -> None:
    return None
