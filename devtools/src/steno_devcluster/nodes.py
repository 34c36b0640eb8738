"""Fake Node objects: GPU nodes and CPU nodes the scheduler can place pods on.

A Node here is only an API object; what runs its pods is either the process
kubelet (:mod:`steno_devcluster.kubelet`) or kwok (:mod:`steno_devcluster.kwok`).

Registration does what a real kubelet's first status update does:

- create the Node with the usual labels (hostname, os, arch; on GPU nodes
  the NVIDIA GPU feature-discovery labels) and, on GPU nodes, the usual GPU
  taint ``nvidia.com/gpu=present:NoSchedule``, so only pods that tolerate it
  land there;
- write ``status``: capacity and allocatable (``nvidia.com/gpu`` on GPU
  nodes), a ``Ready`` condition, addresses and node info;
- remove ``node.kubernetes.io/not-ready``, which the ``TaintNodesByCondition``
  admission plugin puts on every new Node. Normally the node lifecycle
  controller removes it once the node is Ready; that controller is off here
  (it would declare heartbeat-less nodes unreachable and evict their pods).

kwok nodes get the ``kwok.x-k8s.io/node: fake`` annotation and kwok keeps
their status; registration only sets capacity and removes the taint.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from steno_devcluster import versions
from steno_devcluster.kubeapi import ApiError, JsonObject, KubeApi

GPU_RESOURCE = "nvidia.com/gpu"
# The taint GPU node pools usually carry (GKE, EKS and the NVIDIA operator's docs).
GPU_TAINT: Mapping[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
NOT_READY_TAINT_KEY = "node.kubernetes.io/not-ready"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
# The label this package puts on every Node it registers (for cleanup and selection).
MANAGED_BY_LABEL = "steno.dev/devcluster-node"
# A Node accepts pods in this number by default (kubelet's --max-pods).
DEFAULT_MAX_PODS = 110
# Writes to a new Node can race its admission; retry a conflict this often.
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class NodeSpec:
    """One fake node."""

    name: str
    cpu: str = "8"  # capacity, Kubernetes quantity
    memory: str = "32Gi"  # capacity, Kubernetes quantity
    gpus: int = 0  # nvidia.com/gpu capacity; > 0 also adds the GPU taint and labels
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"  # nvidia.com/gpu.product label
    gpu_memory_mib: int = 81559  # nvidia.com/gpu.memory label (an H100 80GB)
    max_pods: int = DEFAULT_MAX_PODS
    labels: Mapping[str, str] = field(default_factory=dict)  # added to the defaults
    kwok: bool = False  # simulated by kwok instead of the process kubelet
    address: str = "127.0.0.1"  # InternalIP (the pods' hostIP)

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


def gpu_node(name: str, gpus: int = 8) -> NodeSpec:
    """A GPU node with *gpus* ``nvidia.com/gpu`` (other fields: build a NodeSpec)."""
    return NodeSpec(name=name, gpus=gpus)


def cpu_node(name: str) -> NodeSpec:
    return NodeSpec(name=name)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_labels(spec: NodeSpec) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        MANAGED_BY_LABEL: "kwok" if spec.kwok else "process-kubelet",
    }
    if spec.is_gpu:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(spec.gpus),
            "nvidia.com/gpu.product": spec.gpu_product,
            "nvidia.com/gpu.memory": str(spec.gpu_memory_mib),
        }
    if spec.kwok:
        labels["type"] = "kwok"
    return labels | dict(spec.labels)


def node_manifest(spec: NodeSpec) -> JsonObject:
    metadata: JsonObject = {"name": spec.name, "labels": node_labels(spec)}
    if spec.kwok:
        metadata["annotations"] = {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE}
    taints = [dict(GPU_TAINT)] if spec.is_gpu else []
    return {"apiVersion": "v1", "kind": "Node", "metadata": metadata, "spec": {"taints": taints}}


def node_resources(spec: NodeSpec) -> dict[str, str]:
    resources = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": str(spec.max_pods),
        "ephemeral-storage": "100Gi",
    }
    if spec.is_gpu:
        resources[GPU_RESOURCE] = str(spec.gpus)
    return resources


def node_status(spec: NodeSpec) -> JsonObject:
    now = _now()

    def condition(kind: str, status: str, reason: str, message: str) -> JsonObject:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": node_resources(spec),
        "allocatable": node_resources(spec),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "fake node"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "fake node"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "fake node"),
            condition("Ready", "True", "KubeletReady", "steno process kubelet is posting"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": spec.address},
            {"type": "Hostname", "address": spec.name},
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "osImage": "steno devcluster",
            "kernelVersion": "",
            "kubeletVersion": versions.KUBERNETES_VERSION,
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "steno-process://1",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def _node_path(name: str | None = None) -> str:
    return "/api/v1/nodes" + (f"/{name}" if name else "")


def remove_not_ready_taint(api: KubeApi, name: str) -> None:
    """Drop the admission-added not-ready taint (optimistic concurrency, retried)."""
    for _ in range(CONFLICT_RETRIES):
        node = api.get(_node_path(name))
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != NOT_READY_TAINT_KEY]
        if len(kept) == len(taints):
            return
        node["spec"]["taints"] = kept
        try:
            api.replace(_node_path(name), node)
            return
        except ApiError as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"could not remove {NOT_READY_TAINT_KEY} from node {name}")


def register_node(api: KubeApi, spec: NodeSpec) -> JsonObject:
    """Create (or refresh) a Node that the scheduler can use at once."""
    try:
        api.create(_node_path(), node_manifest(spec))
    except ApiError as exc:
        if exc.status != 409:
            raise
    if spec.kwok:
        # kwok owns the conditions; only the resources are ours to set.
        resources = node_resources(spec)
        api.patch(
            _node_path(spec.name) + "/status",
            {"status": {"capacity": resources, "allocatable": resources}},
        )
    else:
        api.patch(_node_path(spec.name) + "/status", {"status": node_status(spec)})
    remove_not_ready_taint(api, spec.name)
    return api.get(_node_path(spec.name))


def delete_node(api: KubeApi, name: str) -> None:
    try:
        api.delete(_node_path(name))
    except ApiError as exc:
        if exc.status != 404:
            raise
