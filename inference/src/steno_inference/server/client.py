"""The Python client of steno's gRPC server: ``StenoClient``.

    with StenoClient("127.0.0.1:50051") as client:
        result = client.transcribe("talk.wav", formats=("srt",))
        print(result.transcript.text, result.outputs["srt"])
        for event in client.stream("lecture.flac"):
            ...  # StreamWindow per decoded window, then one StreamEnd

Results come back as steno's own dataclasses (``Transcript``, ``Segment``,
``ProgressSnapshot``), not protobuf messages. Failures raise ``grpc.RpcError``
with the server's status code and one-line message; :func:`retry_after_s`
reads the hint a RESOURCE_EXHAUSTED from a full queue carries.

Security: ``tls=True`` verifies the server against ``ca_cert`` (or the
system's roots); ``client_cert``/``client_key`` add mutual TLS; ``token``
sends ``authorization: Bearer <token>`` with every call (never printed by
this class's ``repr``). Nothing here loads the engine, torch or PyAV.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc

from steno_inference.options import OutputFormat, TranscribeOptions
from steno_inference.progress import FileFailure, ProgressSnapshot
from steno_inference.server import messages
from steno_inference.server.auth import AUTHORIZATION_KEY
from steno_inference.server.calls import CallOptions, CallTiming, RawPcmSpec
from steno_inference.server.failures import RETRY_AFTER_KEY
from steno_inference.server.tls import channel_credentials
from steno_inference.transcript import Segment, Transcript

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_CHUNK_BYTES = 64 * 1024  # audio per StreamTranscribe message
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's largest response
MS_PER_S = 1000

AudioArgument = bytes | bytearray | memoryview | str | os.PathLike[str]
StreamArgument = str | os.PathLike[str] | BinaryIO | Iterable[bytes]


@dataclass(frozen=True)
class TranscribeResult:
    """What ``transcribe`` returns."""

    transcript: Transcript
    outputs: dict[OutputFormat, str]  # each requested format, rendered
    timing: CallTiming


@dataclass(frozen=True)
class StreamWindow:
    """The segments of one decoded window of a stream."""

    window_index: int
    segments: tuple[Segment, ...]
    audio_s_done: float


@dataclass(frozen=True)
class StreamEnd:
    """The summary that ends a stream."""

    language: str
    duration_s: float
    segment_count: int
    model: str
    outputs: dict[OutputFormat, str]
    timing: CallTiming


def retry_after_s(error: grpc.RpcError) -> float | None:
    """The server's retry hint of a RESOURCE_EXHAUSTED from a full queue, in seconds."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == RETRY_AFTER_KEY:
            try:
                return int(value) / MS_PER_S
            except ValueError:
                return None
    return None


