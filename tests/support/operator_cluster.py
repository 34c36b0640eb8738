"""Helpers for the operator's cluster tests (fixtures: tests/integration/operator/conftest.py).

The operator against the development cluster: a real control plane, nodes, kubelet and S3.

The operator runs as a subprocess (``python -m steno_operator``), so tests can
kill it like a crashed pod would be; its pods run through the process kubelet
with the real worker command (``steno work``, tiny.en on CPU) on inputs in the
SeaweedFS fixture. Each test gets its own namespace and its own operator
watching only that namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.objectstore import ObjectStore
from steno_devcluster.processes import free_port
from steno_devcluster.waiting import wait_for
from steno_inference.cache import default_cache_dir
from steno_operator.spec import API_VERSION, GROUP, PLURAL, VERSION

BUCKET = "steno-operator"
SECRET = "storage"
OPERATOR_STOP_S = 10.0  # SIGTERM → SIGKILL
TEARDOWN_DELETE_S = 60.0  # deleting the test's jobs while the operator still runs
POLL_S = 0.2
READY_TIMEOUT_S = 60.0
READY_LINE = "steno-operator: worker image"  # logged right before kopf.run


def tj_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return base if name is None else f"{base}/{name}"


def transcription_job(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "TranscriptionJob", "metadata": {"name": name},
            "spec": spec}


@dataclass
class OperatorProcess:
    """``python -m steno_operator`` for one namespace; restartable and killable."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    metrics_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.starts += 1
        self.metrics_port = free_port("127.0.0.1")
        env = {**self.env, "STENO_METRICS_PORT": str(self.metrics_port), **self.extra_env}
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "steno_operator", "--kubeconfig", str(self.kubeconfig),
                 "--namespace", self.namespace],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wait until this start has built its clients and handed over to Kopf; seconds waited."""
        began = time.monotonic()
        marker = f"===== start {self.starts} ====="

        def ready() -> bool:
            text = self.log()
            return READY_LINE in text[text.rfind(marker):]

        wait_for(ready, timeout_s, f"operator start {self.starts} to be ready",
                 describe=lambda: self.log()[-2000:])
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like an OOM kill or a lost node."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=OPERATOR_STOP_S)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=OPERATOR_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=OPERATOR_STOP_S)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def operator_env() -> dict[str, str]:
    steno = Path(sys.executable).parent / "steno"
    worker_env = {
        # The pods find the converted tiny.en where the session converted it.
        "STENO_CACHE_DIR": str(default_cache_dir()),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update({
        "STENO_WORKER_IMAGE": "steno/local:dev",  # the process kubelet runs commands, not images
        "STENO_WORKER_COMMAND": json.dumps([str(steno), "work"]),
        "STENO_WORKER_ARGS": json.dumps(["--device", "cpu"]),
        "STENO_WORKER_ENV": json.dumps(worker_env),
        "STENO_WORKER_CPU": "100m",
        "STENO_WORKER_MEMORY": "2Gi",
        "STENO_ACTIVE_POLL_SECONDS": "1",
        "STENO_PROGRESS_PATCH_SECONDS": "1",
        "STENO_RESYNC_SECONDS": "5",
        "STENO_HEALTH_PORT": "0",
        "OMP_WAIT_POLICY": "PASSIVE",
    })
    env.pop("KUBECONFIG", None)  # the flag says which cluster
    return env


def wait_phase(kube_api: KubeApi, namespace: str, name: str, phases: set[str], timeout_s: float,
               operator: OperatorProcess | None = None) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = kube_api.get_or_none(tj_path(namespace, name))
        if job is not None and (job.get("status") or {}).get("phase") in phases:
            return job
        return None

    def describe() -> str:
        job = kube_api.get_or_none(tj_path(namespace, name))
        status = json.dumps((job or {}).get("status"), indent=1)
        pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods").get("items", [])
        pod_lines = [f"{p['metadata']['name']}: {p['status'].get('phase')} "
                     f"{p['status'].get('conditions')}" for p in pods]
        log = operator.log()[-4000:] if operator is not None else ""
        return f"status: {status}\npods:\n" + "\n".join(pod_lines) + f"\noperator log:\n{log}"

    return wait_for(reached, timeout_s, f"{namespace}/{name} to be {sorted(phases)}",
                    interval_s=POLL_S, describe=describe)


def events_of(kube_api: KubeApi, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube_api.get(f"/api/v1/namespaces/{namespace}/events",
                        fieldSelector=f"involvedObject.name={name},"
                                      "involvedObject.kind=TranscriptionJob")["items"]


def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c["type"] == kind), None)


def list_keys(store: ObjectStore, bucket: str, prefix: str) -> list[str]:
    client = store.boto3_client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def read_json(store: ObjectStore, bucket: str, key: str) -> Any:
    return json.loads(store.get_object(bucket, key))


def elapsed(since: float) -> float:
    return time.monotonic() - since
