"""A whole development cluster: control plane, fake nodes, process kubelet.

This is what ``python -m steno_devcluster up`` runs and what the pytest
fixtures build piece by piece: the control plane first, then the Node
objects (GPU nodes carrying ``nvidia.com/gpu`` and the GPU taint, and CPU
nodes), then one process kubelet that runs the pods of all of them; kwok
only when asked for (scale tests).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from steno_devcluster.binaries import Toolbox
from steno_devcluster.cache import Cache
from steno_devcluster.controlplane import HOST, ControlPlane, ControlPlaneOptions
from steno_devcluster.kubelet import KubeletOptions, ProcessKubelet
from steno_devcluster.kwok import KwokController, stages_path
from steno_devcluster.nodes import NodeSpec, cpu_node, gpu_node, register_node
from steno_devcluster.podenv import ApiServerAddress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterOptions:
    """Shape of a development cluster."""

    state_dir: Path  # everything the cluster writes
    gpu_nodes: int = 2  # process-kubelet nodes with nvidia.com/gpu
    gpus_per_node: int = 4  # nvidia.com/gpu capacity of each GPU node
    cpu_nodes: int = 1  # process-kubelet nodes without GPUs
    kwok: bool = False  # also run kwok (for simulated nodes)
    crd_manifests: tuple[Path, ...] = ()  # applied before the controller manager starts
    ready_timeout_s: float = 60.0  # bound on the control plane's start
    extra_nodes: tuple[NodeSpec, ...] = ()  # more nodes, as given


def default_node_specs(options: ClusterOptions) -> list[NodeSpec]:
    nodes = [
        gpu_node(f"gpu-node-{i}", gpus=options.gpus_per_node) for i in range(options.gpu_nodes)
    ]
    nodes += [cpu_node(f"cpu-node-{i}") for i in range(options.cpu_nodes)]
    return nodes + list(options.extra_nodes)


class DevCluster:
    """Starts and stops the pieces in order; use as a context manager."""

    def __init__(self, toolbox: Toolbox, cache: Cache, options: ClusterOptions) -> None:
        self.toolbox = toolbox
        self.cache = cache
        self.options = options
        self.control_plane = ControlPlane(
            toolbox,
            ControlPlaneOptions(
                state_dir=options.state_dir / "control-plane",
                crd_manifests=options.crd_manifests,
                ready_timeout_s=options.ready_timeout_s,
            ),
        )
        self.nodes: list[NodeSpec] = []
        self.kubelet: ProcessKubelet | None = None
        self.kwok: KwokController | None = None
        self.startup_seconds = 0.0

    def start(self) -> DevCluster:
        started = time.monotonic()
        try:
            self.control_plane.start()
            api = self.control_plane.admin_api()
            self.nodes = default_node_specs(self.options)
            for spec in self.nodes:
                register_node(api, spec)
            self.kubelet = ProcessKubelet(
                self.control_plane.kubelet_api(),
                KubeletOptions(
                    node_names=tuple(spec.name for spec in self.nodes if not spec.kwok),
                    state_dir=self.options.state_dir / "kubelet",
                    api_server=ApiServerAddress(HOST, self.control_plane.ports.apiserver),
                ),
            ).start()
            if self.options.kwok:
                self.kwok = KwokController(
                    self.toolbox.kwok,
                    stages_path(self.cache),
                    self.control_plane.admin_kubeconfig,
                    self.options.state_dir / "kwok",
                ).start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Kubelet first (its pods need the API server to stop cleanly), then the rest."""
        if self.kwok is not None:
            self.kwok.stop()
            self.kwok = None
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        self.control_plane.stop()

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
