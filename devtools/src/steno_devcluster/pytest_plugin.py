"""pytest fixtures for a real Kubernetes control plane, nodes, kubelet and S3.

Register with ``pytest_plugins = ["steno_devcluster.pytest_plugin"]``.
Binaries come from the cache filled by ``python -m steno_devcluster install``;
when they are missing, the fixtures *fail* with that instruction (a skipped
cluster test would read as a pass).

Session fixtures (one cluster per test session — starting one costs seconds):

- ``control_plane``: :class:`~steno_devcluster.controlplane.ControlPlane`
  (``admin_kubeconfig``, ``server``, ``admin_api()``, ``kubectl(...)``,
  ``restart_controller_manager()``); CRD manifests named by the ini option
  ``devcluster_crds`` (paths or globs, relative to the rootdir) are
  installed before its controller manager starts;
- ``kubeconfig``: the admin kubeconfig path; ``kube_api``: a ready
  :class:`~steno_devcluster.kubeapi.KubeApi` as admin;
  ``kubernetes_api_client``: the same as a ``kubernetes`` package ApiClient;
- ``cluster_nodes``: two GPU nodes (4 ``nvidia.com/gpu`` each, GPU taint) and
  one CPU node, Ready;
- ``process_kubelet``: runs the pods of those nodes as local processes;
- ``kwok_controller``: kwok, which simulates the nodes registered with
  ``register_node(kube_api, NodeSpec(..., kwok=True))`` and their pods;
- ``object_store``: SeaweedFS with credentials (``endpoint``,
  ``access_key``/``secret_key``, ``environment()``, ``create_bucket()``,
  ``boto3_client()``).

Function fixture ``namespace``: a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import glob
import importlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from steno_devcluster.binaries import BinaryNotFoundError, Toolbox
from steno_devcluster.cache import Cache
from steno_devcluster.controlplane import HOST, ControlPlane, ControlPlaneOptions
from steno_devcluster.kubeapi import ApiError, KubeApi
from steno_devcluster.kubelet import KubeletOptions, ProcessKubelet
from steno_devcluster.kwok import KwokController, stages_path
from steno_devcluster.nodes import NodeSpec, cpu_node, gpu_node, register_node
from steno_devcluster.objectstore import ObjectStore, ObjectStoreOptions
from steno_devcluster.podenv import ApiServerAddress

CRDS_INI = "devcluster_crds"
# Node shape of the session cluster.
GPU_NODE_COUNT = 2
GPUS_PER_NODE = 4
CPU_NODE_COUNT = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        CRDS_INI,
        type="linelist",
        default=[],
        help="CRD manifests (paths or globs, relative to rootdir) installed into the "
        "devcluster before its controller manager starts",
    )


@dataclass(frozen=True)
class ClusterNodes:
    """The session's fake nodes."""

    gpu: tuple[NodeSpec, ...]
    cpu: tuple[NodeSpec, ...]

    @property
    def all(self) -> tuple[NodeSpec, ...]:
        return (*self.gpu, *self.cpu)


def _crd_manifests(config: pytest.Config) -> tuple[Path, ...]:
    found: list[Path] = []
    for pattern in config.getini(CRDS_INI):
        matches = sorted(glob.glob(str(config.rootpath / pattern)))
        if not matches:
            raise pytest.UsageError(f"{CRDS_INI}: {pattern!r} matches no file")
        found.extend(Path(match) for match in matches)
    return tuple(found)


@pytest.fixture(scope="session")
def devcluster_cache() -> Cache:
    return Cache.default()


@pytest.fixture(scope="session")
def devcluster_toolbox(devcluster_cache: Cache) -> Toolbox:
    try:
        return Toolbox.locate(devcluster_cache)
    except BinaryNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def control_plane(
    devcluster_toolbox: Toolbox,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[ControlPlane]:
    options = ControlPlaneOptions(
        state_dir=tmp_path_factory.mktemp("control-plane"),
        crd_manifests=_crd_manifests(pytestconfig),
    )
    with ControlPlane(devcluster_toolbox, options) as started:
        yield started


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.admin_kubeconfig


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> KubeApi:
    return control_plane.admin_api()


@pytest.fixture(scope="session")
def cluster_nodes(kube_api: KubeApi) -> ClusterNodes:
    nodes = ClusterNodes(
        gpu=tuple(gpu_node(f"gpu-node-{i}", gpus=GPUS_PER_NODE) for i in range(GPU_NODE_COUNT)),
        cpu=tuple(cpu_node(f"cpu-node-{i}") for i in range(CPU_NODE_COUNT)),
    )
    for spec in nodes.all:
        register_node(kube_api, spec)
    return nodes


@pytest.fixture(scope="session")
def process_kubelet(
    control_plane: ControlPlane,
    cluster_nodes: ClusterNodes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProcessKubelet]:
    options = KubeletOptions(
        node_names=tuple(spec.name for spec in cluster_nodes.all),
        state_dir=tmp_path_factory.mktemp("kubelet"),
        api_server=ApiServerAddress(HOST, control_plane.ports.apiserver),
    )
    with ProcessKubelet(control_plane.kubelet_api(), options) as kubelet:
        yield kubelet


@pytest.fixture(scope="session")
def kwok_controller(
    control_plane: ControlPlane,
    devcluster_toolbox: Toolbox,
    devcluster_cache: Cache,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KwokController]:
    stages = stages_path(devcluster_cache)
    if not stages.is_file():
        pytest.fail(f"{stages} is missing; run `python -m steno_devcluster install`", False)
    with KwokController(
        devcluster_toolbox.kwok,
        stages,
        control_plane.admin_kubeconfig,
        tmp_path_factory.mktemp("kwok"),
    ) as controller:
        yield controller


@pytest.fixture(scope="session")
def object_store(
    devcluster_toolbox: Toolbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectStore]:
    options = ObjectStoreOptions(state_dir=tmp_path_factory.mktemp("seaweedfs"))
    with ObjectStore(devcluster_toolbox.weed, options) as store:
        yield store


@pytest.fixture
def namespace(kube_api: KubeApi) -> Iterator[str]:
    """A namespace of its own for one test; deleted (not awaited) afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    kube_api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    try:
        kube_api.delete(f"/api/v1/namespaces/{name}")
    except ApiError as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def kubernetes_api_client(kubeconfig: Path) -> Any:
    """A ``kubernetes`` package ApiClient for the admin (needs that package)."""
    try:
        kubernetes_config = importlib.import_module("kubernetes.config")
    except ImportError as exc:
        pytest.fail(f"kubernetes_api_client needs the kubernetes package: {exc}", False)
    return kubernetes_config.new_client_from_config(config_file=str(kubeconfig))
