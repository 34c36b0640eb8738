"""The controller manager's garbage collector deletes what an owner leaves behind."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from steno_devcluster.controlplane import ControlPlane
from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.kubelet import ProcessKubelet
from steno_devcluster.processes import log_tail
from steno_devcluster.waiting import wait_for

pytestmark = pytest.mark.integration

GC_TIMEOUT_S = 60
OWNER_GROUP = "gc.test.steno.dev"


def _owned_pod(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "steno/local",
                    "command": [sys.executable, "-c", "import time; time.sleep(600)"],
                }
            ],
        },
    }


def _describe(api: KubeApi, path: str, control_plane: ControlPlane) -> str:
    pod = api.get_or_none(path)
    state = (
        "gone"
        if pod is None
        else json.dumps({"metadata": pod["metadata"], "status": pod.get("status")}, indent=1)
    )
    log = control_plane.logs_dir / "kube-controller-manager.log"
    gc_lines = [line for line in log_tail(log, 2000).splitlines() if "garbage" in line.lower()][
        -20:
    ]
    return f"pod: {state}\ncontroller manager (garbage collector):\n" + "\n".join(gc_lines)


def _wait_running(api: KubeApi, path: str, control_plane: ControlPlane) -> None:
    wait_for(
        lambda: api.get(path).get("status", {}).get("phase") == "Running",
        GC_TIMEOUT_S,
        f"{path} to run",
        describe=lambda: _describe(api, path, control_plane),
    )


def test_deleting_the_owner_deletes_the_owned_pod(
    control_plane: ControlPlane, kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    owner = kube_api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    owner["apiVersion"], owner["kind"] = "v1", "ConfigMap"
    pod_path = f"/api/v1/namespaces/{namespace}/pods/owned"
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", _owned_pod("owned", owner))
    _wait_running(kube_api, pod_path, control_plane)

    kube_api.delete(
        f"/api/v1/namespaces/{namespace}/configmaps/owner", {"propagationPolicy": "Background"}
    )
    wait_for(
        lambda: kube_api.get_or_none(pod_path) is None,
        GC_TIMEOUT_S,
        "the garbage collector to delete the owned pod",
        describe=lambda: _describe(kube_api, pod_path, control_plane),
    )


def test_custom_resource_owner_after_controller_manager_restart(
    control_plane: ControlPlane, kube_api: KubeApi, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    """A CRD created after start-up: restarting the controller manager makes the
    garbage collector know it at once (it re-reads discovery only every ~30 s)."""
    crd_name = f"owners.{OWNER_GROUP}"
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}"
    if kube_api.get_or_none(crd_path) is None:
        kube_api.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": crd_name},
                "spec": {
                    "group": OWNER_GROUP,
                    "scope": "Namespaced",
                    "names": {"plural": "owners", "singular": "owner", "kind": "Owner"},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    ],
                },
            },
        )
    owners = f"/apis/{OWNER_GROUP}/v1/namespaces/{namespace}/owners"
    owner = wait_for(
        lambda: _try_create(
            kube_api,
            owners,
            {"apiVersion": f"{OWNER_GROUP}/v1", "kind": "Owner", "metadata": {"name": "job"}},
        ),
        30,
        "the Owner resource to be served",
    )
    control_plane.restart_controller_manager()

    pod_path = f"/api/v1/namespaces/{namespace}/pods/owned-by-cr"
    kube_api.create(f"/api/v1/namespaces/{namespace}/pods", _owned_pod("owned-by-cr", owner))
    _wait_running(kube_api, pod_path, control_plane)
    kube_api.delete(f"{owners}/job", {"propagationPolicy": "Background"})
    # Well under the ~30 s discovery resync: the restart is what made it fast.
    wait_for(
        lambda: kube_api.get_or_none(pod_path) is None,
        20,
        "the garbage collector to delete the pod owned by a custom resource",
        describe=lambda: _describe(kube_api, pod_path, control_plane),
    )


def _try_create(api: KubeApi, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    from steno_devcluster.kubeapi import ApiError

    try:
        return api.create(path, body)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
