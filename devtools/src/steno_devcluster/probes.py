"""Container probes (startup, readiness, liveness) as a kubelet runs them.

Handlers: ``httpGet`` (HTTP or HTTPS without verification, as the kubelet
does), ``tcpSocket``, ``exec`` (inside the container's mount namespace when
running as root, through ``nsenter``), and ``grpc`` (the standard
``grpc.health.v1`` service, when ``grpcio`` is importable). The host
defaults to the pod's own loopback address; named ports resolve through the
container's ``ports``.

Timing follows the pod spec (``initialDelaySeconds``, ``periodSeconds``,
``timeoutSeconds``, ``successThreshold``, ``failureThreshold``), with the
timeout capped so that one slow probe cannot stall the kubelet's loop.
"""

from __future__ import annotations

import http.client
import importlib
import os
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from typing import Any

from steno_devcluster.kubeapi import JsonObject

# Kubernetes' defaults.
DEFAULT_PERIOD_S = 10.0
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 1
# The kubelet loop runs probes inline; none may hold it longer than this.
MAX_PROBE_TIMEOUT_S = 5.0
# Probe more often than the spec asks while not yet ready (faster start-up in
# tests), never more often than this.
MIN_PERIOD_S = 0.2


@dataclass
class ProbeState:
    """Progress of one probe of one container."""

    spec: JsonObject
    started_at: float  # monotonic time the container started
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    passed: bool = False  # the threshold-filtered verdict
    last_message: str = field(default="")

    @property
    def period_s(self) -> float:
        return max(MIN_PERIOD_S, float(self.spec.get("periodSeconds", DEFAULT_PERIOD_S)))

    def due(self, now: float) -> bool:
        initial_delay_s = float(self.spec.get("initialDelaySeconds", 0))
        return now >= self.started_at + initial_delay_s and now >= self.next_at

    def record(self, ok: bool, message: str, now: float, fast: bool) -> None:
        """Count a result; *fast* probes again soon (while waiting to pass)."""
        self.last_message = message
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold", DEFAULT_SUCCESS_THRESHOLD)):
                self.passed = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold", DEFAULT_FAILURE_THRESHOLD)):
                self.passed = False
        self.next_at = now + (MIN_PERIOD_S if fast and not self.passed else self.period_s)

    @property
    def exhausted(self) -> bool:
        """Failed failureThreshold times in a row (liveness/startup: restart)."""
        return self.failures >= int(self.spec.get("failureThreshold", DEFAULT_FAILURE_THRESHOLD))


def _port(value: Any, container: JsonObject) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for port in container.get("ports") or []:
        if port.get("name") == text:
            return int(port["containerPort"])
    raise ValueError(f"no container port named {text!r}")


def _timeout(spec: JsonObject) -> float:
    return min(MAX_PROBE_TIMEOUT_S, float(spec.get("timeoutSeconds", DEFAULT_TIMEOUT_S)))


def run_probe(
    spec: JsonObject, container: JsonObject, pod_ip: str, pid: int | None
) -> tuple[bool, str]:
    """Run one probe once; returns (success, message)."""
    timeout_s = _timeout(spec)
    try:
        if "httpGet" in spec:
            return _http(spec["httpGet"], container, pod_ip, timeout_s)
        if "tcpSocket" in spec:
            handler = spec["tcpSocket"]
            host = str(handler.get("host") or pod_ip)
            with socket.create_connection((host, _port(handler["port"], container)), timeout_s):
                return True, "connected"
        if "exec" in spec:
            return _exec(spec["exec"], pid, timeout_s)
        if "grpc" in spec:
            return _grpc(spec["grpc"], pod_ip, timeout_s)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return False, f"unsupported probe handler {sorted(spec)}"


def _http(
    handler: JsonObject, container: JsonObject, pod_ip: str, timeout_s: float
) -> tuple[bool, str]:
    host = str(handler.get("host") or pod_ip)
    port = _port(handler["port"], container)
    path = str(handler.get("path") or "/")
    connection: http.client.HTTPConnection
    if str(handler.get("scheme", "HTTP")).upper() == "HTTPS":
        # The kubelet does not verify probe certificates either.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=insecure)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    headers = {str(h["name"]): str(h["value"]) for h in handler.get("httpHeaders") or []}
    try:
        connection.request("GET", path, headers={"User-Agent": "kube-probe/steno", **headers})
        status = connection.getresponse().status
    finally:
        connection.close()
    # Kubernetes: 200 <= status < 400 is success.
    return 200 <= status < 400, f"HTTP {status}"


def _exec(handler: JsonObject, pid: int | None, timeout_s: float) -> tuple[bool, str]:
    command = [str(part) for part in handler.get("command") or []]
    if pid is not None and os.geteuid() == 0:
        # Same files as the container sees (its volume mounts).
        command = ["nsenter", f"--target={pid}", "--mount", "--", *command]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    return completed.returncode == 0, f"exit {completed.returncode}"


def _grpc(handler: JsonObject, pod_ip: str, timeout_s: float) -> tuple[bool, str]:
    try:
        grpc = importlib.import_module("grpc")
        health_pb2 = importlib.import_module("grpc_health.v1.health_pb2")
        health_pb2_grpc = importlib.import_module("grpc_health.v1.health_pb2_grpc")
    except ImportError:
        return False, "grpc probes need grpcio and grpcio-health-checking"
    target = f"{pod_ip}:{int(handler['port'])}"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=str(handler.get("service", ""))),
                timeout=timeout_s,
            )
        except grpc.RpcError as exc:
            return False, f"gRPC {exc.code()}"
    serving = answer.status == health_pb2.HealthCheckResponse.SERVING
    return serving, "SERVING" if serving else f"status {answer.status}"
