"""Progress: aggregation, the patch throttle, and the WatchProgress client over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc
from steno_operator.manifests import JobIdentity, owner_reference
from steno_operator.observe import observe_job, observe_pods, parse_indexes
from steno_operator.progress import (
    PodTarget,
    ProgressThrottle,
    ProgressWatcher,
    ShardProgress,
    aggregate,
)

pytestmark = pytest.mark.unit


def test_aggregate_prefers_manifests_and_weighs_shards_by_files() -> None:
    shard_files = {0: 2, 1: 2}
    done = {0: ShardProgress(10.0, 10.0, 2, 2, 1, (("s3://a/x.wav", "corrupt: no audio"),), True)}
    live = {0: ShardProgress(3.0, 10.0, 1, 2),  # stale stream of a finished shard: ignored
            1: ShardProgress(5.0, 20.0, 1, 2)}
    progress = aggregate(shard_files, done, live)
    assert (progress.files_done, progress.files_total, progress.files_failed) == (3, 4, 1)
    assert (progress.shards_done, progress.shards_total) == (1, 2)
    assert progress.audio_s_done == 15.0 and progress.audio_s_total == 30.0
    assert progress.percent == 62  # (2 × 1.0 + 2 × 0.25) / 4
    status = progress.status()
    assert status["files"] == "3/4" and status["percent"] == 62
    assert progress.failures_status() == [{"uri": "s3://a/x.wav", "reason": "corrupt: no audio"}]


def test_percent_is_100_only_when_every_shard_is_committed() -> None:
    almost = aggregate({0: 1}, {}, {0: ShardProgress(9.99, 10.0, 1, 1, finished=True)})
    assert almost.percent == 99
    done = aggregate({0: 1}, {0: ShardProgress(10.0, 10.0, 1, 1, finished=True)}, {})
    assert done.percent == 100
    nothing = aggregate({0: 3, 1: 3}, {}, {})
    assert nothing.percent == 0 and nothing.files_total == 6


def test_failures_in_status_are_bounded_and_one_line() -> None:
    failures = tuple((f"s3://a/{i}.wav", "bad\nheader " * 100) for i in range(250))
    progress = aggregate({0: 250}, {0: ShardProgress(0, 0, 250, 250, 250, failures, True)}, {})
    listed = progress.failures_status()
    assert len(listed) == 100
    assert "\n" not in listed[0]["reason"] and len(listed[0]["reason"]) <= 300


def test_throttle() -> None:
    throttle = ProgressThrottle(5.0)
    assert throttle.due_in(100.0) == 0.0
    throttle.mark(100.0)
    assert throttle.due_in(101.0) == 4.0
    assert throttle.due_in(106.0) == 0.0


def test_parse_indexes() -> None:
    assert parse_indexes("") == set()
    assert parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}


def test_observe_pods_finds_unschedulable_and_running_pods() -> None:
    pods = [
        {"metadata": {"uid": "u0", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
         "spec": {"nodeName": "gpu-1"},
         "status": {"phase": "Running", "podIP": "10.0.0.5",
                    "containerStatuses": [{"state": {"running": {"startedAt": "2026-01-01T00:00:09Z"}}}]}},
        {"metadata": {"uid": "u1", "annotations": {"batch.kubernetes.io/job-completion-index": "1"}},
         "spec": {}, "status": {"phase": "Pending", "conditions": [
             {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
              "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}},
        {"metadata": {"uid": "u2"}, "spec": {}, "status": {"phase": "Pending"}},
        {"metadata": {"uid": "u3"}, "spec": {"nodeName": "gpu-2"}, "status": {"phase": "Pending"}},
        {"metadata": {"uid": "u4", "deletionTimestamp": "x"}, "status": {"phase": "Running"}},
        {"metadata": {"uid": "u5"}, "status": {"phase": "Succeeded"}},
        {"metadata": {"uid": "u6", "annotations": {"batch.kubernetes.io/job-completion-index": "2"}},
         "status": {"phase": "Running", "podIP": "fd00::7"}},
    ]
    view = observe_pods(pods, 50051)
    summary = view.summary
    assert (summary.running, summary.unschedulable, summary.waiting, summary.pending_scheduled) == (2, 1, 1, 1)
    assert "Insufficient nvidia.com/gpu" in summary.unschedulable_message
    assert view.targets == (PodTarget("u0", 0, "10.0.0.5:50051"), PodTarget("u6", 2, "[fd00::7]:50051"))
    assert view.first_started_at == "2026-01-01T00:00:09Z"


def test_observe_job() -> None:
    identity = JobIdentity("ns", "tj", "uid-1")
    job = {"metadata": {"ownerReferences": [owner_reference(identity)]},
           "status": {"active": 1, "ready": 1, "conditions": [
               {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit 2"}]}}
    seen = observe_job(job, identity)
    assert seen.failed and seen.failure_reason == "PodFailurePolicy" and seen.active == 1
    assert observe_job(job, JobIdentity("ns", "tj", "uid-2")).foreign
    assert not observe_job(None, identity).exists


class _Scripted(pb_grpc.TranscriptionServiceServicer):
    """A WatchProgress that sends a script, dropping the first stream half-way."""

    def __init__(self) -> None:
        self.streams = 0

    async def WatchProgress(self, request, context):
        self.streams += 1
        failure = pb.FileFailure(uri="s3://a/bad.wav", reason="corrupt")
        if self.streams == 1:
            yield pb.WatchProgressResponse(version=1, files_total=3, files_done=1, files_failed=1,
                                           new_failures=[failure], audio_s_total=30.0, audio_s_done=5.0)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        # A new stream repeats every failure so far, then adds new ones.
        yield pb.WatchProgressResponse(version=2, files_total=3, files_done=2, files_failed=1,
                                       new_failures=[failure], audio_s_total=30.0, audio_s_done=20.0)
        yield pb.WatchProgressResponse(version=3, files_total=3, files_done=3, files_failed=2,
                                       new_failures=[pb.FileFailure(uri="s3://a/worse.wav", reason="empty")],
                                       audio_s_total=30.0, audio_s_done=30.0, finished=True,
                                       state=pb.SHARD_STATE_SUCCEEDED)


def test_watcher_follows_a_stream_across_a_reconnect() -> None:
    async def scenario() -> tuple[ShardProgress, int, int]:
        server = grpc.aio.server()
        servicer = _Scripted()
        pb_grpc.add_TranscriptionServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        changes = 0
        finished = asyncio.Event()
        watcher: ProgressWatcher

        def changed() -> None:
            nonlocal changes
            changes += 1
            latest = watcher.live().get(4)
            if latest is not None and latest.finished:
                finished.set()

        watcher = ProgressWatcher(on_change=changed, retry_initial_s=0.05, retry_max_s=0.1)
        try:
            watcher.sync([PodTarget("pod-uid", 4, f"127.0.0.1:{port}")])
            await asyncio.wait_for(finished.wait(), timeout=20)
            latest = watcher.live()[4]
            watcher.sync([])  # the pod is gone: its stream goes, its last snapshot stays
            assert watcher.live() == {4: latest}  # so the job's progress never goes back
        finally:
            await watcher.close()
            await server.stop(None)
        return latest, changes, servicer.streams

    latest, changes, streams = asyncio.run(scenario())
    assert streams == 2 and changes == 3
    assert (latest.files_done, latest.files_failed, latest.audio_s_done) == (3, 2, 30.0)
    assert latest.failures == (("s3://a/bad.wav", "corrupt"), ("s3://a/worse.wav", "empty"))
