"""Attention implementations across Whisper sizes: time and peak VRAM of greedy decoding.

In the style of the Whisper flash-attention benchmark steno started from: for
each model shape (random weights, fp16) and decoder depth, transformers'
``generate()`` (greedy, no timestamps, exactly ``tokens`` new tokens) with
``attn_implementation`` eager, sdpa and flash_attention_2 (where the flash-attn
package is importable), and steno's runner on the same model, at batch 1 × 25
tokens and batch 32 × 256 tokens. Each cell is one timed call after a short
warm-up; VRAM is PyTorch's peak allocated memory during the call, weights
included.

    python bench/attention.py --out bench/results/attention-h100.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference" / "src"))

from steno_inference.benchmarking.machine import describe
from steno_inference.benchmarking.report import write_report
from steno_inference.benchmarking.shapes import SHAPES, model_tokens, random_model
from steno_inference.runner import DecodeRequest, WhisperRunner

SHAPE_NAMES = ("tiny", "base", "small", "medium", "large-v3", "large-v3-turbo",
               "distil-large-v3")
CASES = ((1, 25), (32, 256))  # (batch, new tokens)
SHAPE_NAMES_WITH_TOY = (*SHAPE_NAMES, "toy")
WARMUP_TOKENS = 4
N_FRAMES = 3000


def implementations() -> list[str]:
    found = ["eager", "sdpa"]
    if importlib.util.find_spec("flash_attn") is not None:
        found.append("flash_attention_2")
    return found


def time_generate(model, features: torch.Tensor, tokens: int) -> tuple[float, float]:
    def call(n: int) -> None:
        model.generate(features, min_new_tokens=n, max_new_tokens=n, num_beams=1,
                       do_sample=False, language="en", task="transcribe")

    call(WARMUP_TOKENS)
    return _measure(lambda: call(tokens), features.device)


def time_steno(model, features: torch.Tensor, tokens: int) -> tuple[float, float]:
    device = features.device
    runner = WhisperRunner(model, model_tokens(model), device, model.dtype,
                           max_batch=features.shape[0])

    def call(n: int) -> None:
        requests = [DecodeRequest(i, features[i], "en", fixed_new_tokens=n)
                    for i in range(features.shape[0])]
        list(runner.decode(requests))

    runner.capture_graphs(tokens + 4)
    call(WARMUP_TOKENS)
    return _measure(lambda: call(tokens), device)


def _measure(call, device: torch.device) -> tuple[float, float]:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with torch.inference_mode():
        call()
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    return wall, torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPE_NAMES))
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--cases", choices=("issue", "smoke"), default="issue")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    report = {"machine": describe(device), "cells": []}
    cases = CASES if args.cases == "issue" else ((1, 5), (4, 12))
    columns = [*implementations(), "steno"]
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        for batch, tokens in cases:
            features = torch.randn(batch, shape.n_mels, N_FRAMES, device=device, dtype=dtype)
            for column in columns:
                attention = "sdpa" if column == "steno" else column
                model = random_model(shape, device, dtype, attention=attention)
                try:
                    if column == "steno":
                        wall, vram = time_steno(model, features, tokens)
                    else:
                        wall, vram = time_generate(model, features, tokens)
                    cell = {"shape": name, "decoder_layers": shape.decoder_layers,
                            "batch": batch, "tokens": tokens, "implementation": column,
                            "wall_s": round(wall, 4), "peak_vram_gib": round(vram, 3)}
                except torch.OutOfMemoryError as error:
                    cell = {"shape": name, "batch": batch, "tokens": tokens,
                            "implementation": column, "error": f"out of memory: {error}"[:200]}
                report["cells"].append(cell)
                print(json.dumps(cell), flush=True)
                del model
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                write_report(args.out, report)
    report["table"] = table(report["cells"], columns)
    print(report["table"])
    write_report(args.out, report)
    return 0


def table(cells: list[dict], columns: list[str]) -> str:
    head = f"{'shape':16} {'dec':>3} {'batch x tokens':>14} " + " ".join(
        f"{c + ' s':>13} {c + ' GiB':>13}" for c in columns)
    lines = [head, "-" * len(head)]
    keys = sorted({(c["shape"], c["batch"], c["tokens"]) for c in cells},
                  key=lambda k: (SHAPE_NAMES_WITH_TOY.index(k[0]), k[1]))
    for shape, batch, tokens in keys:
        row = f"{shape:16} {SHAPES[shape].decoder_layers:3d} {f'{batch} x {tokens}':>14} "
        parts = []
        for column in columns:
            cell = next((c for c in cells if (c["shape"], c["batch"], c["tokens"],
                                              c["implementation"]) ==
                         (shape, batch, tokens, column)), None)
            if cell is None or "error" in cell:
                parts.append(f"{'-':>13} {'-':>13}")
            else:
                parts.append(f"{cell['wall_s']:13.3f} {cell['peak_vram_gib']:13.2f}")
        lines.append(row + " ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
