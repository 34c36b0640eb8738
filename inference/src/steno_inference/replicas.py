"""One runner per GPU, fed from one queue: windows spread across devices as slots free up.

Each replica is a :class:`~steno_inference.runner.WhisperRunner` over its own
copy of the weights on its own device, driven by its own thread. They all
take windows from one shared feed, each only when it has free slots, so a
faster or less loaded GPU simply takes more: no window is assigned ahead of
time and none waits behind a busy device while another is idle. Results
come back through one queue in the order windows finish.

With CUDA graphs a step costs the host one replay call, so one Python process
drives several GPUs; the threads release the GIL while the device works.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from steno_inference.runner import DecodeRequest, DecodeResult, RequestFeed, WhisperRunner


class SharedFeed:
    """A thread-safe feed over a request source, shared by every replica."""

    def __init__(self, requests: Iterable[DecodeRequest] | RequestFeed) -> None:
        self._feed = requests if isinstance(requests, RequestFeed) else None
        self._pending: deque[DecodeRequest] = (
            deque() if self._feed is not None else deque(requests)  # type: ignore[arg-type]
        )
        self._lock = threading.Lock()

    def take(self, limit: int, wait: bool) -> list[DecodeRequest] | None:
        if self._feed is not None:
            # The inner feed (the scheduler) is thread-safe and may block.
            return self._feed.take(limit, wait)
        with self._lock:
            if not self._pending:
                return None
            count = min(limit, len(self._pending))
            return [self._pending.popleft() for _ in range(count)]


@dataclass(frozen=True)
class _Failed:
    replica: int
    error: BaseException


class ReplicaPool:
    """Several runners decoding one stream of windows."""

    def __init__(self, runners: list[WhisperRunner]) -> None:
        if not runners:
            raise ValueError("a replica pool needs at least one runner")
        self.runners = runners
        self.windows_per_replica = [0] * len(runners)

    def decode(
        self, requests: Iterable[DecodeRequest] | RequestFeed
    ) -> Iterator[DecodeResult]:
        """Decode every request on whichever replica has room; results as windows finish."""
        feed = SharedFeed(requests)
        results: queue.Queue[DecodeResult | _Failed | int] = queue.Queue()
        threads = [
            threading.Thread(
                target=self._drive, args=(i, runner, feed, results),
                name=f"steno-replica-{i}", daemon=True,
            )
            for i, runner in enumerate(self.runners)
        ]
        for thread in threads:
            thread.start()
        running = len(threads)
        failure: _Failed | None = None
        while running:
            item = results.get()
            if isinstance(item, int):
                running -= 1
            elif isinstance(item, _Failed):
                failure = failure or item
                running -= 1
            else:
                yield item
        for thread in threads:
            thread.join()
        if failure is not None:
            raise RuntimeError(f"replica {failure.replica} failed: {failure.error}") from (
                failure.error
            )

    def _drive(
        self,
        index: int,
        runner: WhisperRunner,
        feed: SharedFeed,
        results: queue.Queue[DecodeResult | _Failed | int],
    ) -> None:
        try:
            for result in runner.decode(feed):
                self.windows_per_replica[index] += 1
                results.put(result)
        except Exception as error:  # reported to the caller, not lost with the thread
            results.put(_Failed(index, error))
            return
        results.put(index)
