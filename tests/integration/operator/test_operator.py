"""TranscriptionJobs through the real control plane: Job, GPU pods, real workers, status, results."""

from __future__ import annotations

import io
import threading
import time
import urllib.request
import wave
from typing import Any

import numpy as np
import pytest
from steno_devcluster.kubeapi import ApiError, KubeApi
from steno_devcluster.objectstore import ObjectStore
from steno_devcluster.pytest_plugin import GPUS_PER_NODE, ClusterNodes
from steno_devcluster.waiting import wait_for
from support.operator_cluster import (
    OperatorProcess,
    condition,
    events_of,
    list_keys,
    read_json,
    tj_path,
    transcription_job,
    wait_phase,
)
from support.speech import CARDS_DIR, LIBRIVOX_DIR

pytestmark = pytest.mark.integration

# Each pod imports torch and loads tiny.en (~5 s alone, more on 2 busy cores).
JOB_TIMEOUT_S = 240
QUICK_TIMEOUT_S = 60


def _long_speech() -> bytes:
    """~50 s of real speech in one WAV (the LibriVox utterances, twice): two decoder windows."""
    chunks = []
    for path in sorted(LIBRIVOX_DIR.glob("*.wav")) * 2:
        with wave.open(str(path)) as source:
            chunks.append(np.frombuffer(source.readframes(source.getnframes()), dtype="<i2"))
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(16000)
        target.writeframes(np.concatenate(chunks).tobytes())
    return out.getvalue()


