"""Load test of the gRPC server: capacity, then open-loop load at multiples of it.

1. **Capacity**: ``--clients`` closed-loop clients (each sends its next call as
   soon as the last one returns, or after the server's retry hint when it was
   refused) for ``--duration-s``; capacity is the rate of OK calls per second.
2. **Levels**: for each multiple in ``--levels`` (default 0.7 and 3), calls
   arrive open-loop (Poisson, so a slow server does not slow the offered
   load) at that multiple of the capacity for ``--duration-s``.

For each run it prints a table of status codes and latencies (OK calls and
rejections apart) and writes everything as JSON with ``--out``. The expected
shape: at 0.7× capacity every call is OK; at 3× the excess is refused with
RESOURCE_EXHAUSTED (no other code) and admitted calls' p99 stays bounded by
about ``max_queue_audio_s / throughput`` plus one call's service time.

Calls are short clips (``--clip-s``) cut from ``--audio`` (default: the
bundled 32 s LibriVox sample) and sent as 16 kHz WAV bytes. Calls are gRPC
futures, not threads, so thousands can be in flight from one process.

    # CPU, this machine: start a server, measure, write JSON
    .venv/bin/python bench/grpc_load.py --serve --device cpu --max-queue-audio-s 60 \\
        --out bench/results/grpc-load-cpu-tiny.en.json
    # against a running server
    .venv/bin/python bench/grpc_load.py --target 10.0.0.5:50051 --clients 64
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc
from steno_inference.audio import decode_audio
from steno_inference.benchmarking.report import write_report

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sense-and-sensibility.flac"
SAMPLE_RATE = 16000
SERVER_START_S = 600.0  # model conversion on a first run, loading and warm-up
CALL_TIMEOUT_S = 300.0  # a call still running after this is counted as DEADLINE_EXCEEDED
SERVER_EXIT_WAIT_S = 60.0  # the drain's 30 s grace plus its 7 s of abort and stop, with room
MAX_IN_FLIGHT = 20_000  # open loop: arrivals beyond this many unfinished calls are dropped


# ------------------------------------------------------------------ clips


def make_clips(path: Path, clip_s: float) -> list[tuple[bytes, float]]:
    """WAV bytes of consecutive ``clip_s`` pieces of ``path`` (the last partial one dropped)."""
    audio = decode_audio(str(path))
    size = int(clip_s * SAMPLE_RATE)
    clips = []
    for start in range(0, audio.size - size + 1, size):
        piece = (np.clip(audio[start:start + size], -1, 1) * 32767).astype("<i2")
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(SAMPLE_RATE)
            handle.writeframes(piece.tobytes())
        clips.append((buffer.getvalue(), size / SAMPLE_RATE))
    if not clips:
        raise SystemExit(f"{path} is shorter than one {clip_s} s clip")
    return clips


# ---------------------------------------------------------------- records


@dataclass
class Record:
    started: float
    latency_s: float
    code: str
    audio_s: float
    details: str = ""  # the status message of a call that was not OK


@dataclass
class Recorder:
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    dropped: int = 0

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)
            self.in_flight -= 1


def _retry_after_s(call) -> float:
    for key, value in call.trailing_metadata() or ():
        if key == "retry-after-ms":
            return int(value) / 1000
    return 0.0


def _issue(stub, clips, index, recorder: Recorder, on_done=None) -> None:
    data, audio_s = clips[index % len(clips)]
    started = time.perf_counter()
    with recorder.lock:
        recorder.in_flight += 1
    future = stub.Transcribe.future(pb.TranscribeRequest(audio=data), timeout=CALL_TIMEOUT_S)

    def finished(call) -> None:
        code = call.code()
        ok = code == grpc.StatusCode.OK
        recorder.add(Record(started, time.perf_counter() - started,
                            code.name if code is not None else "UNKNOWN", audio_s,
                            "" if ok else str(call.details())))
        if on_done is not None:
            # A well-behaved client waits as long as a full server asks it to.
            wait = _retry_after_s(call) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else 0.0
            if wait > 0:
                threading.Timer(wait, on_done).start()
            else:
                on_done()

    future.add_done_callback(finished)


def closed_loop(stub, clips, clients: int, duration_s: float) -> tuple[Recorder, float]:
    recorder = Recorder()
    stop_at = time.perf_counter() + duration_s
    counter = iter(range(10**9))
    lock = threading.Lock()
    all_done = threading.Event()
    running = [clients]

    def next_call() -> None:
        if time.perf_counter() >= stop_at:
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    all_done.set()
            return
        with lock:
            index = next(counter)
        _issue(stub, clips, index, recorder, next_call)

    began = time.perf_counter()
    for _ in range(clients):
        next_call()
    all_done.wait(duration_s + CALL_TIMEOUT_S + 60)
    return recorder, time.perf_counter() - began


def open_loop(
    stub, clips, rate_per_s: float, duration_s: float, seed: int
) -> tuple[Recorder, float]:
    recorder = Recorder()
    rng = random.Random(seed)
    began = time.perf_counter()
    at = began
    index = 0
    while True:
        at += rng.expovariate(rate_per_s)
        if at - began >= duration_s:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the arrivals, not synchronising with the server
        if recorder.in_flight >= MAX_IN_FLIGHT:
            recorder.dropped += 1
            continue
        _issue(stub, clips, index, recorder)
        index += 1
    deadline = time.perf_counter() + CALL_TIMEOUT_S + 60
    while recorder.in_flight > 0 and time.perf_counter() < deadline:
        time.sleep(0.05)
    return recorder, time.perf_counter() - began


# ---------------------------------------------------------------- summary


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[position], 4)


def summarize(name: str, recorder: Recorder, wall_s: float, offered_per_s: float | None) -> dict:
    records = recorder.records
    codes = Counter(r.code for r in records)
    ok = [r for r in records if r.code == "OK"]
    rejected = [r for r in records if r.code == "RESOURCE_EXHAUSTED"]
    ok_latency = [r.latency_s for r in ok]
    return {
        "run": name,
        "offered_calls_per_s": None if offered_per_s is None else round(offered_per_s, 3),
        "wall_s": round(wall_s, 2),
        "calls": len(records),
        "dropped_by_client": recorder.dropped,
        "codes": dict(sorted(codes.items())),
        "ok_calls_per_s": round(len(ok) / wall_s, 3) if wall_s else 0.0,
        "ok_audio_s_per_s": round(sum(r.audio_s for r in ok) / wall_s, 2) if wall_s else 0.0,
        "ok_latency_s": {
            "p50": _percentile(ok_latency, 50), "p90": _percentile(ok_latency, 90),
            "p99": _percentile(ok_latency, 99),
            "max": round(max(ok_latency), 4) if ok_latency else None,
            "mean": round(statistics.fmean(ok_latency), 4) if ok_latency else None,
        },
        "rejected_latency_s": {
            "p50": _percentile([r.latency_s for r in rejected], 50),
            "p99": _percentile([r.latency_s for r in rejected], 99),
        },
        # What each non-OK code said, most frequent messages first (retry hints vary).
        "messages": {code: dict(Counter(r.details[:120] for r in records
                                        if r.code == code).most_common(3))
                     for code in sorted(codes) if code != "OK"},
    }


def print_table(rows: list[dict]) -> None:
    codes = sorted({code for row in rows for code in row["codes"]})
    head = (f"{'run':<14}{'offered/s':>10}{'calls':>7}" + "".join(f"{c[:18]:>20}" for c in codes)
            + f"{'OK/s':>8}{'audio s/s':>10}{'p50 s':>8}{'p90 s':>8}{'p99 s':>8}{'max s':>8}"
            + f"{'rej p99 s':>10}")
    print(head)
    print("-" * len(head))
    for row in rows:
        lat = row["ok_latency_s"]
        offered = row["offered_calls_per_s"]

        def fmt(value: float | None, width: int) -> str:
            return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"

        shown = f"{offered:>10.2f}" if offered is not None else f"{'closed':>10}"
        counts = "".join(f"{row['codes'].get(c, 0):>20}" for c in codes)
        print(f"{row['run']:<14}" + shown + f"{row['calls']:>7}" + counts
              + f"{row['ok_calls_per_s']:>8.2f}{row['ok_audio_s_per_s']:>10.1f}"
              + fmt(lat["p50"], 8) + fmt(lat["p90"], 8) + fmt(lat["p99"], 8) + fmt(lat["max"], 8)
              + fmt(row["rejected_latency_s"]["p99"], 10))


# ----------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "steno_inference.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--model", args.model, "--device", args.device,
               "--max-queue-audio-s", str(args.max_queue_audio_s), "--metrics-port", "0",
               "--max-concurrent-calls", str(args.max_concurrent_calls), "--log-level", "warning"]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    process = subprocess.Popen(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    target = f"127.0.0.1:{port}"
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"steno serve exited with {process.returncode}")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                channel.close()
                return process, target
        except grpc.RpcError:
            pass
        time.sleep(0.5)  # polling a process that has no other way to say it is ready
    process.kill()
    raise SystemExit("steno serve did not report SERVING in time")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu_model": _cpu_model(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            # Other work on the machine skews CPU numbers: say how busy it was.
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        if name:
            info["gpu"] = name
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


# ------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="host:port of a running server")
    parser.add_argument("--serve", action="store_true", help="start `steno serve` for the run")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-queue-audio-s", type=float, default=600.0)
    parser.add_argument("--max-concurrent-calls", type=int, default=4096)
    parser.add_argument("--audio", type=Path, default=SAMPLE)
    parser.add_argument("--clip-s", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=None,
                        help="closed-loop clients for the capacity run (default: 2 × batch)")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--levels", default="0.7,3", help="multiples of capacity, open loop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--machine-name", default=platform.node(),
                        help="how the results name the machine (default: the host name)")
    args = parser.parse_args()
    if bool(args.target) == bool(args.serve):
        parser.error("give exactly one of --target and --serve")

    clips = make_clips(args.audio, args.clip_s)
    started_on = machine()
    process = None
    if args.serve:
        process, target = start_server(args)
    else:
        target = args.target
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.TranscriptionServiceStub(channel)
    try:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        model = info.models[0]
        clients = args.clients or 2 * model.batch_size
        for index in range(min(len(clips), 4)):  # first calls pay for caches; not measured
            stub.Transcribe(pb.TranscribeRequest(audio=clips[index][0]), timeout=CALL_TIMEOUT_S)

        rows = []
        print(f"capacity run: {clients} closed-loop clients for {args.duration_s:g} s", flush=True)
        recorder, wall = closed_loop(stub, clips, clients, args.duration_s)
        capacity = summarize(f"capacity×{clients}", recorder, wall, None)
        rows.append(capacity)
        rate = capacity["ok_calls_per_s"]
        for level in (float(x) for x in args.levels.split(",") if x.strip()):
            print(f"open-loop run at {level:g}× capacity ({level * rate:.2f} calls/s)", flush=True)
            recorder, wall = open_loop(stub, clips, level * rate, args.duration_s, args.seed)
            rows.append(summarize(f"{level:g}× capacity", recorder, wall, level * rate))
        print_table(rows)
        result = {
            "machine_name": args.machine_name,
            "machine_at_start": started_on,
            "machine_at_end": machine(),
            "server": {"model": model.name, "device": model.device, "dtype": model.dtype,
                       "batch_size": model.batch_size,
                       "max_queue_audio_s": info.limits.max_queue_audio_s,
                       "max_concurrent_calls": info.limits.max_concurrent_calls},
            "clip_s": args.clip_s, "clips": len(clips), "audio": args.audio.name,
            "duration_s": args.duration_s, "capacity_calls_per_s": rate, "runs": rows,
        }
    finally:
        channel.close()
        exit_record = stop_server(process) if process is not None else None
    if exit_record is not None:
        result["server_exit_after_sigterm"] = exit_record
        print(f"server after SIGTERM: {exit_record}")
    if args.out:
        write_report(args.out, result)
        print(f"wrote {args.out}")


def stop_server(process: subprocess.Popen) -> dict:
    """SIGTERM the server, as a pod's stop does, and record how (and how fast) it ended."""
    began = time.perf_counter()
    process.terminate()
    try:
        code = process.wait(SERVER_EXIT_WAIT_S)
        return {"exit_code": code, "seconds": round(time.perf_counter() - began, 2)}
    except subprocess.TimeoutExpired:
        # Still running: its stacks, native ones too where py-spy is installed
        # (and allowed to attach), and the Python stacks steno serve writes on
        # SIGUSR1 go to stderr; then it is killed so the run ends.
        if shutil.which("py-spy"):
            subprocess.run(["py-spy", "dump", "--native", "--pid", str(process.pid)],
                           timeout=60, check=False)
        process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        process.kill()
        process.wait()
        return {"exit_code": None, "seconds": None,
                "hung": f"still running {SERVER_EXIT_WAIT_S} s after SIGTERM; stacks on stderr"}


if __name__ == "__main__":
    main()
