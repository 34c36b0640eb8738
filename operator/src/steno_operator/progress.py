"""A job's progress: live WatchProgress streams from its pods, summed, patched at a bounded rate.

Each running pod serves ``steno_api.v1.TranscriptionService/WatchProgress``
on its pod IP (``steno work --progress-host $(POD_IP) --progress-port P``):
the state of its shard at once, then every change, then a final message when
the shard is finished. A :class:`ProgressWatcher` keeps one stream per
running pod (an asyncio task on Kopf's event loop), reconnecting with
back-off while the pod loads its model or after a network hiccup, and drops
it when the pod goes away. Every message wakes the job's reconciler.

Finished shards are not watched: their numbers come from their committed
shard manifests (exact, and still there after an operator restart, when no
stream is). :func:`aggregate` adds the two kinds up, pure and testable.

Status patches of progress alone are rate-limited per job by a
:class:`ProgressThrottle`; changes of phase or conditions are not delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 100  # per-file failures listed in the status (the CRD's maxItems)
MAX_FAILURE_REASON_CHARS = 300  # one line each
RETRY_INITIAL_S = 0.5  # reconnect back-off of a stream
RETRY_MAX_S = 2.0  # a pod's server comes up once its model is loaded: check often
PERCENT_BEFORE_DONE = 99  # 100 % only once every shard is committed


@dataclass(frozen=True)
class ShardProgress:
    """Where one shard stands."""

    audio_s_done: float = 0.0
    audio_s_total: float = 0.0
    files_done: int = 0
    files_total: int = 0
    files_failed: int = 0
    failures: tuple[tuple[str, str], ...] = ()  # (uri, reason)
    finished: bool = False


@dataclass(frozen=True)
class JobProgress:
    audio_s_done: float
    audio_s_total: float
    files_done: int
    files_total: int
    files_failed: int
    shards_done: int
    shards_total: int
    percent: int
    failures: tuple[tuple[str, str], ...]

    def status(self) -> dict[str, Any]:
        """The ``status.progress`` object."""
        return {
            "audioSecondsDone": round(self.audio_s_done, 1),
            "audioSecondsTotal": round(self.audio_s_total, 1),
            "filesDone": self.files_done,
            "filesTotal": self.files_total,
            "filesFailed": self.files_failed,
            "files": f"{self.files_done}/{self.files_total}",
            "shardsDone": self.shards_done,
            "shardsTotal": self.shards_total,
            "percent": self.percent,
        }

    def failures_status(self) -> list[dict[str, str]]:
        """The ``status.failures`` list: the first failures, each reason on one line."""
        return [{"uri": uri, "reason": " ".join(reason.split())[:MAX_FAILURE_REASON_CHARS]}
                for uri, reason in self.failures[:MAX_REPORTED_FAILURES]]


def aggregate(
    shard_files: Mapping[int, int],
    done: Mapping[int, ShardProgress],
    live: Mapping[int, ShardProgress],
) -> JobProgress:
    """The job's progress from the plan's files per shard, finished shards and live ones.

    A finished shard counts from its manifest, whatever its stream last said.
    The percentage weighs each shard by its planned files and measures a live
    shard by audio when its total is known, else by files.
    """
    total_files = sum(shard_files.values())
    audio_done = audio_total = 0.0
    files_done = files_failed = 0
    weighted = 0.0
    failures: list[tuple[str, str]] = []
    for shard, planned in sorted(shard_files.items()):
        progress = done.get(shard) or live.get(shard)
        if progress is None:
            continue
        finished = shard in done
        audio_done += progress.audio_s_done
        audio_total += max(progress.audio_s_total, progress.audio_s_done)
        files_done += progress.files_done
        files_failed += progress.files_failed
        failures.extend(progress.failures)
        if finished:
            fraction = 1.0
        elif progress.audio_s_total > 0:
            fraction = min(1.0, progress.audio_s_done / progress.audio_s_total)
        elif progress.files_total > 0:
            fraction = min(1.0, progress.files_done / progress.files_total)
        else:
            fraction = 0.0
        weighted += fraction * planned
    shards_done = sum(1 for shard in shard_files if shard in done)
    all_done = shards_done == len(shard_files)
    if all_done:
        percent = 100
    elif total_files:
        percent = min(PERCENT_BEFORE_DONE, math.floor(100 * weighted / total_files))
    else:
        percent = 0
    return JobProgress(
        audio_s_done=audio_done,
        audio_s_total=audio_total,
        files_done=files_done,
        files_total=total_files,
        files_failed=files_failed,
        shards_done=shards_done,
        shards_total=len(shard_files),
        percent=percent,
        failures=tuple(failures),
    )


@dataclass
class ProgressThrottle:
    """At most one progress-only patch per ``interval_s`` (monotonic seconds)."""

    interval_s: float
    last_s: float | None = None

    def due_in(self, now_s: float) -> float:
        """Seconds until a patch is allowed (0: now)."""
        if self.last_s is None:
            return 0.0
        return max(0.0, self.last_s + self.interval_s - now_s)

    def mark(self, now_s: float) -> None:
        self.last_s = now_s


@dataclass(frozen=True)
class PodTarget:
    """A running pod to watch."""

    uid: str
    shard: int
    address: str  # host:port


@dataclass
class _Stream:
    target: PodTarget
    task: asyncio.Task[None]
    latest: ShardProgress | None = None


@dataclass
class ProgressWatcher:
    """One WatchProgress stream per running pod; :meth:`live` gives the latest per shard."""

    on_change: Callable[[], None]
    retry_initial_s: float = RETRY_INITIAL_S
    retry_max_s: float = RETRY_MAX_S
    _streams: dict[str, _Stream] = field(default_factory=dict)
    _furthest: dict[int, ShardProgress] = field(default_factory=dict)

    def sync(self, targets: Iterable[PodTarget]) -> None:
        """Watch exactly ``targets``: start streams for new pods, stop those of gone ones."""
        wanted = {target.uid: target for target in targets}
        for uid in list(self._streams):
            if uid not in wanted or wanted[uid] != self._streams[uid].target:
                stream = self._streams.pop(uid)
                self._remember(stream.target.shard, stream.latest)
                stream.task.cancel()
        for uid, target in wanted.items():
            if uid not in self._streams:
                stream = _Stream(target, asyncio.get_running_loop().create_task(
                    self._watch(target), name=f"steno-progress-{target.address}"))
                self._streams[uid] = stream

    def live(self) -> dict[int, ShardProgress]:
        """The furthest snapshot seen of each shard, from streams open now or closed since.

        A pod that finishes drops its stream before the Job lists its index as
        completed; keeping its last snapshot (and never a lesser one from a
        retried pod) keeps the job's progress from going backwards meanwhile.
        """
        for stream in self._streams.values():
            self._remember(stream.target.shard, stream.latest)
        return dict(self._furthest)

    def _remember(self, shard: int, progress: ShardProgress | None) -> None:
        if progress is None:
            return
        known = self._furthest.get(shard)
        if known is None or _ahead(progress, known):
            self._furthest[shard] = progress

    async def close(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.task.cancel()
        for stream in streams:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stream.task

    async def _watch(self, target: PodTarget) -> None:
        import grpc  # imported where used: the operator's handlers do not need it otherwise
        from steno_api.v1 import transcription_pb2 as pb
        from steno_api.v1 import transcription_pb2_grpc as pb_grpc

        delay = self.retry_initial_s
        while True:
            try:
                async with grpc.aio.insecure_channel(target.address) as channel:
                    stub = pb_grpc.TranscriptionServiceStub(channel)
                    failures: tuple[tuple[str, str], ...] = ()
                    first = True
                    async for message in stub.WatchProgress(pb.WatchProgressRequest()):
                        if first:
                            LOG.info("watching the progress of shard %d at %s", target.shard,
                                     target.address)
                            first = False
                        # A new stream repeats every failure so far; later messages add new ones.
                        failures += tuple((f.uri, f.reason) for f in message.new_failures)
                        self._record(target, ShardProgress(
                            audio_s_done=message.audio_s_done,
                            audio_s_total=message.audio_s_total,
                            files_done=message.files_done,
                            files_total=message.files_total,
                            files_failed=message.files_failed,
                            failures=failures,
                            finished=message.finished,
                        ))
                        delay = self.retry_initial_s
                        if message.finished:
                            return
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    LOG.info("%s serves no progress: %s", target.address, error.details())
                    return
                LOG.debug("progress stream of %s: %s", target.address, error.code())
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    def _record(self, target: PodTarget, progress: ShardProgress) -> None:
        stream = self._streams.get(target.uid)
        if stream is not None and stream.target == target:
            stream.latest = progress
            self.on_change()


def _ahead(new: ShardProgress, old: ShardProgress) -> bool:
    """Whether ``new`` reports more work done than ``old``."""
    return (new.files_done, new.audio_s_done) > (old.files_done, old.audio_s_done)
