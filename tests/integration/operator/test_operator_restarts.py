"""The operator is killed (SIGKILL) and restarted again and again while jobs run.

Every job must still complete, and exactly once: one Kubernetes Job per
TranscriptionJob over the whole test (seen through a watch, so a Job created
and deleted between two looks would count too), one succeeded pod per shard,
one plan, one manifest per shard, one result manifest, one output per input
and format, and no milestone Event twice.

Kills land at random moments (seeded, so a failure can be replayed): while the
operator starts, while it plans (the plan written, the Job not yet created),
between creating the Job and writing the status, while pods run and stream
progress, while results are verified. Jobs are created between kills, so some
job is always in flight when the operator dies.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest
from steno_devcluster.kubeapi import ApiError, KubeApi
from steno_devcluster.objectstore import ObjectStore
from support.operator_cluster import (
    OperatorProcess,
    events_of,
    list_keys,
    read_json,
    tj_path,
    transcription_job,
    wait_phase,
)
from support.speech import CARDS_DIR

pytestmark = pytest.mark.integration

KILLS = 10
SEED = 20261121
# A kill comes this long after the operator is up (its imports done, Kopf starting):
# from "still logging in" to "several reconcile passes done".
KILL_AFTER_READY_S = (0.0, 4.0)
# (name, cards, parallelism), created before kills 0, 3 and 6 — and a spare one
# whenever no job is in flight, so that every kill hits the operator mid-job.
JOBS = (("first", ("001", "002", "003"), 2), ("second", ("004", "005"), 1),
        ("third", ("001", "005"), 2))
SPARE_CARDS = ("002", "004")
CREATE_BEFORE_KILLS = (0, 3, 6)
FORMATS = ["json", "txt"]
FINISH_TIMEOUT_S = 300
WATCH_TIMEOUT_S = 20


class JobWatch(threading.Thread):
    """Every Job ever ADDED in the namespace, by name (a watch, not polling)."""

    def __init__(self, kube_api: KubeApi, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube_api = kube_api
        self.path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        self.added: dict[str, set[str]] = defaultdict(set)
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        version = self.kube_api.get(self.path)["metadata"]["resourceVersion"]
        while not self.stopping.is_set():
            try:
                for event in self.kube_api.watch(self.path, version, WATCH_TIMEOUT_S):
                    obj = event["object"]
                    if event["type"] == "BOOKMARK":
                        version = obj["metadata"]["resourceVersion"]
                        continue
                    if event["type"] == "ERROR":
                        raise RuntimeError(str(obj))
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "ADDED":
                        self.added[obj["metadata"]["name"]].add(obj["metadata"]["uid"])
            except (ApiError, RuntimeError, OSError) as error:  # re-list and go on
                self.errors.append(str(error))
                version = self.kube_api.get(self.path)["metadata"]["resourceVersion"]


def _stages(kube_api: KubeApi, namespace: str) -> dict[str, str]:
    """Each job's phase, and whether its Job exists yet (J) and how many pods run (R)."""
    items = kube_api.get(tj_path(namespace))["items"]
    jobs = {j["metadata"]["name"]: j for j in
            kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]}
    stages = {}
    for item in items:
        status = item.get("status") or {}
        job = jobs.get(status.get("jobName", ""))
        detail = "" if job is None else f" J{(job.get('status') or {}).get('active', 0)}"
        stages[item["metadata"]["name"]] = f"{status.get('phase', 'new')}{detail}"
    return stages


