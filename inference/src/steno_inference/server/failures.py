"""The server's own failures: one exception per reason a call can be refused or stopped.

Each message is the one line the caller sees (see :mod:`~steno_inference.server.errors`
for the status code of each). Nothing here imports grpc or the engine, so the
core, the protobuf conversions and the client can all raise or catch them.
"""

from __future__ import annotations

# Trailing metadata of a RESOURCE_EXHAUSTED from a full queue. The first is
# steno's documented hint; the second is the key gRPC's own retry policies
# honour (gRFC A6), so a channel configured to retry waits as long as asked.
RETRY_AFTER_KEY = "retry-after-ms"
GRPC_RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

class CallRejected(Exception):
    """A failure of the server's own making; ``str()`` is the one line the caller sees."""


class BadRequest(CallRejected):
    """The request itself is malformed: a missing or contradictory field."""


class UnsupportedUri(CallRejected):
    """A URI of a scheme this server cannot read, or no storage support installed."""


class ModelNotServed(CallRejected):
    """The request names a model this server does not serve."""


class AudioTooLarge(CallRejected):
    """Audio bytes over the stated per-request limit."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"audio is {size_bytes} bytes; the limit is {limit_bytes} bytes "
            f"({limit_bytes / (1024 * 1024):g} MiB): use StreamTranscribe or an s3:// URI"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class Overloaded(CallRejected):
    """The queue has no room for this call's audio now; ``retry_after_s`` says when."""

    def __init__(
        self, queued_s: float, wanted_s: float | None, limit_s: float, retry_after_s: float
    ) -> None:
        needs = "" if wanted_s is None else f", this call needs {wanted_s:.0f} s"
        super().__init__(
            f"server busy: {queued_s:.0f} s of audio queued{needs}, the limit is "
            f"{limit_s:.0f} s; retry in {retry_after_s:.1f} s"
        )
        self.retry_after_s = retry_after_s


class StorageUnavailable(CallRejected):
    """Object storage did not answer (after its own retries): try again later."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: object storage is unavailable; retry later")


class Draining(CallRejected):
    """The server is shutting down and takes no new calls."""

    def __init__(self) -> None:
        super().__init__("server is draining (shutting down): retry on another replica")


class ShuttingDown(CallRejected):
    """The call was still running when the drain's grace period ended."""

    def __init__(self) -> None:
        super().__init__("server shut down before the call finished: retry on another replica")


class DeadlineExpired(CallRejected):
    """The caller's deadline passed before the call was done."""

    def __init__(self) -> None:
        super().__init__("deadline exceeded before the transcription finished")


class CallCancelled(CallRejected):
    """The caller cancelled the call."""

    def __init__(self) -> None:
        super().__init__("call cancelled by the client")


class NoShard(CallRejected):
    """Progress was asked of a server that works on no shard (a serving pool)."""

    def __init__(self) -> None:
        super().__init__("this server is a serving pool, not a job pod: it has no progress")


class Unauthenticated(CallRejected):
    """No bearer token, or not one of the server's."""
