"""Pods on the fake nodes run as local processes through the process kubelet."""

from __future__ import annotations

import base64
import json
import os
import sys
import textwrap
import urllib.request
from typing import Any

import pytest
from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.kubelet import ProcessKubelet
from steno_devcluster.nodes import GPU_RESOURCE, GPU_TAINT
from steno_devcluster.pytest_plugin import GPUS_PER_NODE, ClusterNodes
from steno_devcluster.waiting import wait_for

pytestmark = pytest.mark.integration

PYTHON = sys.executable
GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}
# Generous for a loaded 2-core machine; pods usually take about a second.
POD_TIMEOUT_S = 60


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "steno/local", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec},
    }


def _get_pod(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    return api.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")


def _wait_phase(api: KubeApi, namespace: str, name: str, phases: set[str]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        pod = _get_pod(api, namespace, name)
        if pod is not None and pod.get("status", {}).get("phase") in phases:
            return pod
        return None

    return wait_for(reached, POD_TIMEOUT_S, f"pod {namespace}/{name} to be {sorted(phases)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_deployment_pod_runs_as_a_process_and_becomes_ready(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    server = textwrap.dedent(
        """
        import http.server, os
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = (os.environ["POD_NAME"] + " " + os.environ["GREETING"]).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        http.server.HTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
        """
    )
    labels = {"app": "echo"}
    kube_api.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "echo",
                                "image": "steno/echo",
                                "command": [PYTHON, "-c", server],
                                "env": [
                                    {"name": "GREETING", "value": "hello from $(POD_NAME)"},
                                    _field_env("POD_IP", "status.podIP"),
                                    _field_env("POD_NAME", "metadata.name"),
                                ],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/", "port": "http"},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
    )
    deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/echo"
    wait_for(
        lambda: kube_api.get(deployment_path).get("status", {}).get("readyReplicas") == 1,
        POD_TIMEOUT_S,
        "the echo Deployment to have one ready replica",
    )
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=echo")["items"]
    assert len(pods) == 1
    pod = pods[0]
    status = pod["status"]
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True"
    assert status["phase"] == "Running"
    assert status["podIP"].startswith("127.")
    assert status["podIP"] != "127.0.0.1"
    # It really is a local process, serving on its own loopback address.
    with urllib.request.urlopen(f"http://{status['podIP']}:8080/", timeout=5) as response:
        body = response.read().decode()
    name = pod["metadata"]["name"]
    # $(POD_NAME) in GREETING is not expanded: POD_NAME is defined after it.
    assert body == f"{name} hello from $(POD_NAME)"
    container_id = status["containerStatuses"][0]["containerID"]
    assert _pid_alive(int(container_id.removeprefix("steno-process://")))


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def test_pod_sees_its_volumes_env_and_service_account(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    kube_api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"model": "tiny.en"},
        },
    )
    kube_api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "storage"},
            "data": {"key": base64.b64encode(b"s3cret").decode()},
        },
    )
    # Let the pod's default service account read ConfigMaps in its namespace.
    kube_api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "default-view"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    script = textwrap.dedent(
        """
        import json, os, ssl, urllib.request
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        token = open(sa + "/token").read()
        namespace = open(sa + "/namespace").read()
        context = ssl.create_default_context(cafile=sa + "/ca.crt")
        url = "https://{}:{}/api/v1/namespaces/{}/configmaps/settings".format(
            os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], namespace)
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(request, context=context) as response:
            from_api = json.load(response)["data"]["model"]
        print(json.dumps({
            "from_api": from_api,
            "from_file": open("/etc/steno/settings/model").read(),
            "secret_env": os.environ["STORAGE_KEY"],
            "namespace": namespace,
            "kubeconfig": os.environ.get("KUBECONFIG"),
        }))
        """
    )
    pod = _pod(
        "reader",
        [PYTHON, "-c", script],
        restartPolicy="Never",
        volumes=[{"name": "settings", "configMap": {"name": "settings"}}],
        container={
            "env": [
                {
                    "name": "STORAGE_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "storage", "key": "key"}},
                }
            ],
            "volumeMounts": [
                {"name": "settings", "mountPath": "/etc/steno/settings", "readOnly": True}
            ],
        },
    )
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    finished = _wait_phase(kube_api, namespace, "reader", {"Succeeded", "Failed"})
    output = process_kubelet.logs(namespace, "reader")
    assert finished["status"]["phase"] == "Succeeded", output
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen == {
        "from_api": "tiny.en",
        "from_file": "tiny.en",
        "secret_env": "s3cret",
        "namespace": namespace,
        "kubeconfig": None,
    }
    # The mount was private to the pod: the host has no such file.
    assert not os.path.exists("/etc/steno/settings/model")


