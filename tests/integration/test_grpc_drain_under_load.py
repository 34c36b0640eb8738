"""`steno serve` drained by SIGTERM while hundreds of calls wait: it exits, cleanly.

The SIGTERM goes to one of the server's worker threads, not the main thread:
the kernel may deliver a process's signal to any of its threads, and with
hundreds of them it usually is not the main one (on a GPU server that left
the main thread waiting forever and the server ignoring SIGTERM).
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import time

import grpc
import pytest
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc
from support.serve_process import start_serve, wait_serving
from support.speech import librivox_utterances

pytestmark = pytest.mark.integration

CALLS = 128  # far more than the CPU decodes in the grace period
START_S = 300.0
LOADED_S = 10.0
EXIT_S = 120.0  # grace (30 s) + cut-off answers (6 s) + slack for two busy cores
EXIT_CUT_OFF = 1  # steno serve: drained, but some calls had to be stopped
TGKILL_SYSCALL = {"x86_64": 234, "aarch64": 131}  # Linux syscall numbers


def _signal_a_worker_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to one thread of ``pid`` other than its main thread (Linux tgkill)."""
    tgkill = TGKILL_SYSCALL.get(platform.machine())
    if tgkill is None:
        pytest.fail(f"no tgkill syscall number known for {platform.machine()}")
    threads = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert threads, "the server runs no threads besides its main thread"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(tgkill, pid, threads[len(threads) // 2], signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def test_sigterm_under_load_stops_queued_calls_and_exits(speech_data: None) -> None:
    server, target = start_serve(
        "--model", "tiny.en", "--device", "cpu", "--backend", "torch",
        "--max-queue-audio-s", "100000", "--max-concurrent-calls", "1024",
        "--log-level", "warning",
    )
    channel = grpc.insecure_channel(target)
    try:
        wait_serving(server, channel, START_S)
        stub = pb_grpc.TranscriptionServiceStub(channel)
        audio = [u.path.read_bytes() for u in librivox_utterances()]
        calls = [stub.Transcribe.future(pb.TranscribeRequest(audio=audio[i % len(audio)]),
                                        timeout=START_S) for i in range(CALLS)]
        time.sleep(LOADED_S)
        _signal_a_worker_thread(server.pid, signal.SIGTERM)
        code = server.wait(EXIT_S)
        outcomes = []
        for call in calls:
            try:
                call.result()
                outcomes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                outcomes.append(error.code())
    finally:
        channel.close()
        if server.poll() is None:
            server.kill()
    # A clean drain, not a crash at exit (-6 was seen once, with 256 calls queued for
    # voice activity; it does not happen on every run).
    assert code == EXIT_CUT_OFF
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert grpc.StatusCode.UNAVAILABLE in outcomes