class StenoClient:
    """A connection to one steno server; thread-safe, reuse it for many calls."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: bool = False,
        ca_cert: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        server_name: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``server_name`` overrides the name checked in the server's certificate."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if tls or ca_cert is not None or client_cert is not None:
            credentials = channel_credentials(ca_cert, client_cert, client_key)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self.target = target
        self.timeout_s = timeout_s
        self._metadata: tuple[tuple[str, str], ...] = (
            ((AUTHORIZATION_KEY, f"Bearer {token}"),) if token else ()
        )
        self._stub = pb_grpc.TranscriptionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __repr__(self) -> str:
        return f"StenoClient({self.target!r}, token={'set' if self._metadata else 'none'})"

    # ------------------------------------------------------------- calls

    def transcribe(
        self,
        audio: AudioArgument,
        *,
        options: TranscribeOptions | None = None,
        model: str = "",
        formats: Iterable[OutputFormat] = (),
        raw_pcm: RawPcmSpec | None = None,
        name: str = "",
        timeout_s: float | None = None,
    ) -> TranscribeResult:
        """Transcribe bytes, a local file (sent as bytes) or an ``s3://`` URI the server reads."""
        call = CallOptions(options or TranscribeOptions(), model, tuple(formats))
        request = pb.TranscribeRequest(
            options=messages.options_message(call), source_name=name
        )
        if isinstance(audio, str) and audio.startswith("s3://"):
            request.audio_uri = audio
        elif isinstance(audio, bytes | bytearray | memoryview):
            request.audio = bytes(audio)
        else:
            path = Path(audio)
            request.audio = path.read_bytes()
            request.source_name = name or path.name
        if raw_pcm is not None:
            request.raw_pcm.CopyFrom(messages.raw_pcm_message(raw_pcm))
        response = self._stub.Transcribe(
            request, timeout=self._timeout(timeout_s), metadata=self._metadata
        )
        return TranscribeResult(
            messages.transcript_from(response.transcript),
            messages.outputs_from(response.outputs),
            messages.timing_from(response.timing),
        )

    def stream(
        self,
        audio: StreamArgument,
        *,
        options: TranscribeOptions | None = None,
        model: str = "",
        formats: Iterable[OutputFormat] = (),
        raw_pcm: RawPcmSpec | None = None,
        name: str = "",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout_s: float | None = None,
    ) -> Iterator[StreamWindow | StreamEnd]:
        """Stream a file, a binary file object or an iterable of chunks; windows as decoded."""
        call = CallOptions(options or TranscribeOptions(), model, tuple(formats))
        config = pb.StreamConfig(options=messages.options_message(call), source_name=name)
        if raw_pcm is not None:
            config.raw_pcm.CopyFrom(messages.raw_pcm_message(raw_pcm))
        if isinstance(audio, str | os.PathLike) and not config.source_name:
            config.source_name = Path(audio).name
        requests = _stream_requests(config, audio, chunk_bytes)
        responses = self._stub.StreamTranscribe(
            requests, timeout=self._timeout(timeout_s), metadata=self._metadata
        )
        try:
            for response in responses:
                if response.WhichOneof("event") == "segments":
                    part = response.segments
                    yield StreamWindow(
                        part.window_index,
                        tuple(messages.segment_from(s) for s in part.segments),
                        part.audio_s_done,
                    )
                else:
                    summary = response.summary
                    yield StreamEnd(
                        summary.language, summary.duration_s, summary.segment_count,
                        summary.model, messages.outputs_from(summary.outputs),
                        messages.timing_from(summary.timing),
                    )
        finally:
            responses.cancel()  # a caller that stops iterating early ends the call

    def watch_progress(self, timeout_s: float | None = None) -> Iterator[ProgressSnapshot]:
        """Snapshots of a job pod's progress until its shard is finished."""
        failures: tuple[FileFailure, ...] = ()
        responses = self._stub.WatchProgress(
            pb.WatchProgressRequest(), timeout=self._timeout(timeout_s), metadata=self._metadata
        )
        try:
            for response in responses:
                snapshot = messages.progress_from(response, failures)
                failures = snapshot.failures
                yield snapshot
        finally:
            responses.cancel()

    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """``SERVING``, ``NOT_SERVING`` (or ``SERVICE_UNKNOWN``) for the server or a service."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service),
            timeout=self._timeout(timeout_s),
            metadata=self._metadata,
        )
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    def server_info(self, timeout_s: float | None = None) -> pb.GetServerInfoResponse:
        response: pb.GetServerInfoResponse = self._stub.GetServerInfo(
            pb.GetServerInfoRequest(), timeout=self._timeout(timeout_s), metadata=self._metadata
        )
        return response

    # ----------------------------------------------------------- plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> StenoClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return timeout_s if timeout_s is not None else self.timeout_s


def _stream_requests(
    config: pb.StreamConfig, audio: StreamArgument, chunk_bytes: int
) -> Iterator[pb.StreamTranscribeRequest]:
    if chunk_bytes < 1:
        raise ValueError(f"chunk size must be positive, not {chunk_bytes}")
    yield pb.StreamTranscribeRequest(config=config)
    for chunk in _chunks(audio, chunk_bytes):
        if chunk:
            yield pb.StreamTranscribeRequest(audio=chunk)


def _chunks(audio: StreamArgument, chunk_bytes: int) -> Iterator[bytes]:
    if isinstance(audio, str | os.PathLike):
        with open(audio, "rb") as handle:
            yield from _read_chunks(handle, chunk_bytes)
    elif hasattr(audio, "read"):
        yield from _read_chunks(audio, chunk_bytes)  # type: ignore[arg-type]
    else:
        for chunk in audio:
            yield bytes(chunk)


def _read_chunks(handle: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    while chunk := handle.read(chunk_bytes):
        yield chunk
