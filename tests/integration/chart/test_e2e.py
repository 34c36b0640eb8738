"""The user's whole path on the development cluster, with nothing faked but the GPUs.

1. ``helm install --wait`` the chart (operator cluster-wide, serving pool on)
   into the real control plane; the namespace enforces the Pod Security
   "restricted" profile. The process kubelet runs the operator pod, with the
   chart's ServiceAccount token (so its RBAC is the real authorizer's), and
   the serving pod, on a fake GPU node.
2. Real speech goes into SeaweedFS; a storage Secret and a TranscriptionJob
   are created with ``kubectl`` as a user would.
3. The operator plans the job and runs an Indexed Job of two shards; its pods
   run ``steno work`` as local processes with tiny.en on CPU.
4. ``kubectl get tj`` shows Running with progress, then Succeeded; the
   transcripts and the result manifest are in the bucket, checksums and words.
5. ``steno client`` gets a synchronous transcript from the serving pool of the
   same install (at the pod's IP: Services get no endpoints here), and
   ``helm test`` passes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jiwer
import pytest
import yaml
from chartkit import CHART_DIR, RESTRICTED_LABELS, harness_values, helm, values_file
from steno_devcluster.controlplane import ControlPlane
from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.kubelet import ProcessKubelet
from steno_devcluster.objectstore import ObjectStore
from steno_devcluster.waiting import wait_for
from support.speech import (
    CARDS_DIR,
    LIBRIVOX_DIR,
    Utterance,
    cards_utterances,
    librivox_utterances,
    normalize_text,
)

pytestmark = pytest.mark.integration

RELEASE = "steno"
JOB = "e2e"
IN_BUCKET = "e2e-audio"
OUT_BUCKET = "e2e-results"
SECRET = "steno-storage"
SPEECH_FILES = (  # four short real recordings (2 to 7 s), two shards of two
    CARDS_DIR / "001.wav",
    CARDS_DIR / "003.wav",
    LIBRIVOX_DIR / "sense_and_sensibility_01_austen_64kb-0880.wav",
    LIBRIVOX_DIR / "sense_and_sensibility_01_austen_64kb-0930.wav",
)
PARALLELISM = 2
FORMATS = ["json", "txt"]
INSTALL_TIMEOUT_S = 240  # operator start, tiny.en load and warm-up on two busy cores
JOB_TIMEOUT_S = 420  # planning, two worker processes (torch import, model), commit
DELETE_TIMEOUT_S = 60
POLL_S = 0.5
MAX_WER = 0.35  # tiny.en on these recordings; the same bound as the worker's own tests
STENO = Path(sys.executable).parent / "steno"
PHASE_ORDER = ("", "Pending", "Running", "Succeeded", "Failed")  # Failed never follows Succeeded


def _references() -> dict[str, str]:
    every: list[Utterance] = [*cards_utterances(), *librivox_utterances()]
    return {u.path.name: u.reference for u in every}


def _kubectl(control_plane: ControlPlane, *args: str) -> str:
    return control_plane.kubectl(*args)


def _tj(control_plane: ControlPlane, namespace: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_kubectl(control_plane, "-n", namespace, "get", "tj", JOB,
                                                 "-o", "json"))
    return loaded


def _describe(control_plane: ControlPlane, kube_api: KubeApi, kubelet: ProcessKubelet,
              namespace: str) -> str:
    """What a person would look at when the job is stuck: status, pods, operator log."""
    lines = []
    try:  # diagnostics only: whatever fails here must not hide the real failure
        lines.append(_kubectl(control_plane, "-n", namespace, "get", "tj,jobs,pods", "-o", "wide"))
        lines.append(json.dumps(_tj(control_plane, namespace).get("status"), indent=1))
    except Exception as error:
        lines.append(f"kubectl: {error}")
    for pod in kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]:
        name = pod["metadata"]["name"]
        try:
            lines.append(f"--- {name} ---\n{kubelet.logs(namespace, name)[-2500:]}")
        except KeyError:
            lines.append(f"--- {name}: no log (not on the process kubelet)")
    return "\n".join(lines)


def _job_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "steno.dev/v1alpha1",
        "kind": "TranscriptionJob",
        "metadata": {"name": JOB, "namespace": namespace},
        "spec": {
            "input": {"prefix": f"s3://{IN_BUCKET}/{namespace}/"},
            "output": {"uri": f"s3://{OUT_BUCKET}/{namespace}/", "formats": FORMATS},
            "model": "tiny.en",
            "language": "en",
            "parallelism": PARALLELISM,
            "storageSecretRef": {"name": SECRET},
        },
    }


def test_user_path(control_plane: ControlPlane, process_kubelet: ProcessKubelet,
                   kube_api: KubeApi, object_store: ObjectStore, namespace: str,
                   tmp_path: Path) -> None:
    references = _references()
    s3 = object_store.boto3_client()
    for bucket in (IN_BUCKET, OUT_BUCKET):
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            object_store.create_bucket(bucket)
    for path in SPEECH_FILES:
        s3.put_object(Bucket=IN_BUCKET, Key=f"{namespace}/{path.parent.name}/{path.name}",
                      Body=path.read_bytes())

    kube_api.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED_LABELS}})
    store = object_store.environment()
    _kubectl(control_plane, "-n", namespace, "create", "secret", "generic", SECRET,
             *(f"--from-literal={key}={store[key]}" for key in
               ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_REGION")))

    # 1. helm install --wait: the operator (every namespace) and the serving pool.
    values = harness_values(watch_namespaces=[], pool=True)
    values_path = values_file(values, tmp_path)
    kubeconfig = control_plane.admin_kubeconfig
    started = time.monotonic()
    helm("install", RELEASE, str(CHART_DIR), "--namespace", namespace, "-f", str(values_path),
         "--wait", f"--timeout={INSTALL_TIMEOUT_S}s", kubeconfig=kubeconfig,
         timeout_s=INSTALL_TIMEOUT_S + 30)
    install_s = time.monotonic() - started
    try:
        pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
        by_component = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in pods}
        assert set(by_component) == {"operator", "serving"}, list(by_component)
        serving_pod = by_component["serving"]
        assert serving_pod["spec"]["nodeName"].startswith("gpu-node-")  # GPU placement held

        # 2.-4. kubectl apply a job; watch it as `kubectl get tj` shows it.
        job_path = tmp_path / "job.yaml"
        job_path.write_text(yaml.safe_dump(_job_manifest(namespace)))
        _kubectl(control_plane, "apply", "-f", str(job_path))
        seen: list[tuple[str, str]] = []  # (phase, files) as observed, in order
        running_table = ""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        job_started = time.monotonic()
        while True:
            status = _tj(control_plane, namespace).get("status") or {}
            phase = status.get("phase", "")
            files = (status.get("progress") or {}).get("files", "")
            if not seen or seen[-1] != (phase, files):
                seen.append((phase, files))
            if phase == "Running" and files and not running_table:
                running_table = _kubectl(control_plane, "-n", namespace, "get", "tj")
            if phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"job not finished in {JOB_TIMEOUT_S} s; seen {seen}\n"
                            + _describe(control_plane, kube_api, process_kubelet, namespace))
            time.sleep(POLL_S)
        job_s = time.monotonic() - job_started
        assert phase == "Succeeded", (
            f"{seen}\n" + _describe(control_plane, kube_api, process_kubelet, namespace))
        assert "Running" in [p for p, _ in seen], seen
        # A user watching `kubectl get tj -w` never sees the job go back: neither its
        # phase nor its files done. Checked last, so every other check runs first.
        done_counts = [int(files.split("/")[0]) for _, files in seen if files]
        phase_ranks = [PHASE_ORDER.index(p) for p, _ in seen]
        backwards = [what for what, ok in (("files done", done_counts == sorted(done_counts)),
                                          ("phase", phase_ranks == sorted(phase_ranks)))
                     if not ok]
        header, row = running_table.splitlines()[:2]
        assert header.split()[:4] == ["NAME", "PHASE", "PROGRESS", "FILES"], running_table
        assert row.split()[0] == JOB and row.split()[1] == "Running"
        assert row.split()[3].endswith(f"/{len(SPEECH_FILES)}"), running_table
        final_table = _kubectl(control_plane, "-n", namespace, "get", "tj")
        assert final_table.splitlines()[1].split()[1:4] == [
            "Succeeded", "100", f"{len(SPEECH_FILES)}/{len(SPEECH_FILES)}"], final_table

        status = _tj(control_plane, namespace)["status"]
        progress = status["progress"]
        assert (progress["filesDone"], progress["filesTotal"], progress["filesFailed"]) == (4, 4, 0)
        assert (progress["shardsDone"], progress["shardsTotal"]) == (PARALLELISM, PARALLELISM)
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Succeeded"]["status"] == "True"
        prefix = f"s3://{OUT_BUCKET}/{namespace}/"
        assert status["resultManifestUri"] == f"{prefix}_steno/manifest.json"

        # The bucket: every transcript, the shard manifests, the result manifest last.
        def read(uri: str) -> bytes:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body

        manifest = json.loads(read(status["resultManifestUri"]))
        assert manifest["summary"]["files"] == manifest["summary"]["succeeded"] == 4
        assert manifest["job"] == {"namespace": namespace, "name": JOB}
        assert len(manifest["shards"]) == PARALLELISM
        hypotheses, expected = [], []
        for entry in manifest["files"]:
            assert entry["status"] == "succeeded", entry
            assert [o["format"] for o in entry["outputs"]] == FORMATS
            for output in entry["outputs"]:
                data = read(output["uri"])
                assert hashlib.sha256(data).hexdigest() == output["sha256"], output
                assert output["uri"].startswith(prefix)
            transcript = json.loads(read(entry["outputs"][0]["uri"]))
            hypotheses.append(normalize_text(transcript["text"]))
            expected.append(normalize_text(references[entry["uri"].rsplit("/", 1)[1]]))
        error_rate = jiwer.wer(expected, hypotheses)
        assert error_rate < MAX_WER, list(zip(expected, hypotheses, strict=True))
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=OUT_BUCKET,
                                                     Prefix=f"{namespace}/")["Contents"]}
        stems = {f"{namespace}/{p.parent.name}/{p.stem}" for p in SPEECH_FILES}
        assert {f"{stem}.{fmt}" for stem in stems for fmt in FORMATS} <= keys
        assert f"{namespace}/_steno/manifest.json" in keys

        # 5. A synchronous transcript from the serving pool, with steno's own client.
        target = f"{serving_pod['status']['podIP']}:{values['serving']['port']}"
        health = subprocess.run([str(STENO), "client", "health", "--target", target,
                                 "--timeout-s", "30"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr
        call = subprocess.run([str(STENO), "client", "transcribe", str(SPEECH_FILES[2]),
                               "--target", target, "--format", "json", "--timeout-s", "120"],
                              capture_output=True, text=True, timeout=180, check=False)
        assert call.returncode == 0, call.stderr
        pooled = normalize_text(json.loads(call.stdout)["text"])
        reference = normalize_text(references[SPEECH_FILES[2].name])
        assert jiwer.wer(reference, pooled) < MAX_WER, (reference, pooled)

        # `helm test` of the same install, aimed at the pod (no Service routing here).
        helm("upgrade", RELEASE, str(CHART_DIR), "--namespace", namespace, "--reuse-values",
             "--set", f"tests.target={target}", "--wait", "--timeout=60s",
             kubeconfig=kubeconfig, timeout_s=90)
        helm("test", RELEASE, "--namespace", namespace, "--timeout=120s",
             kubeconfig=kubeconfig, timeout_s=150)
        print(f"\ninstall --wait {install_s:.0f} s; job {job_s:.0f} s; phases {seen}; "
              f"WER {error_rate:.3f}")
        assert backwards == [], f"{' and '.join(backwards)} went backwards: {seen}"
    finally:
        # The operator must still run to remove its finalizer from the job.
        job_url = f"/apis/steno.dev/v1alpha1/namespaces/{namespace}/transcriptionjobs/{JOB}"
        if kube_api.get_or_none(job_url) is not None:
            kube_api.delete(job_url)
            wait_for(lambda: kube_api.get_or_none(job_url) is None, DELETE_TIMEOUT_S,
                     "the TranscriptionJob to be deleted")
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout=120s",
             kubeconfig=kubeconfig, timeout_s=150)
