"""kwok: many simulated nodes and pods, for scale tests.

kwok watches the Nodes it manages (here: those annotated
``kwok.x-k8s.io/node: fake``, see :mod:`steno_devcluster.nodes`) and the
pods bound to them, and moves them through *stages*: a node becomes Ready
and keeps a heartbeat; a pod becomes Running and Ready at once, a Job's pod
completes, a deleted pod goes away. Nothing runs — it exercises the control
plane, the scheduler and the operator at a scale no machine could run.

kwok ships its stages as YAML in its module (``kustomize/stage/…``), not in
the binary; the install step copies the "fast" set into the versioned cache
folder as one ``stages.yaml`` that the controller loads with ``--config``.
The process kubelet and kwok never share a node: kwok only touches annotated
nodes, the process kubelet only its own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import TracebackType

from steno_devcluster import versions
from steno_devcluster.cache import Cache
from steno_devcluster.gobuild import GO_QUERY_TIMEOUT_S, BuildError, go_executable
from steno_devcluster.nodes import KWOK_ANNOTATION, KWOK_ANNOTATION_VALUE
from steno_devcluster.processes import ManagedProcess, free_port

# The stage files (relative to the kwok module) that make nodes and pods "fast".
FAST_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat/node-heartbeat.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
STAGES_FILE = "stages.yaml"
# Pod IPs kwok hands out; never routed, only reported.
KWOK_POD_CIDR = "10.244.0.1/16"
STOP_GRACE_S = 5.0


def stages_path(cache: Cache, version: str = versions.KWOK_VERSION) -> Path:
    return cache.component_dir("kwok", version) / STAGES_FILE


def install_stages(cache: Cache, version: str = versions.KWOK_VERSION) -> Path:
    """Copy kwok's fast stages from its Go module into the cache (idempotent)."""
    target = stages_path(cache, version)
    if target.is_file():
        return target
    completed = subprocess.run(
        [go_executable(), "mod", "download", "-json", f"sigs.k8s.io/kwok@{version}"],
        capture_output=True,
        text=True,
        timeout=GO_QUERY_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise BuildError(f"cannot download the kwok module: {completed.stdout}{completed.stderr}")
    module_dir = Path(json.loads(completed.stdout)["Dir"])
    documents = [(module_dir / stage).read_text(encoding="utf-8").strip() for stage in FAST_STAGES]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_text("\n---\n".join(documents) + "\n", encoding="utf-8")
    partial.replace(target)
    return target


class KwokController:
    """One kwok process managing the annotated fake nodes of a cluster."""

    def __init__(self, kwok: Path, stages: Path, kubeconfig: Path, state_dir: Path) -> None:
        self.kwok = kwok
        self.stages = stages
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self._process: ManagedProcess | None = None

    def start(self) -> KwokController:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # kwok would also read ~/.kwok/kwok.yaml; a private HOME keeps it out.
        self._process = ManagedProcess(
            "kwok",
            [
                str(self.kwok),
                f"--config={self.stages}",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}={KWOK_ANNOTATION_VALUE}",
                f"--cidr={KWOK_POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
            self.state_dir / "kwok.log",
            env={"HOME": str(self.state_dir), "PATH": "/usr/bin:/bin"},
        )
        return self

    def check_alive(self) -> None:
        if self._process is not None and not self._process.alive():
            raise RuntimeError(self._process.describe_exit())

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(STOP_GRACE_S)
            self._process = None

    def __enter__(self) -> KwokController:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
