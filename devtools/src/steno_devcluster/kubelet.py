"""The process kubelet: runs the pods bound to its nodes as local processes.

It stands in for real kubelets on fake nodes (see :mod:`steno_devcluster.nodes`)
so that the operator's and chart's pods really run — on this machine, with
no container runtime:

- each pod gets its own loopback address (``127.A.B.N``, the /24 picked at
  random per kubelet so two clusters on one machine do not collide),
  reported as ``status.podIP``; servers in the pod should listen on it
  (``fieldRef: status.podIP``) so replicas do not fight over ports;
- each container's ``command``/``args`` run as a process with the pod's
  environment, its volumes at their mount paths, and
  ``KUBERNETES_SERVICE_HOST/PORT`` pointing at the API server (details in
  :mod:`podenv`, :mod:`podvolumes`, :mod:`podrunner`);
- status goes back to the API server: Running, Ready after probes, then
  Succeeded or Failed with each container's real exit code;
- a deleted pod's processes get SIGTERM, then SIGKILL after the (capped)
  grace period, and the kubelet confirms the deletion, as a real one does.

Two threads: a *watch* thread keeps the set of pods on our nodes current (a
list, then a watch from its resourceVersion, re-listing after a 410), and a
*sync* thread owns every process and all status writes, so no locking is
needed beyond handing pod objects over. The sync thread forks every
container (their parent-death signal is tied to it) and stops them all,
gracefully, before it ends.

Container logs are files (``<state dir>/pods/<namespace>_<name>_<uid>/logs``):
``kubectl logs`` needs a kubelet API server, which this kubelet does not run;
:meth:`ProcessKubelet.logs` reads them instead.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from steno_devcluster.kubeapi import JsonObject, KubeApi
from steno_devcluster.podenv import ApiServerAddress
from steno_devcluster.podrunner import PodRunner
from steno_devcluster.podvolumes import MountPoints, remove_pod_files

logger = logging.getLogger(__name__)

# Server-side watch timeout: the watch thread notices stop() at least this often.
WATCH_TIMEOUT_S = 5
# Pause before re-listing after an error (API server restarting, …).
WATCH_RETRY_S = 0.5
# How long start() waits for the first list of pods.
INITIAL_LIST_TIMEOUT_S = 30.0
# How long stop() waits for the sync thread to stop every pod.
STOP_TIMEOUT_S = 30.0
# After SIGKILL the kernel reaps at once; this only bounds a wedged wait.
KILL_WAIT_S = 5.0
# Host numbers of the pod /24 (.1 is left out: it reads like the node).
FIRST_POD_HOST = 2
LAST_POD_HOST = 254


@dataclass(frozen=True)
class KubeletOptions:
    """How one process kubelet runs."""

    node_names: tuple[str, ...]  # the Nodes whose pods it runs
    state_dir: Path  # pod folders (volumes, logs) go here
    api_server: ApiServerAddress  # what pods get as KUBERNETES_SERVICE_HOST/PORT
    host_ip: str = "127.0.0.1"  # the nodes' InternalIP, reported as hostIP
    pod_network: str | None = None  # "127.A.B" prefix of pod IPs; random when None
    max_grace_s: float = 10.0  # cap on terminationGracePeriodSeconds
    sync_interval_s: float = 0.1  # the sync loop runs at least this often
    base_environment: Mapping[str, str] | None = None  # the "image" env; None: ours


class IpPool:
    """Loopback addresses for pods: ``<network>.2`` … ``<network>.254``."""

    def __init__(self, network: str) -> None:
        self.network = network
        self._free = list(range(FIRST_POD_HOST, LAST_POD_HOST + 1))
        self._used: set[str] = set()

    def allocate(self) -> str:
        if not self._free:
            raise RuntimeError(f"all pod addresses in {self.network}.0/24 are in use")
        address = f"{self.network}.{self._free.pop(0)}"
        self._used.add(address)
        return address

    def release(self, address: str) -> None:
        if address in self._used:
            self._used.discard(address)
            # Reused last, so a just-freed address is not handed out at once.
            self._free.append(int(address.rsplit(".", 1)[1]))


def random_pod_network(rng: random.Random | None = None) -> str:
    """``127.A.B`` with A, B in 1..254: avoids 127.0.0.x, used by the servers."""
    chooser = rng or random.SystemRandom()
    return f"127.{chooser.randint(1, 254)}.{chooser.randint(1, 254)}"


def default_base_environment() -> dict[str, str]:
    """This process's environment with our Python's bin dir first on PATH."""
    environment = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([bin_dir, environment.get("PATH", "")])
    return environment


class ProcessKubelet:
    """Runs pods bound to ``options.node_names`` as local processes."""

    def __init__(self, api: KubeApi, options: KubeletOptions) -> None:
        self.api = api
        self.options = options
        self.pool = IpPool(options.pod_network or random_pod_network())
        self._base_environment = dict(options.base_environment or default_base_environment())
        self._desired: dict[str, JsonObject] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._listed = threading.Event()
        self._runners: dict[str, PodRunner] = {}
        self._mount_points = MountPoints()
        self._addresses: dict[str, str] = {}
        self._watch_thread: threading.Thread | None = None
        self._watch_connection: http.client.HTTPSConnection | None = None
        self._sync_thread: threading.Thread | None = None
        self.errors: list[str] = []  # unexpected errors seen by the loops (for tests)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> ProcessKubelet:
        self._watch_thread = threading.Thread(
            target=self._watch_loop, name="kubelet-watch", daemon=True
        )
        self._watch_thread.start()
        if not self._listed.wait(INITIAL_LIST_TIMEOUT_S):
            self.stop()
            raise RuntimeError("the process kubelet could not list pods: " + "; ".join(self.errors))
        self._sync_thread = threading.Thread(
            target=self._sync_loop, name="kubelet-sync", daemon=True
        )
        self._sync_thread.start()
        return self

    def stop(self) -> None:
        """Stop every pod's processes (graceful, bounded) and both threads."""
        self._stopping.set()
        self._wake.set()
        if self._sync_thread is not None:
            self._sync_thread.join(STOP_TIMEOUT_S)
            if self._sync_thread.is_alive():
                logger.error("process kubelet sync thread did not stop in %s s", STOP_TIMEOUT_S)
        connection = self._watch_connection
        if connection is not None and connection.sock is not None:
            # Ends the watch's blocking read now instead of at its timeout.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        if self._watch_thread is not None:
            self._watch_thread.join(WATCH_TIMEOUT_S + 1)

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- queries (thread-safe enough for tests: reads of plain attributes) ----------

    def pod_directory(self, namespace: str, name: str) -> Path | None:
        for runner in list(self._runners.values()):
            if runner.namespace == namespace and runner.name == name:
                return runner.directory
        return None

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """A container's output so far (the first container when none is named)."""
        for runner in list(self._runners.values()):
            if runner.namespace == namespace and runner.name == name:
                chosen = container or runner.containers[0].name
                return runner.log_text(chosen)
        raise KeyError(f"no pod {namespace}/{name} on this kubelet")

    # -- watch thread ---------------------------------------------------------------

    def _ours(self, pod: JsonObject) -> bool:
        return pod.get("spec", {}).get("nodeName") in self.options.node_names

    def _watch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._list_and_watch()
            except Exception as exc:  # the loop must survive API server restarts
                if not self._stopping.is_set():
                    self.errors.append(f"watch: {exc}")
                    logger.debug("pod watch failed, re-listing: %s", exc)
                    time.sleep(WATCH_RETRY_S)

    def _remember_watch_connection(self, connection: http.client.HTTPSConnection) -> None:
        self._watch_connection = connection
        if self._stopping.is_set():
            connection.close()

    def _list_and_watch(self) -> None:
        # Only bound pods matter; the field selector keeps unscheduled ones out.
        selector = "spec.nodeName!="
        listing = self.api.get("/api/v1/pods", fieldSelector=selector)
        pods = {p["metadata"]["uid"]: p for p in listing.get("items", []) if self._ours(p)}
        with self._lock:
            self._desired = pods
        self._listed.set()
        self._wake.set()
        version = str(listing["metadata"]["resourceVersion"])
        while not self._stopping.is_set():
            for event in self.api.watch(
                "/api/v1/pods",
                version,
                WATCH_TIMEOUT_S,
                on_connect=self._remember_watch_connection,
                fieldSelector=selector,
            ):
                kind = event.get("type")
                obj = event.get("object", {})
                if kind == "ERROR":
                    # Usually 410 Gone: our resourceVersion is too old; re-list.
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                version = str(obj.get("metadata", {}).get("resourceVersion", version))
                if kind == "BOOKMARK" or not self._ours(obj):
                    continue
                uid = obj["metadata"]["uid"]
                with self._lock:
                    if kind == "DELETED":
                        self._desired.pop(uid, None)
                    else:
                        self._desired[uid] = obj
                self._wake.set()
                if self._stopping.is_set():
                    return

    # -- sync thread ----------------------------------------------------------------

    def _sync_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.wait(self.options.sync_interval_s)
                self._wake.clear()
                self._sync_once()
        finally:
            self._stop_all()

    def _sync_once(self) -> None:
        with self._lock:
            desired = dict(self._desired)
        for uid, pod in desired.items():
            runner = self._runners.get(uid)
            if runner is None:
                runner = self._adopt(pod)
                if runner is None:
                    continue
            try:
                runner.sync(pod)
            except Exception as exc:  # one broken pod must not stop the others
                self.errors.append(f"{runner.namespace}/{runner.name}: {exc}")
                logger.exception("syncing pod %s/%s", runner.namespace, runner.name)
            if runner.terminal:
                self._release_address(uid)
        now = time.monotonic()
        for uid in [uid for uid in self._runners if uid not in desired]:
            runner = self._runners[uid]
            # Gone from the API (force-deleted or deletion confirmed): stop, forget.
            runner.begin_stop(now, grace_s=0.0 if runner.deleted_confirmed else None)
            if runner.stopped(now):
                self._forget(uid)

    def _adopt(self, pod: JsonObject) -> PodRunner | None:
        metadata = pod["metadata"]
        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return None  # finished before we saw it (a previous kubelet ran it)
        uid = str(metadata["uid"])
        address = self.pool.allocate()
        self._addresses[uid] = address
        directory = (
            self.options.state_dir / "pods" / f"{metadata['namespace']}_{metadata['name']}_{uid}"
        )
        runner = PodRunner(
            pod=pod,
            api=self.api,
            directory=directory,
            pod_ip=address,
            host_ip=self.options.host_ip,
            api_server=self.options.api_server,
            base_environment=self._base_environment,
            max_grace_s=self.options.max_grace_s,
            mount_points=self._mount_points,
        )
        self._runners[uid] = runner
        return runner

    def _release_address(self, uid: str) -> None:
        address = self._addresses.pop(uid, None)
        if address is not None:
            self.pool.release(address)

    def _forget(self, uid: str) -> None:
        runner = self._runners.pop(uid)
        self._release_address(uid)
        remove_pod_files(runner.directory / "volumes")

    def _stop_all(self) -> None:
        """SIGTERM everything, wait within the grace cap, SIGKILL the rest."""
        now = time.monotonic()
        for runner in self._runners.values():
            runner.begin_stop(now, grace_s=min(self.options.max_grace_s, runner_grace(runner)))
        deadline = now + self.options.max_grace_s + 1.0
        while time.monotonic() < deadline:
            if all(runner.stopped(time.monotonic()) for runner in self._runners.values()):
                break
            time.sleep(0.05)
        # Past the grace period: SIGKILL whatever is left and reap it.
        kill_deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < kill_deadline:
            if all(runner.stopped(float("inf")) for runner in self._runners.values()):
                break
            time.sleep(0.05)
        for uid in list(self._runners):
            self._forget(uid)
        self._mount_points.remove_created()


def runner_grace(runner: PodRunner) -> float:
    spec = runner.pod.get("spec", {})
    return float(spec.get("terminationGracePeriodSeconds", 30))
