"""File-like readers the engine decodes from: a client's stream of chunks, paced by admission.

The engine's producer thread pulls audio through ``read(size)``, so these
readers decide how fast audio enters the engine and how much of it is held:

* :class:`ChunkReader` turns an iterator of byte chunks (the messages of a
  gRPC request stream) into a file object. It holds at most one chunk, and
  pulls the next only when the engine asks, so a client streaming for hours
  is held back by HTTP/2 flow control, not buffered in the server.
* :class:`PacedReader` admits each read only while the decoder's queue has
  room (:meth:`~steno_inference.server.admission.Ticket.wait_for_room`).

Both end a stopped call by raising :class:`CallStopped`, an ``AudioError``, so
the engine reports it as the source's failure on its usual path (and the core
then says why the call stopped). A protocol error in the stream (a second
config message) is kept in ``ChunkReader.error`` for the core to report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

from steno_inference.audio import AudioError, ReadableBinary
from steno_inference.server.admission import Ticket
from steno_inference.server.failures import BadRequest


class CallStopped(AudioError):
    """The call ended (cancelled, deadline, shutdown) while the engine was reading."""

    reason: ClassVar[str] = "stopped"


class ChunkReader:
    """A non-seekable binary file over an iterator of chunks."""

    def __init__(self, chunks: Iterator[bytes], name: str) -> None:
        self._chunks = chunks
        self.name = name  # the engine names the source after it
        self._pending = b""
        self._offset = 0
        self._ended = False
        self.bytes_read = 0
        self.error: BadRequest | None = None  # a protocol error found in the stream

    def read(self, size: int = -1, /) -> bytes:
        while self._offset >= len(self._pending):
            if self._ended:
                return b""
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._ended = True
                return b""
            except BadRequest as error:
                self.error = error
                self._ended = True
                raise CallStopped(self.name, str(error)) from None
            except Exception:  # the transport gave up: the client went away
                self._ended = True
                raise CallStopped(self.name, "the client stopped sending") from None
            self._pending, self._offset = chunk, 0  # empty chunks are skipped
        end = len(self._pending) if size < 0 else min(len(self._pending), self._offset + size)
        data = self._pending[self._offset : end]
        self._offset = end
        if self._offset >= len(self._pending):
            self._pending, self._offset = b"", 0  # drop the chunk as soon as it is consumed
        self.bytes_read += len(data)
        return data


class PacedReader:
    """Reads from ``raw`` only while the decoder's queue has room (long calls)."""

    def __init__(
        self, raw: ReadableBinary, name: str, ticket: Ticket, stopped: Callable[[], bool]
    ) -> None:
        self.raw = raw
        self.name = name
        self._ticket = ticket
        self._stopped = stopped

    def read(self, size: int = -1, /) -> bytes:
        if not self._ticket.wait_for_room(self._stopped):
            raise CallStopped(self.name, "the call stopped")
        return self.raw.read(size)