def _upload(store: ObjectStore, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.put_object(bucket, f"{prefix}/in/{name}", data)


def _record_statuses(kube_api: KubeApi, namespace: str, name: str, stop: threading.Event,
                     seen: list[dict[str, Any]]) -> None:
    while not stop.is_set():
        job = kube_api.get_or_none(tj_path(namespace, name))
        if job is not None and job.get("status"):
            seen.append(job["status"])
        time.sleep(0.2)


def test_job_runs_on_gpu_nodes_and_succeeds_with_verified_results(
    kube_api: KubeApi, namespace: str, cluster_nodes: ClusterNodes, object_store: ObjectStore,
    operator_bucket: str, storage_secret: str, prefix: str, operator: OperatorProcess,
) -> None:
    # Pods must pass the API server's "restricted" Pod Security admission.
    kube_api.patch(f"/api/v1/namespaces/{namespace}",
                   {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    _upload(object_store, operator_bucket, prefix, {
        "long/reading.wav": _long_speech(),
        "cards/001.wav": (CARDS_DIR / "001.wav").read_bytes(),
        "cards/003.wav": (CARDS_DIR / "003.wav").read_bytes(),
        "cards/broken.wav": b"RIFF\x00\x10\x00\x00WAVEjunk" * 64,  # fails alone
        "notes.txt": b"not an input: the suffix filter leaves it out",
    })
    output = f"s3://{operator_bucket}/{prefix}/out/"
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    recorder = threading.Thread(target=_record_statuses,
                                args=(kube_api, namespace, "talks", stop, seen), daemon=True)
    recorder.start()
    started = time.monotonic()
    kube_api.create(tj_path(namespace), transcription_job("talks", {
        "input": {"prefix": f"s3://{operator_bucket}/{prefix}/in/"},
        "output": {"uri": output, "formats": ["json", "txt"]},
        "model": "tiny.en",
        "parallelism": 2,
        "storageSecretRef": {"name": storage_secret},
    }))
    try:
        done = wait_phase(kube_api, namespace, "talks", {"Succeeded", "Failed"}, JOB_TIMEOUT_S,
                          operator)
    finally:
        stop.set()
        recorder.join(timeout=5)
    took = time.monotonic() - started
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert condition(done, "Succeeded")["reason"] == "ResultsVerified"
    assert condition(done, "Accepted")["message"] == "planned 4 file(s) in 2 shard(s)"
    assert all(c["observedGeneration"] == done["metadata"]["generation"] for c in status["conditions"])
    assert status["progress"]["filesDone"] == status["progress"]["filesTotal"] == 4
    assert status["progress"]["percent"] == 100 and status["progress"]["filesFailed"] == 1
    assert status["progress"]["audioSecondsDone"] > 50
    (failure,) = status["failures"]
    assert failure["uri"].endswith("/cards/broken.wav") and failure["reason"]
    manifest_uri = f"{output}_steno/manifest.json"
    assert status["resultManifestUri"] == manifest_uri
    assert status["realTimeFactor"] > 0 and status["startTime"] <= status["completionTime"]

    # One Indexed Job of two pods, both on GPU nodes, owned by the TranscriptionJob.
    jobs = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == [status["jobName"]]
    (job,) = jobs
    assert job["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert sorted(p["status"]["phase"] for p in pods) == ["Succeeded", "Succeeded"]
    gpu_nodes = {node.name for node in cluster_nodes.gpu}
    assert {p["spec"]["nodeName"] for p in pods} <= gpu_nodes
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1" for p in pods)

    # The result manifest lists every input once, and every output it names is there.
    keys = set(list_keys(object_store, operator_bucket, f"{prefix}/out/"))
    result = read_json(object_store, operator_bucket, f"{prefix}/out/_steno/manifest.json")
    assert result["jobId"] == done["metadata"]["uid"]
    assert sorted(f["uri"].rsplit("/", 1)[-1] for f in result["files"]) == [
        "001.wav", "003.wav", "broken.wav", "reading.wav"]
    for entry in result["files"]:
        assert entry["status"] == ("failed" if entry["uri"].endswith("broken.wav") else "succeeded")
        for output_ref in entry["outputs"]:
            assert output_ref["uri"].removeprefix(f"s3://{operator_bucket}/") in keys
    transcript = read_json(object_store, operator_bucket, f"{prefix}/out/long/reading.json")
    assert "sense" in transcript["text"].lower() or len(transcript["text"]) > 200

    # Progress came from the pods' WatchProgress streams while they worked.
    assert "watching the progress of shard" in operator.log()
    running = [s for s in seen if s.get("phase") == "Running"]
    assert running, "the job was never seen Running"
    partial = [s for s in running if (s.get("progress") or {}).get("audioSecondsDone", 0) > 0
               and (s.get("progress") or {}).get("percent", 100) < 100]
    assert partial, f"no partial progress seen in {len(seen)} statuses"

    # Milestones as Events, each once.
    reasons = [e["reason"] for e in events_of(kube_api, namespace, "talks")]
    for reason in ("Planned", "JobCreated", "PodsRunning", "ResultsVerified", "FilesFailed"):
        assert reasons.count(reason) == 1, reasons

    # Metrics of this process.
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'steno_operator_jobs{phase="Succeeded"} 1.0' in metrics
    assert "steno_operator_time_to_first_pod_seconds_count 1.0" in metrics
    assert "steno_operator_jobs_created_total 1.0" in metrics

    # Deleting the job deletes its Job and pods; the results stay.
    kube_api.delete(tj_path(namespace, "talks"))
    wait_for(lambda: not kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
             and not kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"],
             QUICK_TIMEOUT_S, "the Job and its pods to be garbage-collected")
    assert set(list_keys(object_store, operator_bucket, f"{prefix}/out/")) == keys
    print(f"job took {took:.1f} s")


def test_the_api_server_rejects_bad_specs(kube_api: KubeApi, namespace: str) -> None:
    good = {"input": {"uris": ["s3://bucket/a.wav"]}, "output": {"uri": "s3://bucket/out/"}}
    bad_specs = {
        "bad URI": {**good, "input": {"uris": ["http://bucket/a.wav"]}},
        "both inputs": {**good, "input": {"uris": ["s3://bucket/a.wav"], "prefix": "s3://bucket/"}},
        "unknown task": {**good, "task": "summarize"},
        "escaping output": {**good, "output": {"uri": "s3://bucket/../etc/"}},
        "impossible speakers": {**good, "diarization": {"enabled": True, "minSpeakers": 5, "maxSpeakers": 2}},
        "too many speakers": {**good, "diarization": {"enabled": True, "numSpeakers": 33}},
        "counts without diarization": {**good, "diarization": {"numSpeakers": 2}},
        "translate with an English-only model": {**good, "model": "tiny.en", "task": "translate"},
        "no GPUs": {**good, "gpusPerPod": 0},
        "int8CrossKV not a boolean": {**good, "int8CrossKV": "yes"},
        "no beams": {**good, "beamSize": 0},
        "too many beams": {**good, "beamSize": 17},
        "beamSize not an integer": {**good, "beamSize": "x"},
        "deterministic not a boolean": {**good, "deterministic": "yes"},
    }
    for what, spec in bad_specs.items():
        with pytest.raises(ApiError) as refused:
            kube_api.create(tj_path(namespace), transcription_job("bad", spec))
        assert refused.value.status == 422, what
    created = kube_api.create(tj_path(namespace), transcription_job("good", good))
    assert created["spec"]["model"] == "large-v3" and created["spec"]["parallelism"] == 1
    # The spec is fixed once created; only suspend may change.
    with pytest.raises(ApiError) as refused:
        kube_api.patch(tj_path(namespace, "good"), {"spec": {"model": "base"}})
    assert refused.value.status == 422
    # An optional field may not be added later, nor a given one changed.
    with pytest.raises(ApiError) as refused:
        kube_api.patch(tj_path(namespace, "good"), {"spec": {"int8CrossKV": True}})
    assert refused.value.status == 422
    int8 = kube_api.create(tj_path(namespace), transcription_job("int8", {**good, "int8CrossKV": True}))
    assert int8["spec"]["int8CrossKV"] is True
    with pytest.raises(ApiError) as refused:
        kube_api.patch(tj_path(namespace, "int8"), {"spec": {"int8CrossKV": False}})
    assert refused.value.status == 422
    beams = kube_api.create(tj_path(namespace), transcription_job("beams", {**good, "beamSize": 4}))
    assert beams["spec"]["beamSize"] == 4
    for change in ({"beamSize": 2}, {"beamSize": None}):  # changed, or removed
        with pytest.raises(ApiError) as refused:
            kube_api.patch(tj_path(namespace, "beams"), {"spec": change})
        assert refused.value.status == 422, change
    with pytest.raises(ApiError) as refused:
        kube_api.patch(tj_path(namespace, "good"), {"spec": {"beamSize": 4}})
    assert refused.value.status == 422
    repeatable = kube_api.create(tj_path(namespace),
                                 transcription_job("repeatable", {**good, "deterministic": True}))
    assert repeatable["spec"]["deterministic"] is True
    for change in ({"deterministic": False}, {"deterministic": None}):  # changed, or removed
        with pytest.raises(ApiError) as refused:
            kube_api.patch(tj_path(namespace, "repeatable"), {"spec": change})
        assert refused.value.status == 422, change
    with pytest.raises(ApiError) as refused:
        kube_api.patch(tj_path(namespace, "good"), {"spec": {"deterministic": True}})
    assert refused.value.status == 422
    # No schema default: a job that leaves them out keeps a spec without them.
    assert not {"int8CrossKV", "beamSize", "deterministic"} & set(created["spec"])
    kube_api.patch(tj_path(namespace, "good"), {"spec": {"suspend": True}})


def test_the_operator_fails_a_spec_only_it_can_judge(
    kube_api: KubeApi, namespace: str, operator_bucket: str, storage_secret: str,
    operator: OperatorProcess,
) -> None:
    # Valid to the schema, but the inputs would lie inside the outputs.
    kube_api.create(tj_path(namespace), transcription_job("inside", {
        "input": {"prefix": f"s3://{operator_bucket}/shared/out/audio/"},
        "output": {"uri": f"s3://{operator_bucket}/shared/out/"},
        "model": "tiny.en",
        "storageSecretRef": {"name": storage_secret},
    }))
    failed = wait_phase(kube_api, namespace, "inside", {"Failed", "Succeeded"}, QUICK_TIMEOUT_S,
                        operator)
    assert failed["status"]["phase"] == "Failed"
    assert condition(failed, "Failed")["reason"] == "InvalidSpec"
    assert condition(failed, "Accepted")["status"] == "False"
    assert "input.prefix" in condition(failed, "Failed")["message"]
    assert kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"] == []
    events = wait_for(lambda: events_of(kube_api, namespace, "inside"), QUICK_TIMEOUT_S,
                      "the InvalidSpec Event")
    time.sleep(1)  # a second Event, if one were posted, would come right after the first
    events = events_of(kube_api, namespace, "inside")
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "InvalidSpec")]


def test_too_many_gpus_shows_unschedulable_then_suspend_and_delete_stop_the_pods(
    kube_api: KubeApi, namespace: str, object_store: ObjectStore, operator_bucket: str,
    storage_secret: str, prefix: str, gpu_pod_classes: tuple[str, str], operator: OperatorProcess,
) -> None:
    _upload(object_store, operator_bucket, prefix, {"a.wav": (CARDS_DIR / "002.wav").read_bytes()})
    kube_api.create(tj_path(namespace), transcription_job("greedy", {
        "input": {"uris": [f"s3://{operator_bucket}/{prefix}/in/a.wav"]},
        "output": {"uri": f"s3://{operator_bucket}/{prefix}/out/"},
        "model": "tiny.en",
        "gpusPerPod": GPUS_PER_NODE + 1,
        "placement": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                      "priorityClassName": gpu_pod_classes[0],
                      "runtimeClassName": gpu_pod_classes[1]},
        "storageSecretRef": {"name": storage_secret},
    }))

    def unschedulable() -> dict[str, Any] | None:
        job = kube_api.get(tj_path(namespace, "greedy"))
        scheduled = condition(job, "Scheduled")
        return job if scheduled is not None and scheduled["reason"] == "Unschedulable" else None

    job = wait_for(unschedulable, QUICK_TIMEOUT_S, "the Unschedulable condition",
                   describe=lambda: operator.log()[-3000:])
    scheduled = condition(job, "Scheduled")
    assert scheduled["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert job["status"]["phase"] == "Pending"
    (pod,) = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert pod["spec"]["priorityClassName"] == gpu_pod_classes[0]
    assert pod["spec"]["runtimeClassName"] == gpu_pod_classes[1]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # The Event follows the status patch.
    wait_for(lambda: ("Warning", "Unschedulable") in [
        (e["type"], e["reason"]) for e in events_of(kube_api, namespace, "greedy")],
        QUICK_TIMEOUT_S, "a Warning Event saying Unschedulable")

    # Suspend: the Job is suspended, its pods go away, the status says so.
    kube_api.patch(tj_path(namespace, "greedy"), {"spec": {"suspend": True}})
    suspended = wait_phase(kube_api, namespace, "greedy", {"Suspended"}, QUICK_TIMEOUT_S, operator)
    assert condition(suspended, "Suspended")["status"] == "True"
    assert suspended["status"]["observedGeneration"] == suspended["metadata"]["generation"] == 2
    wait_for(lambda: not kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"],
             QUICK_TIMEOUT_S, "the suspended job's pods to be deleted")
    (child,) = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    assert child["spec"]["suspend"] is True

    # Resume: the pod is back (and still cannot be placed).
    kube_api.patch(tj_path(namespace, "greedy"), {"spec": {"suspend": False}})
    wait_for(unschedulable, QUICK_TIMEOUT_S, "Unschedulable again after resuming")
    assert condition(kube_api.get(tj_path(namespace, "greedy")), "Suspended")["reason"] == "Resumed"

    # Delete: the Job and its pod go; nothing in storage is removed.
    before = list_keys(object_store, operator_bucket, prefix)
    kube_api.delete(tj_path(namespace, "greedy"))
    wait_for(lambda: kube_api.get_or_none(tj_path(namespace, "greedy")) is None,
             QUICK_TIMEOUT_S, "the TranscriptionJob to be deleted")
    wait_for(lambda: not kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
             and not kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"],
             QUICK_TIMEOUT_S, "the Job and its pod to be garbage-collected")
    assert list_keys(object_store, operator_bucket, prefix) == before
    assert f"{prefix}/out/_steno/plan.json" in before


def test_the_workers_bad_spec_exit_code_fails_the_job_without_retries(
    kube_api: KubeApi, namespace: str, object_store: ObjectStore, operator_bucket: str,
    storage_secret: str, prefix: str, operator: OperatorProcess,
) -> None:
    _upload(object_store, operator_bucket, prefix, {"a.wav": (CARDS_DIR / "004.wav").read_bytes()})
    kube_api.create(tj_path(namespace), transcription_job("unknown-model", {
        "input": {"prefix": f"s3://{operator_bucket}/{prefix}/in/"},
        "output": {"uri": f"s3://{operator_bucket}/{prefix}/out/"},
        "model": "no-such-model",  # valid to the schema; the worker cannot load it: exit 2
        "storageSecretRef": {"name": storage_secret},
    }))
    failed = wait_phase(kube_api, namespace, "unknown-model", {"Failed", "Succeeded"},
                        JOB_TIMEOUT_S, operator)
    assert failed["status"]["phase"] == "Failed"
    assert condition(failed, "Failed")["reason"] == "WorkerRejectedSpec"
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert len(pods) == 1  # FailJob: no retry of a pod that cannot succeed
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2


def test_the_deadline_fails_the_job(
    kube_api: KubeApi, namespace: str, object_store: ObjectStore, operator_bucket: str,
    storage_secret: str, prefix: str, operator: OperatorProcess,
) -> None:
    _upload(object_store, operator_bucket, prefix, {"a.wav": (CARDS_DIR / "005.wav").read_bytes()})
    kube_api.create(tj_path(namespace), transcription_job("hurried", {
        "input": {"prefix": f"s3://{operator_bucket}/{prefix}/in/"},
        "output": {"uri": f"s3://{operator_bucket}/{prefix}/out/"},
        "model": "tiny.en",
        "deadlineSeconds": 2,  # the worker alone needs longer to start
        "storageSecretRef": {"name": storage_secret},
    }))
    failed = wait_phase(kube_api, namespace, "hurried", {"Failed", "Succeeded"}, QUICK_TIMEOUT_S,
                        operator)
    assert failed["status"]["phase"] == "Failed"
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    (job,) = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    assert job["spec"]["activeDeadlineSeconds"] == 2
