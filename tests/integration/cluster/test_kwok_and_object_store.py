"""kwok simulates many GPU nodes and pods; SeaweedFS serves S3 with credentials on."""

from __future__ import annotations

import pytest
from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.kwok import KwokController
from steno_devcluster.nodes import GPU_RESOURCE, GPU_TAINT, NodeSpec, delete_node, register_node
from steno_devcluster.objectstore import ObjectStore, S3Signer
from steno_devcluster.waiting import wait_for

pytestmark = pytest.mark.integration

KWOK_NODES = 20
KWOK_GPUS_PER_NODE = 8
# One pod per GPU on every simulated node: the scheduler must pack them exactly.
KWOK_PODS = KWOK_NODES * KWOK_GPUS_PER_NODE
SCALE_TIMEOUT_S = 180


def test_kwok_runs_a_gpu_deployment_across_simulated_nodes(
    kube_api: KubeApi, namespace: str, kwok_controller: KwokController
) -> None:
    specs = [
        NodeSpec(name=f"kwok-gpu-{i}", gpus=KWOK_GPUS_PER_NODE, kwok=True)
        for i in range(KWOK_NODES)
    ]
    try:
        for spec in specs:
            register_node(kube_api, spec)

        def ready_nodes() -> bool:
            nodes = kube_api.get("/api/v1/nodes", labelSelector="type=kwok")["items"]
            ready = [
                n
                for n in nodes
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n["status"].get("conditions") or []
                )
                and n["status"]["allocatable"].get(GPU_RESOURCE) == str(KWOK_GPUS_PER_NODE)
            ]
            return len(ready) == KWOK_NODES

        wait_for(ready_nodes, SCALE_TIMEOUT_S, f"{KWOK_NODES} kwok nodes to be Ready with GPUs")
        labels = {"app": "scale"}
        kube_api.create(
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "scale"},
                "spec": {
                    "replicas": KWOK_PODS,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {"type": "kwok"},
                            "tolerations": [
                                {
                                    "key": GPU_TAINT["key"],
                                    "operator": "Exists",
                                    "effect": "NoSchedule",
                                }
                            ],
                            "containers": [
                                {
                                    "name": "worker",
                                    "image": "steno/inference",
                                    "resources": {"limits": {GPU_RESOURCE: "1"}},
                                }
                            ],
                        },
                    },
                },
            },
        )
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/scale"
        wait_for(
            lambda: kube_api.get(path).get("status", {}).get("readyReplicas") == KWOK_PODS,
            SCALE_TIMEOUT_S,
            f"{KWOK_PODS} simulated pods to be Ready",
        )
        pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=scale")[
            "items"
        ]
        per_node: dict[str, int] = {}
        for pod in pods:
            per_node[pod["spec"]["nodeName"]] = per_node.get(pod["spec"]["nodeName"], 0) + 1
        # Every GPU used exactly once.
        assert per_node == {spec.name: KWOK_GPUS_PER_NODE for spec in specs}
        kube_api.delete(path, {"propagationPolicy": "Foreground"})
        wait_for(
            lambda: kube_api.get_or_none(path) is None,
            SCALE_TIMEOUT_S,
            "the Deployment and its simulated pods to be deleted",
        )
    finally:
        for spec in specs:
            delete_node(kube_api, spec.name)
    kwok_controller.check_alive()


def test_object_store_round_trip_with_credentials(object_store: ObjectStore) -> None:
    object_store.create_bucket("steno-test")
    object_store.put_object("steno-test", "audio/a.txt", b"hello")
    assert object_store.get_object("steno-test", "audio/a.txt") == b"hello"

    wrong_secret = S3Signer(object_store.access_key, object_store.secret_key + "x")
    refused = object_store.request("GET", "/steno-test/audio/a.txt", signer=wrong_secret)
    assert refused.status == 403
    unknown_key = S3Signer("nobody", object_store.secret_key)
    assert object_store.request("GET", "/steno-test/audio/a.txt", signer=unknown_key).status == 403
    assert object_store.environment()["AWS_ENDPOINT_URL_S3"] == object_store.endpoint
