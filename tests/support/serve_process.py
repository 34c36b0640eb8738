"""``steno serve`` as a child process on 127.0.0.1, for tests of the command itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTING_POLL_S = 0.5  # a starting server loads a model: no need to ask more often


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``steno serve ARGS`` on a free local port (no metrics endpoint); the process and target."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "steno_inference.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", "0", *args],
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    return server, f"127.0.0.1:{port}"


def wait_serving(server: subprocess.Popen[bytes], channel: grpc.Channel, timeout_s: float) -> None:
    """Return once the server's health says SERVING; fail if it exits or takes too long."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # bounded: the server has no other readiness signal
        assert server.poll() is None, "steno serve exited while starting"
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(STARTING_POLL_S)
    raise AssertionError(f"steno serve did not report SERVING within {timeout_s:.0f} s")