def test_exit_codes_are_reported_and_decide_the_phase(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube_api.create(
        pods, _pod("fails", ["sh", "-c", "echo about to fail; exit 3"], restartPolicy="Never")
    )
    kube_api.create(pods, _pod("works", ["sh", "-c", "exit 0"], restartPolicy="Never"))

    failed = _wait_phase(kube_api, namespace, "fails", {"Succeeded", "Failed"})
    assert failed["status"]["phase"] == "Failed"
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert "about to fail" in process_kubelet.logs(namespace, "fails")

    succeeded = _wait_phase(kube_api, namespace, "works", {"Succeeded", "Failed"})
    assert succeeded["status"]["phase"] == "Succeeded"
    assert succeeded["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_deleting_a_pod_kills_its_process(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube_api.create(pods, _pod("sleeper", ["sleep", "600"]))
    running = _wait_phase(kube_api, namespace, "sleeper", {"Running"})
    pid = int(
        running["status"]["containerStatuses"][0]["containerID"].removeprefix("steno-process://")
    )
    assert _pid_alive(pid)

    kube_api.delete(f"{pods}/sleeper")
    wait_for(
        lambda: _get_pod(kube_api, namespace, "sleeper") is None,
        POD_TIMEOUT_S,
        "the pod to be gone",
    )
    wait_for(lambda: not _pid_alive(pid), 10, f"process {pid} to exit")


def test_gpu_pod_lands_on_a_gpu_node(
    kube_api: KubeApi, namespace: str, cluster_nodes: ClusterNodes, process_kubelet: ProcessKubelet
) -> None:
    pod = _pod(
        "gpu-job",
        ["sh", "-c", "exit 0"],
        restartPolicy="Never",
        tolerations=[GPU_TOLERATION],
        container={"resources": {"limits": {GPU_RESOURCE: "1"}}},
    )
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    finished = _wait_phase(kube_api, namespace, "gpu-job", {"Succeeded", "Failed"})
    assert finished["spec"]["nodeName"] in {node.name for node in cluster_nodes.gpu}
    assert finished["status"]["phase"] == "Succeeded"


def test_pod_without_gpu_toleration_avoids_gpu_nodes(
    kube_api: KubeApi, namespace: str, cluster_nodes: ClusterNodes, process_kubelet: ProcessKubelet
) -> None:
    kube_api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        _pod("cpu-job", ["sh", "-c", "exit 0"], restartPolicy="Never"),
    )
    finished = _wait_phase(kube_api, namespace, "cpu-job", {"Succeeded", "Failed"})
    assert finished["spec"]["nodeName"] in {node.name for node in cluster_nodes.cpu}


def test_pod_asking_for_too_many_gpus_stays_pending_with_a_scheduler_event(
    kube_api: KubeApi, namespace: str, cluster_nodes: ClusterNodes, process_kubelet: ProcessKubelet
) -> None:
    too_many = str(GPUS_PER_NODE + 1)
    pod = _pod(
        "greedy",
        ["sh", "-c", "exit 0"],
        tolerations=[GPU_TOLERATION],
        container={"resources": {"limits": {GPU_RESOURCE: too_many}}},
    )
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    def scheduler_event() -> dict[str, Any] | None:
        events = kube_api.get(
            f"/api/v1/namespaces/{namespace}/events",
            fieldSelector="involvedObject.name=greedy,reason=FailedScheduling",
        )["items"]
        return events[0] if events else None

    event = wait_for(scheduler_event, POD_TIMEOUT_S, "the scheduler's FailedScheduling event")
    assert f"Insufficient {GPU_RESOURCE}" in event["message"]
    assert event["type"] == "Warning"

    def unschedulable_condition() -> dict[str, Any] | None:
        # The scheduler writes the event and the pod's condition separately.
        pod = _get_pod(kube_api, namespace, "greedy") or {}
        conditions = pod.get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "PodScheduled"), None)

    scheduled = wait_for(unschedulable_condition, POD_TIMEOUT_S, "the PodScheduled condition")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    pod_now = _get_pod(kube_api, namespace, "greedy")
    assert pod_now is not None
    assert pod_now["status"]["phase"] == "Pending"
    assert not pod_now["spec"].get("nodeName")


