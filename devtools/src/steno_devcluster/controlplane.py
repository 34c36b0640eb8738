"""Start, wait for, and stop a real Kubernetes control plane on 127.0.0.1.

What runs, in start order:

1. **etcd** (TLS, client certificates required, ``--unsafe-no-fsync``: the
   data is thrown away with the cluster, so durability buys nothing and
   fsync costs seconds on a busy disk);
2. **kube-apiserver** (TLS, x509 client-certificate authentication, RBAC
   authorization, service-account tokens signed with the cluster's key);
3. optional CRD manifests, applied once the API server is ready and
   *before* the controller manager starts: the garbage collector reads API
   discovery at start and then only every ~30 s, so a custom resource that
   owns objects right after start-up must already be known to it;
4. **kube-controller-manager** and **kube-scheduler**, each with its own client
   certificate (the users that the bootstrap RBAC roles name) and a TLS
   health endpoint on a loopback port.

Ready means: etcd ``/health``, API server ``/readyz``, both controllers'
``/healthz``, and the ``default`` ServiceAccount plus the ``kube-root-ca.crt``
ConfigMap existing in namespace ``default`` (pods are refused until the
first exists, and their token volumes need the second).

Controllers that need real nodes are turned off: node lifecycle (it would
mark our kubelet-less nodes unreachable and evict pods) and node IPAM. The
endpoint reconciler is off too: 127.0.0.1 is not a valid Endpoints address,
so the ``kubernetes`` Service has none.

Everything a cluster writes lives in its state folder: certificates,
kubeconfigs, etcd's data and one log file per process.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from steno_devcluster.binaries import Toolbox
from steno_devcluster.kubeapi import KubeApi
from steno_devcluster.kubeconfig import client_ssl_context, write_kubeconfig
from steno_devcluster.pki import FRONT_PROXY_CLIENT, ClusterPki, create_cluster_pki
from steno_devcluster.processes import ManagedProcess, free_port

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Service-account tokens name this issuer; pods verify nothing about it.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Poll interval for every readiness check: short, the checks are cheap.
POLL_INTERVAL_S = 0.1
# One HTTP probe may take this long before it counts as "not yet".
PROBE_TIMEOUT_S = 2.0
# kubectl apply/wait of CRD manifests.
KUBECTL_TIMEOUT_S = 60.0
# Controllers the dev cluster cannot use: node lifecycle would mark our
# heartbeat-less nodes unreachable and evict their pods; node IPAM needs pod
# CIDRs. (Cloud controllers are not in this binary's default set.) Everything
# else, the garbage collector included, runs.
DISABLED_CONTROLLERS = ("node-lifecycle-controller", "node-ipam-controller")


class ControlPlaneError(RuntimeError):
    """The control plane did not start, or one of its processes died."""


@dataclass(frozen=True)
class ControlPlaneOptions:
    """How to run one control plane."""

    state_dir: Path  # certificates, kubeconfigs, etcd data and logs go here
    crd_manifests: tuple[Path, ...] = ()  # applied before the controller manager starts
    service_cluster_ip_range: str = "10.0.0.0/24"  # never routed; only allocated
    ready_timeout_s: float = 60.0  # bound on the whole start-up
    # SIGTERM → SIGKILL delay per process. The API server logs "exiting" ~1 s
    # after SIGTERM but now and then lingers on; its data is disposable.
    stop_grace_s: float = 3.0
    verbosity: int = 1  # klog -v for the Kubernetes components
    extra_apiserver_flags: tuple[str, ...] = ()  # appended verbatim
    feature_gates: tuple[str, ...] = ()  # e.g. ("DRA=true",), all components


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(
            etcd_client=free_port(HOST),
            etcd_peer=free_port(HOST),
            apiserver=free_port(HOST),
            controller_manager=free_port(HOST),
            scheduler=free_port(HOST),
        )


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, toolbox: Toolbox, options: ControlPlaneOptions) -> None:
        self.toolbox = toolbox
        self.options = options
        self.state_dir = options.state_dir
        self.logs_dir = options.state_dir / "logs"
        self.ports = Ports.pick()
        self._processes: dict[str, ManagedProcess] = {}
        self._pki: ClusterPki | None = None
        self.startup_seconds = 0.0

    # -- public surface ----------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.ports.apiserver}"

    @property
    def pki(self) -> ClusterPki:
        if self._pki is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._pki

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.state_dir / "kubelet.kubeconfig"

    def admin_ssl_context(self) -> ssl.SSLContext:
        return client_ssl_context(self.pki.ca.cert, self.pki.admin)

    def admin_api(self) -> KubeApi:
        """A REST client authenticated as the cluster admin (``system:masters``)."""
        return KubeApi(self.server, self.admin_ssl_context())

    def kubelet_api(self) -> KubeApi:
        """A REST client with the process kubelet's credentials."""
        return KubeApi(self.server, client_ssl_context(self.pki.ca.cert, self.pki.kubelet))

    def start(self) -> ControlPlane:
        started = time.monotonic()
        deadline = started + self.options.ready_timeout_s
        try:
            self._write_credentials()
            self._start_etcd()
            self._wait(deadline, "etcd /health", self._etcd_healthy)
            self._start_apiserver()
            # Not earlier: the controllers exit at once if the bootstrap RBAC
            # roles (part of /readyz) are not there yet.
            self._wait(deadline, "kube-apiserver /readyz", self._apiserver_ready)
            if self.options.crd_manifests:
                self.apply_crds(self.options.crd_manifests, deadline)
            self._start_controller_manager()
            self._start_scheduler()
            self._wait_controllers(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("control plane ready at %s in %.1f s", self.server, self.startup_seconds)
        return self

    def stop(self) -> None:
        """Stop every process, newest first. Safe to call twice."""
        for name in reversed(list(self._processes)):
            self._processes.pop(name).stop(self.options.stop_grace_s)

    def restart_controller_manager(self, timeout_s: float = 30.0) -> None:
        """Restart kube-controller-manager, e.g. so that its garbage collector
        sees CRDs installed after start-up at once instead of within ~30 s."""
        deadline = time.monotonic() + timeout_s
        process = self._processes.pop("kube-controller-manager", None)
        if process is not None:
            process.stop(self.options.stop_grace_s)
        self._start_controller_manager()
        self._wait(deadline, "kube-controller-manager /healthz", self._controller_manager_healthy)

    def apply_crds(self, manifests: tuple[Path, ...], deadline: float | None = None) -> None:
        """``kubectl apply`` CRD manifests and wait until they are Established."""
        if deadline is None:
            deadline = time.monotonic() + KUBECTL_TIMEOUT_S
        for manifest in manifests:
            self.kubectl("apply", "--server-side", "-f", str(manifest))
        remaining_s = max(1.0, deadline - time.monotonic())
        for manifest in manifests:
            self.kubectl(
                "wait",
                "--for=condition=Established",
                f"--timeout={remaining_s:.0f}s",
                "-f",
                str(manifest),
            )

    def kubectl(self, *args: str, timeout_s: float = KUBECTL_TIMEOUT_S) -> str:
        """Run kubectl as the admin; return stdout, raise with stderr on failure."""
        completed = subprocess.run(
            [str(self.toolbox.kubectl), f"--kubeconfig={self.admin_kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if completed.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {completed.returncode}: {completed.stderr}"
            )
        return completed.stdout

    def check_alive(self) -> None:
        """Raise if a control-plane process has died."""
        for process in self._processes.values():
            if not process.alive():
                raise ControlPlaneError(process.describe_exit())

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start-up steps -----------------------------------------------------

    def _write_credentials(self) -> None:
        first_service_ip = _first_host(self.options.service_cluster_ip_range)
        self._pki = create_cluster_pki(self.state_dir / "pki", first_service_ip)
        pki = self._pki
        write_kubeconfig(self.admin_kubeconfig, self.server, pki.ca.cert, pki.admin, "admin")
        write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig",
            self.server,
            pki.ca.cert,
            pki.controller_manager,
            "system:kube-controller-manager",
        )
        write_kubeconfig(
            self.state_dir / "scheduler.kubeconfig",
            self.server,
            pki.ca.cert,
            pki.scheduler,
            "system:kube-scheduler",
        )
        write_kubeconfig(
            self.kubelet_kubeconfig, self.server, pki.ca.cert, pki.kubelet, "process-kubelet"
        )

    def _launch(self, name: str, argv: list[str]) -> None:
        self._processes[name] = ManagedProcess(name, argv, self.logs_dir / f"{name}.log")

    def _feature_gate_flags(self) -> list[str]:
        if not self.options.feature_gates:
            return []
        return [f"--feature-gates={','.join(self.options.feature_gates)}"]

    def _start_etcd(self) -> None:
        pki = self.pki
        client_url = f"https://{HOST}:{self.ports.etcd_client}"
        peer_url = f"http://{HOST}:{self.ports.etcd_peer}"
        self._launch(
            "etcd",
            [
                str(self.toolbox.etcd),
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                f"--cert-file={pki.etcd.cert}",
                f"--key-file={pki.etcd.key}",
                f"--trusted-ca-file={pki.ca.cert}",
                "--client-cert-auth=true",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._launch(
            "kube-apiserver",
            [
                str(self.toolbox.kube_apiserver),
                f"--etcd-servers=https://{HOST}:{self.ports.etcd_client}",
                f"--etcd-cafile={pki.ca.cert}",
                f"--etcd-certfile={pki.apiserver_etcd_client.cert}",
                f"--etcd-keyfile={pki.apiserver_etcd_client.key}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.ports.apiserver}",
                f"--cert-dir={self.state_dir / 'apiserver'}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
                f"--proxy-client-key-file={pki.front_proxy_client.key}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={self.options.service_cluster_ip_range}",
                # 127.0.0.1 is not a valid Endpoints IP.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--v={self.options.verbosity}",
                *self._feature_gate_flags(),
                *self.options.extra_apiserver_flags,
            ],
        )

    def _start_controller_manager(self) -> None:
        pki = self.pki
        controllers = ",".join(["*", *(f"-{name}" for name in DISABLED_CONTROLLERS)])
        self._launch(
            "kube-controller-manager",
            [
                str(self.toolbox.kube_controller_manager),
                f"--kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
                f"--bind-address={HOST}",
                f"--secure-port={self.ports.controller_manager}",
                f"--tls-cert-file={pki.controller_manager_serving.cert}",
                f"--tls-private-key-file={pki.controller_manager_serving.key}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                f"--controllers={controllers}",
                "--profiling=false",
                f"--v={self.options.verbosity}",
                *self._feature_gate_flags(),
            ],
        )

    def _start_scheduler(self) -> None:
        pki = self.pki
        kubeconfig = self.state_dir / "scheduler.kubeconfig"
        self._launch(
            "kube-scheduler",
            [
                str(self.toolbox.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={self.ports.scheduler}",
                f"--tls-cert-file={pki.scheduler_serving.cert}",
                f"--tls-private-key-file={pki.scheduler_serving.key}",
                "--leader-elect=false",
                "--profiling=false",
                f"--v={self.options.verbosity}",
                *self._feature_gate_flags(),
            ],
        )

    # -- readiness ------------------------------------------------------------

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(p.log_path) for p in self._processes.values())
                raise ControlPlaneError(
                    f"{what} not ready within {self.options.ready_timeout_s:.0f} s (logs: {logs})"
                )
            time.sleep(POLL_INTERVAL_S)

    def _wait_controllers(self, deadline: float) -> None:
        self._wait(deadline, "kube-controller-manager /healthz", self._controller_manager_healthy)
        self._wait(deadline, "kube-scheduler /healthz", self._scheduler_healthy)
        self._wait(
            deadline,
            "ServiceAccount default/default",
            lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )
        self._wait(
            deadline,
            "ConfigMap default/kube-root-ca.crt",
            lambda: (
                self._api_get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is not None
            ),
        )

    def _etcd_healthy(self) -> bool:
        context = client_ssl_context(self.pki.ca.cert, self.pki.apiserver_etcd_client)
        body = _https_get(f"https://{HOST}:{self.ports.etcd_client}/health", context)
        return body is not None and json.loads(body).get("health") == "true"

    def _apiserver_ready(self) -> bool:
        return _https_get(f"{self.server}/readyz", self.admin_ssl_context()) == b"ok"

    def _controller_manager_healthy(self) -> bool:
        url = f"https://{HOST}:{self.ports.controller_manager}/healthz"
        return _https_get(url, client_ssl_context(self.pki.ca.cert)) == b"ok"

    def _scheduler_healthy(self) -> bool:
        url = f"https://{HOST}:{self.ports.scheduler}/healthz"
        return _https_get(url, client_ssl_context(self.pki.ca.cert)) == b"ok"

    def _api_get(self, path: str) -> bytes | None:
        return _https_get(f"{self.server}{path}", self.admin_ssl_context())


def _https_get(url: str, context: ssl.SSLContext) -> bytes | None:
    """The body of a 200 response, or None for any error (not up yet)."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=PROBE_TIMEOUT_S) as response:
            body: bytes = response.read()
            return body if response.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _first_host(cidr: str) -> str:
    """First usable address of a CIDR: the ``kubernetes`` Service's ClusterIP."""
    network = ipaddress.ip_network(cidr)
    return str(next(network.hosts()))
