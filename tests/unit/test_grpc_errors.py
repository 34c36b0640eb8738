"""The one failure → gRPC status table: every row, its message and its trailers."""

from __future__ import annotations

import logging

import grpc
import pytest
from steno_inference.audio import (
    AudioError,
    AudioNotFoundError,
    CorruptAudioError,
    EmptyAudioError,
    NotAudioError,
)
from steno_inference.engine import EngineError
from steno_inference.models.errors import ModelNotFoundError
from steno_inference.options import OptionsError
from steno_inference.server.errors import STATUS_TABLE, code_for, status_for
from steno_inference.server.failures import (
    AudioTooLarge,
    BadRequest,
    CallCancelled,
    DeadlineExpired,
    Draining,
    ModelNotServed,
    NoShard,
    Overloaded,
    ShuttingDown,
    StorageUnavailable,
    Unauthenticated,
    UnsupportedUri,
)

pytestmark = pytest.mark.unit
C = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (EmptyAudioError("<bytes>", "input is empty (0 bytes)"), C.INVALID_ARGUMENT,
         "<bytes>: input is empty (0 bytes)"),
        (NotAudioError("a.txt", "not a recognized audio or video format"), C.INVALID_ARGUMENT,
         "a.txt: not a recognized audio or video format"),
        (CorruptAudioError("b.mp3", "corrupt data at 3.00 s"), C.INVALID_ARGUMENT,
         "b.mp3: corrupt data at 3.00 s"),
        (AudioError("x", "raw sample rate must be 1..384000 Hz, not 0"), C.INVALID_ARGUMENT,
         "x: raw sample rate must be 1..384000 Hz, not 0"),
        (AudioNotFoundError("s3://b/k.wav", "object not found"), C.NOT_FOUND,
         "s3://b/k.wav: object not found"),
        (OptionsError("unknown language 'xx'"), C.INVALID_ARGUMENT, "unknown language 'xx'"),
        (BadRequest("no audio: set audio (bytes) or audio_uri"), C.INVALID_ARGUMENT,
         "no audio: set audio (bytes) or audio_uri"),
        (UnsupportedUri("ftp://x: unsupported URI"), C.INVALID_ARGUMENT,
         "ftp://x: unsupported URI"),
        (ModelNotServed("model 'base' is not served here"), C.NOT_FOUND,
         "model 'base' is not served here"),
        (ModelNotFoundError("no model named 'huge'"), C.NOT_FOUND, "no model named 'huge'"),
        (AudioTooLarge(30_000_000, 26_214_400), C.RESOURCE_EXHAUSTED,
         "audio is 30000000 bytes; the limit is 26214400 bytes (25 MiB): use StreamTranscribe "
         "or an s3:// URI"),
        (StorageUnavailable("s3://b/k"), C.UNAVAILABLE,
         "s3://b/k: object storage is unavailable; retry later"),
        (Draining(), C.UNAVAILABLE, "server is draining (shutting down): retry on another replica"),
        (ShuttingDown(), C.UNAVAILABLE,
         "server shut down before the call finished: retry on another replica"),
        (DeadlineExpired(), C.DEADLINE_EXCEEDED, "deadline exceeded before the transcription finished"),
        (CallCancelled(), C.CANCELLED, "call cancelled by the client"),
        (NoShard(), C.FAILED_PRECONDITION,
         "this server is a serving pool, not a job pod: it has no progress"),
        (Unauthenticated("invalid bearer token"), C.UNAUTHENTICATED, "invalid bearer token"),
        (PermissionError("AccessDenied: arn:aws:s3:::internal"), C.PERMISSION_DENIED,
         "permission denied reading the audio"),
    ],
)
def test_each_failure_maps_to_its_code_and_one_line(error, code, message):
    status = status_for(error)
    assert (status.code, status.message, status.trailers) == (code, message, ())


def test_overloaded_carries_the_retry_hint_in_both_trailers():
    status = status_for(Overloaded(queued_s=590.0, wanted_s=30.0, limit_s=600.0,
                                   retry_after_s=2.0004))
    assert status.code == C.RESOURCE_EXHAUSTED
    assert status.message == (
        "server busy: 590 s of audio queued, this call needs 30 s, the limit is 600 s; "
        "retry in 2.0 s")
    assert dict(status.trailers) == {"retry-after-ms": "2001", "grpc-retry-pushback-ms": "2001"}


@pytest.mark.parametrize(
    "error",
    [RuntimeError("CUDA error at /opt/secret/kernel.cu:12"), KeyError("secret-key"),
     EngineError("talk.wav", "device-side assert in /secret")],
)
def test_anything_else_is_internal_with_a_reference_and_no_detail(error, caplog):
    with caplog.at_level(logging.ERROR):
        status = status_for(error)
    assert status.code == C.INTERNAL
    assert status.message.startswith("internal error (ref ") and "secret" not in status.message
    reference = status.message.removeprefix("internal error (ref ").rstrip(")")
    assert reference in caplog.text and "secret" in caplog.text  # the log has the detail


def test_subclass_rows_come_before_their_bases():
    """A row must not be shadowed by an earlier row for one of its bases."""
    for index, (kind, _code) in enumerate(STATUS_TABLE):
        for earlier, _ in STATUS_TABLE[:index]:
            assert not issubclass(kind, earlier), (kind, earlier)
    assert code_for(AudioNotFoundError("a", "b")) == C.NOT_FOUND


def test_messages_are_single_lines():
    assert status_for(BadRequest("two\nlines\tand  spaces")).message == "two lines and spaces"
