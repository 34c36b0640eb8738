"""Far past capacity with a deep queue, calls are admitted or refused, never dropped by gRPC.

Hundreds of admitted calls wait at once here. Their waits must leave gRPC's
own thread enough of the GIL to take up new calls; when it falls behind, gRPC
cancels calls it has received but not handed over (CANCELLED), which a client
cannot tell from a cancel of its own.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc
from support.speech import librivox_utterances

pytestmark = pytest.mark.integration

START_S = 300.0
OFFERED_PER_S = 100.0  # about 40 times what tiny.en transcribes on two cores
OFFERED_S = 15.0
QUEUE_AUDIO_S = 2000.0  # room for hundreds of admitted calls
SETTLE_S = 5.0  # refusals still on their way back when the offering stops
EXIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(channel: grpc.Channel, server: subprocess.Popen[bytes]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:  # bounded: the server has no other readiness signal
        assert server.poll() is None, "steno serve exited while starting"
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    pytest.fail(f"steno serve was not SERVING within {START_S:.0f} s")


def test_overload_with_a_deep_queue_only_refuses(speech_data: None) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "steno_inference.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--model", "tiny.en", "--device", "cpu", "--backend", "torch",
         "--max-queue-audio-s", str(QUEUE_AUDIO_S), "--max-concurrent-calls", "1024",
         "--grace-s", "0", "--metrics-port", "0", "--log-level", "warning"],
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    lock = threading.Lock()
    before_stop: Counter[str] = Counter()
    stopping = threading.Event()

    def finished(call: grpc.Future) -> None:
        if not stopping.is_set():
            with lock:
                before_stop[call.code().name] += 1

    try:
        _wait_serving(channel, server)
        stub = pb_grpc.TranscriptionServiceStub(channel)
        audio = [u.path.read_bytes() for u in librivox_utterances()]
        rng = random.Random(3)
        began = time.monotonic()
        at, index = began, 0
        while at - began < OFFERED_S:  # Poisson arrivals, as independent clients make them
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            call = stub.Transcribe.future(pb.TranscribeRequest(audio=audio[index % len(audio)]),
                                          timeout=START_S)
            call.add_done_callback(finished)
            index += 1
            at += rng.expovariate(OFFERED_PER_S)
        time.sleep(SETTLE_S)
        stopping.set()
        server.send_signal(signal.SIGTERM)
        server.wait(EXIT_S)
    finally:
        channel.close()
        if server.poll() is None:
            server.kill()
    with lock:
        codes = dict(before_stop)
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    # Most calls were refused, and the refusals came back while the load went on
    # (a server whose gRPC thread falls behind leaves them unanswered).
    assert codes.get("RESOURCE_EXHAUSTED", 0) > index // 2, (codes, index)
