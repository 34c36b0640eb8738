"""Repeatability on the GPU: decode each real-speech window many times, count distinct outputs.

Uses the packed tiny.en weights and windows of ``bench/gpu_correctness.py``
(torch and transformers only). Each window is decoded alone ``--repeats``
times with SDPA's default attention kernels and with ``deterministic=True``
(the memory-efficient kernel only); a window whose tokens are not the same
every time is listed with how often each outcome came up. Prints a table and
writes JSON.

    python bench/repeatability.py bench/carry/tiny --out bench/results/repeatability-h100.json
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "inference" / "src"))
sys.path.insert(0, str(REPO / "bench"))

from gpu_correctness import load_packed_model  # noqa: E402
from steno_inference.benchmarking.machine import describe  # noqa: E402
from steno_inference.benchmarking.report import write_report  # noqa: E402
from steno_inference.features import LogMel  # noqa: E402
from steno_inference.runner import DecodeRequest, WhisperRunner  # noqa: E402
from steno_inference.tokens import WhisperTokens  # noqa: E402


def outcomes(runner: WhisperRunner, features: torch.Tensor, key: int,
             repeats: int) -> collections.Counter[tuple[int, ...]]:
    seen: collections.Counter[tuple[int, ...]] = collections.Counter()
    for _ in range(repeats):
        (result,) = runner.decode([DecodeRequest(key, features[key], None)])
        seen[result.tokens] += 1
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="packed weights and windows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = torch.device("cuda:0")
    model = load_packed_model(args.directory, device, torch.float16)
    tokens = WhisperTokens.from_generation_config(
        model.generation_config, int(model.config.max_target_positions))
    with np.load(args.directory / "windows.npz") as data:
        windows = [data[f"arr_{i}"] for i in range(len(data.files))]
    features = LogMel(int(model.config.num_mel_bins), device)(windows)

    report: dict[str, object] = {"machine": describe(device), "windows": len(windows),
                                 "repeats": args.repeats, "modes": {}}
    modes: dict[str, object] = {}
    for name, deterministic in (("default kernels", False), ("deterministic", True)):
        runner = WhisperRunner(model, tokens, device, torch.float16, max_batch=4,
                               deterministic=deterministic)
        started = time.perf_counter()
        unstable = {}
        for key in range(len(windows)):
            seen = outcomes(runner, features, key, args.repeats)
            if len(seen) > 1:
                unstable[str(key)] = sorted(seen.values(), reverse=True)
        modes[name] = {"windows_not_repeatable": unstable,
                       "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name:16} windows not repeatable: {len(unstable):2d} of {len(windows)} "
              f"{unstable}", flush=True)
    report["modes"] = modes
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
