"""A streamed, seekable, read-only file object over one version of one S3 object.

The engine decodes audio from any object with ``read``/``seek``/``tell``
(:mod:`steno_inference.audio`); :class:`ObjectReader` is that object for S3:

* **Streamed.** Bytes come from one ranged ``GET`` (``Range: bytes=POS-``)
  read as the decoder asks, so memory stays at a socket buffer whatever the
  object's size. A seek drops the stream (or, for a short hop forward,
  reads through it) and the next read opens a new range at the new place:
  containers with their index at the end (MP4's ``moov``) work.
* **One version.** Every ``GET`` carries ``If-Match: <etag from the plan>``,
  so an object replaced after the job was planned fails with
  :class:`~steno_inference.storage.errors.PreconditionFailedError` instead
  of mixing two versions' bytes in one transcript.
* **Prefetched head.** :meth:`ObjectReader.prefetch_head` fetches the first
  bytes (whole small files) on a worker thread ahead of time, so the decoder
  finds them in memory; the rest streams when it gets there.
* **Failures stay visible.** The decoder turns a read error into "cannot
  decode"; the reader keeps the original in :attr:`ObjectReader.storage_error`
  so the job worker can tell a broken file from a broken network.
  A connection dropped mid-stream is resumed at the same offset up to
  :data:`STREAM_RESUME_ATTEMPTS` times before that counts as an error.
"""

from __future__ import annotations

import io
import logging
import threading
from concurrent.futures import Executor, Future
from typing import Any, NoReturn

from steno_inference.storage.errors import StorageError, StorageUnavailableError, translate
from steno_inference.storage.uri import S3Uri

LOG = logging.getLogger(__name__)

STREAM_RESUME_ATTEMPTS = 3  # reopen a dropped stream at its offset this often in a row
SKIP_FORWARD_BYTES = 256 * 1024  # a forward seek this short reads through the open stream


class ObjectReader:
    """``read``/``seek``/``tell`` over ``uri`` as of ``etag``; thread-confined to one reader."""

    def __init__(self, client: Any, uri: S3Uri, size: int, etag: str) -> None:
        self._client = client
        self.uri = uri
        self.name = str(uri)  # how the audio decoder names the source in its messages
        self.size = size
        self.etag = etag
        self.storage_error: StorageError | None = None
        self._pos = 0
        self._body: Any = None
        self._body_pos = 0
        self._head: bytes | None = None
        self._head_future: Future[bytes] | None = None
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread than read()

    # ------------------------------------------------------------- prefetch

    def prefetch_head(self, executor: Executor, head_bytes: int) -> None:
        """Start fetching the first ``head_bytes`` (or the whole object) on ``executor``."""
        if self._head_future is not None or self._closed or self.size == 0:
            return
        length = min(head_bytes, self.size)
        self._head_future = executor.submit(self._fetch_range, 0, length)

    def _fetch_range(self, start: int, length: int) -> bytes:
        response = self._get(f"bytes={start}-{start + length - 1}")
        try:
            data: bytes = response["Body"].read()
        except Exception as error:
            raise translate(error, self.name, "reading the object") from error
        finally:
            response["Body"].close()
        if len(data) != length:
            raise StorageUnavailableError(
                self.name, f"asked for {length} bytes at {start}, got {len(data)}"
            )
        return data

    def _take_head(self) -> bytes | None:
        future = self._head_future
        if self._head is None and future is not None:
            try:
                self._head = future.result()
            except StorageError as error:
                self._fail(error)
            except Exception as error:
                self._fail(translate(error, self.name, "prefetching the object"))
        return self._head

    # ------------------------------------------------------------ file API

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def read(self, size: int = -1) -> bytes:
        if self._closed:
            raise ValueError(f"{self.name}: read of a closed object reader")
        if self.storage_error is not None:
            raise self.storage_error
        if self._pos >= self.size:
            return b""
        left = self.size - self._pos
        want = left if size is None or size < 0 else min(size, left)
        if want == 0:
            return b""
        head = self._take_head()
        if head is not None and self._pos < len(head):
            data = head[self._pos : self._pos + want]
            self._pos += len(data)
            return data
        return self._read_stream(want)

    def release_buffers(self) -> None:
        """Free the prefetched head and the open stream; a later read streams again."""
        with self._lock:
            future, self._head_future = self._head_future, None
            self._head = None
            self._drop_body()
        if future is not None:
            future.cancel()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._head = None
            self._drop_body()
            if self._head_future is not None:
                self._head_future.cancel()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- stream

    def _read_stream(self, want: int) -> bytes:
        attempts = 0
        while True:
            try:
                self._position_body()
                data: bytes = self._body.read(want)
            except StorageError as error:
                self._fail(error)
            except Exception as error:  # a dropped connection mid-stream: resume where it was
                attempts += 1
                self._drop_body()
                if attempts > STREAM_RESUME_ATTEMPTS:
                    self._fail(translate(error, self.name, "streaming the object"))
                LOG.info("%s: stream broke at %d (%s); resuming", self.name, self._pos, error)
                continue
            if not data:  # the server ended the range before the object's end
                attempts += 1
                self._drop_body()
                if attempts > STREAM_RESUME_ATTEMPTS:
                    self._fail(StorageUnavailableError(
                        self.name, f"stream ended at byte {self._pos} of {self.size}"
                    ))
                continue
            self._pos += len(data)
            self._body_pos += len(data)
            return data

    def _position_body(self) -> None:
        """Make the open stream (if any) stand at ``_pos``, or open one there."""
        if self._body is not None:
            gap = self._pos - self._body_pos
            if gap == 0:
                return
            if 0 < gap <= SKIP_FORWARD_BYTES:
                while gap > 0:
                    chunk = self._body.read(gap)
                    if not chunk:
                        break
                    gap -= len(chunk)
                    self._body_pos += len(chunk)
                if gap == 0:
                    return
            self._drop_body()
        response = self._get(f"bytes={self._pos}-")
        self._body = response["Body"]
        self._body_pos = self._pos

    def _get(self, byte_range: str) -> Any:
        kwargs: dict[str, Any] = {
            "Bucket": self.uri.bucket, "Key": self.uri.key, "Range": byte_range,
        }
        if self.etag:
            kwargs["IfMatch"] = self.etag
        try:
            return self._client.get_object(**kwargs)
        except Exception as error:
            raise translate(error, self.name, "GET") from error

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # closing a broken connection may itself fail; nothing to keep
                LOG.debug("%s: closing the stream failed", self.name, exc_info=True)

    def _fail(self, error: StorageError) -> NoReturn:
        self.storage_error = error
        self._drop_body()
        raise error
