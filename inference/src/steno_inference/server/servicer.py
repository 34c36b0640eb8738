"""The gRPC servicer of ``steno_api.v1.TranscriptionService``: messages in and out, nothing more.

Each method converts its request with :mod:`~steno_inference.server.messages`,
calls the transport-free :class:`~steno_inference.server.core.TranscriptionCore`
and converts the result back. :class:`_CallScope` does the rest the same way
for every method: it turns the call's cancellation and deadline into a
:class:`~steno_inference.server.core.CallControl`, maps any failure through
the one table in :mod:`~steno_inference.server.errors` (code, message and
trailing metadata), and counts the outcome in the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import grpc
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc

from steno_inference.server import messages
from steno_inference.server.core import (
    CallControl,
    StreamSummary,
    TranscriptionCore,
    WindowSegments,
)
from steno_inference.server.errors import status_for
from steno_inference.server.failures import CallCancelled, DeadlineExpired
from steno_inference.server.metrics import ServerMetrics

NO_DEADLINE_S = 1e8  # grpc reports "no deadline" as a huge time remaining


class _CallScope:
    """One call's control, status mapping and metrics; use as ``with``."""

    def __init__(
        self, context: grpc.ServicerContext, method: str, metrics: ServerMetrics | None
    ) -> None:
        self._context = context
        self._method = method
        self._metrics = metrics
        self._started = time.monotonic()
        stopped = threading.Event()
        # Runs when the call ends for any reason: the client cancelled, the deadline
        # passed, or the handler returned. The core watches it to drop queued work.
        if not context.add_callback(stopped.set):
            stopped.set()
        remaining = context.time_remaining()
        deadline = None
        if remaining is not None and remaining < NO_DEADLINE_S:
            deadline = time.monotonic() + remaining
        self.control = CallControl(stopped, deadline)

    def __enter__(self) -> _CallScope:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed = time.monotonic() - self._started
        if error is None:
            self._record("OK", elapsed)
            return
        if isinstance(error, GeneratorExit):  # the transport closed a streaming response
            self._record("CANCELLED", elapsed)
            return
        if isinstance(error, grpc.RpcError):  # reading the request stream of an ended call
            error = DeadlineExpired() if self.control.deadline_passed() else CallCancelled()
        status = status_for(error)
        self._record(status.code.name, elapsed)
        if status.trailers:
            self._context.set_trailing_metadata(status.trailers)
        self._context.abort(status.code, status.message)

    def _record(self, code: str, elapsed: float) -> None:
        if self._metrics is not None:
            self._metrics.call_finished(self._method, code, elapsed)


class TranscriptionServicer(pb_grpc.TranscriptionServiceServicer):  # type: ignore[misc]
    """Thin adapter from ``steno_api.v1`` to the core."""

    def __init__(
        self,
        core: TranscriptionCore,
        info: pb.GetServerInfoResponse,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._core = core
        self._info = info
        self._metrics = metrics

    def Transcribe(
        self, request: pb.TranscribeRequest, context: grpc.ServicerContext
    ) -> pb.TranscribeResponse:
        with _CallScope(context, "Transcribe", self._metrics) as scope:
            result = self._core.transcribe(
                messages.audio_input(request),
                messages.call_options(request.options),
                scope.control,
            )
            return pb.TranscribeResponse(
                transcript=messages.transcript_message(result.transcript),
                outputs=messages.outputs_message(result.outputs),
                timing=messages.timing_message(result.timing),
            )

    def StreamTranscribe(
        self, request_iterator: Iterator[pb.StreamTranscribeRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StreamTranscribeResponse]:
        with _CallScope(context, "StreamTranscribe", self._metrics) as scope:
            first = next(request_iterator, None)
            if first is None:
                first = pb.StreamTranscribeRequest()  # no message at all: reported as no config
            config, name = messages.stream_config(first)
            raw = messages.raw_pcm_spec(config.raw_pcm) if config.HasField("raw_pcm") else None
            events = self._core.stream(
                messages.stream_audio(request_iterator),
                name,
                raw,
                messages.call_options(config.options),
                scope.control,
            )
            for event in events:
                yield _stream_response(event)

    def WatchProgress(
        self, request: pb.WatchProgressRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchProgressResponse]:
        with _CallScope(context, "WatchProgress", self._metrics) as scope:
            for update in self._core.watch_progress(scope.control):
                yield messages.progress_message(update.snapshot, update.new_failures)

    def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetServerInfoResponse:
        with _CallScope(context, "GetServerInfo", self._metrics):
            return self._info


def _stream_response(event: WindowSegments | StreamSummary) -> pb.StreamTranscribeResponse:
    if isinstance(event, WindowSegments):
        return pb.StreamTranscribeResponse(
            segments=pb.StreamSegments(
                window_index=event.window_index,
                segments=[messages.segment_message(s) for s in event.segments],
                audio_s_done=event.audio_s_done,
            )
        )
    transcript = event.transcript
    return pb.StreamTranscribeResponse(
        summary=pb.StreamSummary(
            language=transcript.language,
            duration_s=transcript.duration_s,
            segment_count=event.segment_count,
            model=transcript.model,
            outputs=messages.outputs_message(event.outputs),
            timing=messages.timing_message(event.timing),
        )
    )


def add_to_server(servicer: TranscriptionServicer, server: Any) -> None:
    pb_grpc.add_TranscriptionServiceServicer_to_server(servicer, server)
