"""Reading the next inputs ahead while the engine works on the current one.

The engine's decoder thread opens its sources one after another, in order.
:class:`Prefetcher` wraps each :class:`~steno_inference.storage.reader.ObjectReader`
in a :class:`PrefetchedSource` that notices the decoder's first read: at that
moment source *i* is the one being decoded, so

* the heads of sources *i+1 … i+ahead* start downloading on background
  threads (the first ``head_bytes`` of each: the whole of a typical speech
  file), so the decoder never waits for a first byte from the store; and
* sources before *i* are most likely finished with, so their buffers are
  freed (a late read would simply stream again; the worker closes each
  reader when the engine reports its source).

Memory is therefore bounded by ``(ahead + 1) × head_bytes`` plus one open
stream, whatever the number or size of the inputs.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from steno_inference.storage.reader import ObjectReader

PREFETCH_FILES = 2  # heads downloaded ahead of the source being decoded
PREFETCH_HEAD_BYTES = 8 * 1024 * 1024  # 8 MiB: ~4 min of 16 kHz WAV, ~8 min of 128 kbit/s MP3


class PrefetchedSource:
    """A file object for the engine: reads go to the reader; the first one moves the window."""

    def __init__(self, reader: ObjectReader, index: int, prefetcher: Prefetcher) -> None:
        self.reader = reader
        self.name = reader.name
        self._index = index
        self._prefetcher = prefetcher
        self._started = False

    def read(self, size: int = -1) -> bytes:
        if not self._started:
            self._started = True
            self._prefetcher.started(self._index)
        return self.reader.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.reader.seek(offset, whence)

    def tell(self) -> int:
        return self.reader.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class Prefetcher:
    """Owns the readers of one run and the threads that fetch their heads."""

    def __init__(
        self,
        readers: list[ObjectReader],
        ahead: int = PREFETCH_FILES,
        head_bytes: int = PREFETCH_HEAD_BYTES,
    ) -> None:
        if ahead < 0 or head_bytes < 1:
            raise ValueError("prefetch needs ahead >= 0 and head_bytes >= 1")
        self.readers = readers
        self.ahead = ahead
        self.head_bytes = head_bytes
        self._executor = ThreadPoolExecutor(max_workers=max(1, ahead),
                                            thread_name_prefix="steno-prefetch")
        self._lock = threading.Lock()
        self._released_below = 0  # readers with a lower index have had their buffers freed
        self.sources = [PrefetchedSource(reader, i, self) for i, reader in enumerate(readers)]
        self._prefetch(range(min(ahead, len(readers))))

    def started(self, index: int) -> None:
        """Source ``index`` is being decoded: fetch ahead of it, free what is behind it."""
        with self._lock:
            behind = range(self._released_below, index)
            self._released_below = max(self._released_below, index)
        for i in behind:
            self.readers[i].release_buffers()
        self._prefetch(range(index + 1, min(index + 1 + self.ahead, len(self.readers))))

    def _prefetch(self, indexes: range) -> None:
        for i in indexes:
            self.readers[i].prefetch_head(self._executor, self.head_bytes)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
