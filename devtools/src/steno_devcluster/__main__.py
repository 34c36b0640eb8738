"""``python -m steno_devcluster``: install the tools, run a cluster, show versions.

- ``install``: build and fetch everything into the cache (idempotent; a warm
  run only checks and takes about a second);
- ``up``: start a control plane, fake GPU and CPU nodes and the process
  kubelet (optionally SeaweedFS and kwok) in the foreground; prints the
  kubeconfig and stays until Ctrl-C or SIGTERM, then stops everything;
- ``versions``: what the cache holds and what each binary reports.

``up`` keeps its state under ``<cache>/devcluster/runs/up``; a second ``up``
while one runs is refused (a pid file guards it).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from steno_devcluster import versions
from steno_devcluster.binaries import Toolbox, version_output
from steno_devcluster.cache import Cache
from steno_devcluster.cluster import ClusterOptions, DevCluster
from steno_devcluster.install import install_all
from steno_devcluster.nodes import NodeSpec
from steno_devcluster.objectstore import ObjectStore, ObjectStoreOptions

logger = logging.getLogger("steno_devcluster")


def _install(args: argparse.Namespace) -> int:
    report = install_all(Cache.default())
    for step in report.steps:
        print(f"{step.seconds:8.1f} s  {step.name}")
    print(f"{report.total_seconds:8.1f} s  total; binaries in {Cache.default().base}")
    return 0


def _versions(args: argparse.Namespace) -> int:
    toolbox = Toolbox.locate(Cache.default())
    probes = {
        "kube-apiserver": (toolbox.kube_apiserver, ("--version",)),
        "kube-controller-manager": (toolbox.kube_controller_manager, ("--version",)),
        "kube-scheduler": (toolbox.kube_scheduler, ("--version",)),
        "kwok": (toolbox.kwok, ("--version",)),
        "etcd": (toolbox.etcd, ("--version",)),
        "kubectl": (toolbox.kubectl, ("version", "--client")),
        "helm": (toolbox.helm, ("version", "--short")),
        "weed": (toolbox.weed, ("version",)),
    }
    for name, (path, probe_args) in probes.items():
        print(f"{name:24} {version_output(path, *probe_args):40} {path}")
    return 0


def _claim(state_dir: Path) -> Path:
    """Take the pid file of the ``up`` state folder, or exit if another holds it."""
    pid_file = state_dir / "up.pid"
    if pid_file.is_file():
        try:
            other = int(pid_file.read_text().strip())
            os.kill(other, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        else:
            raise SystemExit(f"a dev cluster is already up (pid {other}, {state_dir})")
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()}\n")
    return pid_file


def _up(args: argparse.Namespace) -> int:
    cache = Cache.default()
    toolbox = Toolbox.locate(cache)
    state_dir = cache.runs_dir / "up"
    pid_file = _claim(state_dir)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    kwok_nodes = tuple(
        NodeSpec(name=f"kwok-node-{i}", kwok=True, gpus=args.gpus_per_node)
        for i in range(args.kwok_nodes)
    )
    options = ClusterOptions(
        state_dir=state_dir,
        gpu_nodes=args.gpu_nodes,
        gpus_per_node=args.gpus_per_node,
        cpu_nodes=args.cpu_nodes,
        kwok=bool(kwok_nodes),
        crd_manifests=tuple(Path(p).resolve() for p in args.crd),
        extra_nodes=kwok_nodes,
    )
    store: ObjectStore | None = None
    started = time.monotonic()
    try:
        with DevCluster(toolbox, cache, options) as cluster:
            if args.object_store:
                store = ObjectStore(
                    toolbox.weed,
                    ObjectStoreOptions(state_dir / "object-store", buckets=tuple(args.bucket)),
                ).start()
            kubeconfig = cluster.control_plane.admin_kubeconfig
            print(
                f"Kubernetes {versions.KUBERNETES_VERSION} ready in "
                f"{time.monotonic() - started:.1f} s at {cluster.control_plane.server} "
                f"(control plane {cluster.control_plane.startup_seconds:.1f} s)"
            )
            print(f"  nodes: {', '.join(spec.name for spec in cluster.nodes)}")
            print(f"  logs:  {cluster.control_plane.logs_dir}")
            print(f"  export KUBECONFIG={kubeconfig}")
            print(f"  {toolbox.kubectl} get nodes")
            print(f"  helm: {toolbox.helm}")
            if store is not None:
                print(f"  S3 endpoint {store.endpoint}")
                for key, value in store.environment().items():
                    print(f"  export {key}={value}")
            print("Ctrl-C stops everything.", flush=True)
            while not stop.wait(1.0):
                cluster.control_plane.check_alive()
    finally:
        if store is not None:
            store.stop()
        pid_file.unlink(missing_ok=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m steno_devcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="build/fetch every binary into the cache").set_defaults(
        handler=_install
    )
    commands.add_parser("versions", help="show the installed versions").set_defaults(
        handler=_versions
    )
    up = commands.add_parser("up", help="run a dev cluster in the foreground")
    up.add_argument("--gpu-nodes", type=int, default=2, help="fake GPU nodes (default 2)")
    up.add_argument("--gpus-per-node", type=int, default=4, help="nvidia.com/gpu each (default 4)")
    up.add_argument("--cpu-nodes", type=int, default=1, help="fake CPU nodes (default 1)")
    up.add_argument("--kwok-nodes", type=int, default=0, help="kwok-simulated GPU nodes")
    up.add_argument("--crd", action="append", default=[], help="CRD manifest to install first")
    up.add_argument("--object-store", action="store_true", help="also run SeaweedFS (S3)")
    up.add_argument("--bucket", action="append", default=[], help="bucket to create in it")
    up.set_defaults(handler=_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "install" else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