def test_killed_and_restarted_operator_completes_every_job_exactly_once(
    kube_api: KubeApi, namespace: str, object_store: ObjectStore, operator_bucket: str,
    storage_secret: str, prefix: str, operator: OperatorProcess,
) -> None:
    for card in ("001", "002", "003", "004", "005"):
        object_store.put_object(operator_bucket, f"{prefix}/in/{card}.wav",
                                (CARDS_DIR / f"{card}.wav").read_bytes())
    watch = JobWatch(kube_api, namespace)
    watch.start()
    rng = random.Random(SEED)
    began = time.monotonic()
    kills: list[tuple[float, dict[str, str]]] = []
    created: list[tuple[str, tuple[str, ...], int]] = []
    for kill in range(KILLS):
        in_flight = any(not stage.startswith(("Succeeded", "Failed"))
                        for stage in _stages(kube_api, namespace).values())
        if kill in CREATE_BEFORE_KILLS or not in_flight:
            index = len(created)
            name, cards, parallelism = (JOBS[index] if index < len(JOBS)
                                        else (f"spare-{index}", SPARE_CARDS, 1))
            kube_api.create(tj_path(namespace), transcription_job(name, {
                "input": {"uris": [f"s3://{operator_bucket}/{prefix}/in/{c}.wav" for c in cards]},
                "output": {"uri": f"s3://{operator_bucket}/{prefix}/out/{name}/", "formats": FORMATS},
                "model": "tiny.en",
                "parallelism": parallelism,
                "storageSecretRef": {"name": storage_secret},
            }))
            created.append((name, cards, parallelism))
        operator.wait_ready()
        time.sleep(rng.uniform(*KILL_AFTER_READY_S))
        phases = _stages(kube_api, namespace)
        operator.kill()
        kills.append((time.monotonic() - began, phases))
        operator.start()
    killing_took = time.monotonic() - began

    finished = {name: wait_phase(kube_api, namespace, name, {"Succeeded", "Failed"},
                                 FINISH_TIMEOUT_S, operator)
                for name, _, _ in created}
    total = time.monotonic() - began
    watch.stopping.set()
    report = "\n".join(f"  kill {i + 1} at {t:5.1f} s: {p}" for i, (t, p) in enumerate(kills))
    print(f"\n{len(kills)} kills in {killing_took:.1f} s, all {len(created)} jobs finished after "
          f"{total:.1f} s ({operator.starts} operator starts)\n{report}")

    # Every kill hit the operator while at least one job was still in flight.
    mid_job = [p for _, p in kills
               if any(not phase.startswith(("Succeeded", "Failed")) for phase in p.values())]
    assert len(mid_job) >= KILLS, report

    jobs = {j["metadata"]["name"]: j for j in
            kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]}
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    for name, cards, parallelism in created:
        tj = finished[name]
        status = tj["status"]
        assert status["phase"] == "Succeeded", (name, status, operator.log()[-3000:])
        shards = min(parallelism, len(cards))
        # One Job for this TranscriptionJob, ever.
        assert len(watch.added[status["jobName"]]) == 1, watch.added
        job = jobs[status["jobName"]]
        assert job["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]
        # One succeeded pod per shard, no failed pod.
        mine = [p for p in pods if p["metadata"]["labels"].get("job-name") == status["jobName"]]
        indexes = sorted(int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
                         for p in mine)
        assert indexes == list(range(shards)), [p["status"]["phase"] for p in mine]
        assert all(p["status"]["phase"] == "Succeeded" for p in mine)
        # Exactly the objects of one run: nothing written twice, nothing half-written.
        out = f"{prefix}/out/{name}/"
        keys = list_keys(object_store, operator_bucket, out)
        expected = {f"{out}_steno/plan.json", f"{out}_steno/manifest.json",
                    *(f"{out}_steno/manifests/shard-{s:05d}.json" for s in range(shards)),
                    *(f"{out}{card}.{fmt}" for card in cards for fmt in FORMATS)}
        records = [k for k in keys if k.startswith(f"{out}_steno/records/")]
        assert len(records) == len(cards)
        assert set(keys) - set(records) == expected
        result = read_json(object_store, operator_bucket, f"{out}_steno/manifest.json")
        assert result["jobId"] == tj["metadata"]["uid"]
        assert sorted(f["uri"] for f in result["files"]) == sorted(
            f"s3://{operator_bucket}/{prefix}/in/{c}.wav" for c in cards)
        assert status["resultManifestUri"] == f"s3://{operator_bucket}/{out}_steno/manifest.json"
        assert status["progress"]["filesDone"] == len(cards)
        # Milestones announced at most once, whatever the kills interrupted.
        reasons = [e["reason"] for e in events_of(kube_api, namespace, name)]
        for reason in ("Planned", "JobCreated", "ResultsVerified"):
            assert reasons.count(reason) <= 1, (name, reasons)
    assert not watch.errors or all("Gone" in e or "410" in e for e in watch.errors), watch.errors
