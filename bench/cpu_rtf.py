"""Real-time factor of `steno transcribe` on this machine's CPU (or GPU), one process.

Loads the engine once, then transcribes the bundled 32 s sample (real
LibriVox speech) ``--repeats`` times and reports the median wall time per
run divided by the audio's duration. Prints a table and writes JSON.

    .venv/bin/python bench/cpu_rtf.py --model tiny.en --out bench/results/cpu-rtf.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from steno_inference.benchmarking.report import write_report
from steno_inference.engine import Engine, EngineConfig
from steno_inference.options import TranscribeOptions

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sense-and-sensibility.flac"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timestamps", default="segment", choices=("segment", "word"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    engine = Engine.load(EngineConfig(model=args.model, device=args.device))
    load_s = time.perf_counter() - started
    options = TranscribeOptions(timestamps=args.timestamps)
    walls = []
    duration_s = 0.0
    for _ in range(args.repeats):
        begin = time.perf_counter()
        transcript = engine.transcribe(str(SAMPLE), options)
        walls.append(time.perf_counter() - begin)
        duration_s = transcript.duration_s
    wall = statistics.median(walls)
    row = {
        "model": args.model,
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "timestamps": args.timestamps,
        "audio_s": round(duration_s, 2),
        "load_s": round(load_s, 2),
        "wall_s_median": round(wall, 3),
        "wall_s_all": [round(w, 3) for w in walls],
        "rtf": round(wall / duration_s, 4),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"{'model':10} {'device':6} {'audio s':>8} {'wall s':>8} {'RTF':>7}")
    print(f"{args.model:10} {row['device']:6} {duration_s:8.1f} {wall:8.2f} {row['rtf']:7.3f}")
    write_report(args.out, row)


if __name__ == "__main__":
    main()