def test_job_completes_through_the_job_controller(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    kube_api.create(
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "shard"},
            "spec": {
                "completions": 2,
                "parallelism": 2,
                "completionMode": "Indexed",
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "work",
                                "image": "steno/local",
                                "command": ["sh", "-c", 'test -n "$JOB_COMPLETION_INDEX"'],
                            }
                        ],
                    }
                },
            },
        },
    )

    def complete() -> bool:
        job = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/shard")
        conditions = job.get("status", {}).get("conditions") or []
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

    wait_for(complete, POD_TIMEOUT_S, "the Job to complete")
    assert (
        kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/shard")["status"]["succeeded"]
        == 2
    )


def test_init_container_output_reaches_the_main_container(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    pod = _pod(
        "staged",
        ["sh", "-c", 'test "$(cat /work/ready)" = prepared'],
        restartPolicy="Never",
        volumes=[{"name": "work", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "work", "mountPath": "/work"}]},
        initContainers=[
            {
                "name": "prepare",
                "image": "steno/local",
                "command": ["sh", "-c", "echo prepared > /work/ready"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            }
        ],
    )
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    finished = _wait_phase(kube_api, namespace, "staged", {"Succeeded", "Failed"})
    # Both containers' states and the pod's reason say which step failed.
    assert finished["status"]["phase"] == "Succeeded", (
        json.dumps(finished["status"], indent=1), process_kubelet.logs(namespace, "staged"))
    init = finished["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0


def test_crashing_container_is_restarted_with_its_last_exit_code(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", _pod("crasher", ["sh", "-c", "exit 7"]))

    def restarted_twice() -> dict[str, Any] | None:
        pod = _get_pod(kube_api, namespace, "crasher")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
        return statuses[0] if statuses[0].get("restartCount", 0) >= 2 else None

    status = wait_for(restarted_twice, POD_TIMEOUT_S, "the container to be restarted twice")
    assert status["lastState"]["terminated"]["exitCode"] == 7
    pod = _get_pod(kube_api, namespace, "crasher")
    assert pod is not None
    assert pod["status"]["phase"] == "Running"  # restartPolicy Always never ends the pod


def test_grpc_readiness_probe(
    kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    server = textwrap.dedent(
        """
        import os, time
        from concurrent import futures
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(os.environ["POD_IP"] + ":50051")
        server.start()
        time.sleep(1)  # NOT_SERVING first: the probe must wait for SERVING
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        server.wait_for_termination()
        """
    )
    pod = _pod(
        "grpc-server",
        [PYTHON, "-c", server],
        container={
            "env": [_field_env("POD_IP", "status.podIP")],
            "readinessProbe": {"grpc": {"port": 50051}, "periodSeconds": 1},
        },
    )
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    def ready() -> bool:
        found = _get_pod(kube_api, namespace, "grpc-server") or {}
        conditions = found.get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, POD_TIMEOUT_S, "the gRPC health probe to pass")


def test_kubelet_synced_every_pod_without_error(process_kubelet: ProcessKubelet) -> None:
    # Watch restarts (410 Gone) are routine; a failed pod sync is a kubelet bug.
    sync_errors = [e for e in process_kubelet.errors if not e.startswith("watch:")]
    assert sync_errors == []
