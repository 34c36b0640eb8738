"""Where a decode step and an encoder batch spend their time, on one GPU.

For one model shape (random weights, fp16): the replay time of a captured
decode step at a few batch sizes, set against the bytes of cross-attention
keys and values it must read; the CUDA kernels of one step and of one encoder
batch by total time (torch.profiler); and the encoder's achieved FLOP rate.
A diagnostic for the throughput benchmark, not a benchmark of its own::

    python bench/profile_step.py --shape large-v3 --out bench/results/profile-h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference" / "src"))

from steno_inference.benchmarking.report import write_report
from steno_inference.benchmarking.shapes import SHAPES, model_tokens, random_model
from steno_inference.decoder_pass import N_AUDIO_CTX
from steno_inference.runner import WhisperRunner

POSITION = 100  # mid-window: the self-attention length bucket is 128
REPLAYS = 10
ENCODER_BATCH = 32


def prime(runner: WhisperRunner, batch: int) -> None:
    """Every row of ``[:batch]`` decoding at POSITION, far from any stopping rule."""
    state = runner.state
    for column, value in ((state.position, POSITION), (state.prompt_len, 1),
                          (state.gen_count, 50), (state.fixed_new_tokens, 400),
                          (state.next_token, 100), (state.last_token, 100),
                          (state.prev_token, 100), (state.last_stamp, -1)):
        column.fill_(value)
    state.active.zero_()
    state.active[:batch] = True
    state.finished.zero_()


def time_encoder(runner: WhisperRunner, features: torch.Tensor) -> float:
    """Seconds of one encoder batch, after one untimed call (allocations, kernel choice)."""
    with torch.inference_mode():
        runner.encode(features)
        torch.cuda.synchronize()
        started = time.perf_counter()
        runner.encode(features)
        torch.cuda.synchronize()
        return time.perf_counter() - started


def kernel_table(prof, top: int) -> list[dict]:
    rows = []
    for event in prof.key_averages():
        total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if total > 0 and event.device_type.name == "CUDA":
            rows.append({"kernel": event.key[:110], "calls": event.count,
                         "total_ms": round(total / 1000, 3)})
    rows.sort(key=lambda r: -r["total_ms"])
    return rows[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="large-v3")
    parser.add_argument("--slots", type=int, default=218)
    parser.add_argument("--batches", default="32,96,218")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda:0")
    shape = SHAPES[args.shape]
    model = random_model(shape, device, torch.float16)
    runner = WhisperRunner(model, model_tokens(model), device, torch.float16, args.slots)
    with torch.inference_mode():
        encoded = torch.randn(8, N_AUDIO_CTX, shape.d_model, device=device, dtype=torch.float16)
        for start in range(0, args.slots, 8):
            rows = torch.arange(start, min(start + 8, args.slots), device=device)
            runner.decoder.fill_cross(rows, encoded[: len(rows)])
    cross_bytes = 2 * shape.decoder_layers * N_AUDIO_CTX * shape.d_model * 2
    report: dict = {"shape": args.shape, "slots": args.slots, "steps": []}
    for batch in (int(b) for b in args.batches.split(",")):
        with torch.inference_mode():
            prime(runner, batch)
            if runner.graphs is None:
                raise SystemExit("this diagnostic needs a CUDA device")
            runner.graphs.run(batch, POSITION + REPLAYS + 1)  # capture
            prime(runner, batch)
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(REPLAYS):
                runner.graphs.run(batch, POSITION + REPLAYS + 1)
            torch.cuda.synchronize()
        step_s = (time.perf_counter() - started) / REPLAYS
        entry = {"batch": batch, "step_ms": round(step_s * 1e3, 3),
                 "us_per_window_token": round(step_s / batch * 1e6, 1),
                 "cross_kv_gbs": round(batch * cross_bytes / step_s / 1e9, 0)}
        report["steps"].append(entry)
        print(json.dumps(entry), flush=True)

    batch = max(int(b) for b in args.batches.split(","))
    with torch.inference_mode():
        prime(runner, batch)
        runner._step_body(batch, 128)
        torch.cuda.synchronize()
        prime(runner, batch)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            runner._step_body(batch, 128)
            torch.cuda.synchronize()
    report["step_kernels"] = kernel_table(prof, 25)

    features = torch.randn(ENCODER_BATCH, shape.n_mels, 3000, device=device,
                           dtype=torch.float16)
    encoder_s = time_encoder(runner, features)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        runner.encode(features)
        torch.cuda.synchronize()
    d, layers = shape.d_model, shape.encoder_layers
    flops = ENCODER_BATCH * (
        layers * (4 * N_AUDIO_CTX * d * d * 2 + 2 * N_AUDIO_CTX * d * 4 * d * 2
                  + 4 * N_AUDIO_CTX * N_AUDIO_CTX * d)
        + 3000 * shape.n_mels * 3 * d * 2 + N_AUDIO_CTX * d * 3 * d * 2
    )
    torch.backends.cudnn.benchmark = True
    benchmark_s = time_encoder(runner, features)
    torch.backends.cudnn.benchmark = False
    report["encoder"] = {"batch": ENCODER_BATCH, "seconds": round(encoder_s, 4),
                         "seconds_cudnn_benchmark": round(benchmark_s, 4),
                         "ms_per_window": round(encoder_s / ENCODER_BATCH * 1e3, 2),
                         "tflops": round(flops / encoder_s / 1e12, 1),
                         "kernels": kernel_table(prof, 20)}
    print(json.dumps({"steps": report["steps"], "step_kernels": report["step_kernels"][:12],
                      "encoder": {**report["encoder"],
                                  "kernels": report["encoder"]["kernels"][:10]}}, indent=0))
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
