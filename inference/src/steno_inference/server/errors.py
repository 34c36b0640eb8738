"""The one table from a failure to a gRPC status: code, one-line message, trailing metadata.

Every method of the server ends in :func:`status_for` when something goes
wrong, so a given failure gets the same code and the same kind of message
whatever the method (DESIGN.md: bad input → INVALID_ARGUMENT, missing object
→ NOT_FOUND, full queue → RESOURCE_EXHAUSTED, draining → UNAVAILABLE).

The rows are tried in order and the first ``isinstance`` match wins, so a
subclass row (``AudioNotFoundError``) comes before its base (``AudioError``).

Messages are for the caller: the engine's and the server's own exceptions
carry one line meant to be shown (the source's name and the problem).
Anything not in the table is a bug or a device failure: the caller gets
INTERNAL with a short reference, and the traceback goes to the log under the
same reference, so nothing internal (paths, tensors, library messages) leaks.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

import grpc

from steno_inference.audio import AudioError, AudioNotFoundError
from steno_inference.engine import EngineError
from steno_inference.models.errors import ModelError
from steno_inference.options import OptionsError
from steno_inference.server.failures import (
    GRPC_RETRY_PUSHBACK_KEY,
    RETRY_AFTER_KEY,
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

LOG = logging.getLogger(__name__)

MS_PER_S = 1000


# -------------------------------------------------------------------- table


@dataclass(frozen=True)
class Status:
    """What the caller receives."""

    code: grpc.StatusCode
    message: str
    trailers: tuple[tuple[str, str], ...] = ()


_C = grpc.StatusCode

STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (AudioNotFoundError, _C.NOT_FOUND),  # an s3:// object (or path) that does not exist
    (AudioError, _C.INVALID_ARGUMENT),  # empty, not audio, corrupt, bad raw PCM format
    (OptionsError, _C.INVALID_ARGUMENT),  # task, language, timestamps, speakers, formats
    (BadRequest, _C.INVALID_ARGUMENT),
    (UnsupportedUri, _C.INVALID_ARGUMENT),
    (ModelNotServed, _C.NOT_FOUND),  # like an unknown resource name
    (ModelError, _C.NOT_FOUND),
    (AudioTooLarge, _C.RESOURCE_EXHAUSTED),  # as gRPC itself reports an oversize message
    (Overloaded, _C.RESOURCE_EXHAUSTED),  # with the retry hint in trailing metadata
    (StorageUnavailable, _C.UNAVAILABLE),  # the store stayed down through its retries
    (Draining, _C.UNAVAILABLE),
    (ShuttingDown, _C.UNAVAILABLE),
    (DeadlineExpired, _C.DEADLINE_EXCEEDED),
    (CallCancelled, _C.CANCELLED),
    (NoShard, _C.FAILED_PRECONDITION),
    (Unauthenticated, _C.UNAUTHENTICATED),
    (PermissionError, _C.PERMISSION_DENIED),  # storage refused to read an object
)


def code_for(error: BaseException) -> grpc.StatusCode:
    """The status code of ``error`` by the table; INTERNAL when no row matches."""
    for kind, code in STATUS_TABLE:
        if isinstance(error, kind):
            return code
    return _C.INTERNAL


def status_for(error: BaseException) -> Status:
    """Code, message and trailing metadata for ``error`` (logs the ones it hides)."""
    code = code_for(error)
    if code is _C.INTERNAL:
        reference = uuid.uuid4().hex[:12]
        if isinstance(error, EngineError):
            LOG.error("engine failure [ref %s]: %s", reference, error)
        else:
            LOG.error("internal error [ref %s]", reference, exc_info=error)
        return Status(code, f"internal error (ref {reference})")
    if isinstance(error, PermissionError):
        # An OSError's text can name internal paths or endpoints: say only what happened.
        return Status(code, "permission denied reading the audio")
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(error, Overloaded):
        retry_ms = str(max(1, math.ceil(error.retry_after_s * MS_PER_S)))
        trailers = ((RETRY_AFTER_KEY, retry_ms), (GRPC_RETRY_PUSHBACK_KEY, retry_ms))
    return Status(code, _one_line(str(error)), trailers)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "request failed"
