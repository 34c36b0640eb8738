"""Voice activity speed: Silero frame by frame vs the block-batched network, on 1..N threads.

Each thread runs voice activity over 5 s clips of real speech (each clip a
fresh source) for a fixed time; the table gives clips per second over all
threads. Beside them one more thread runs a loop of small torch calls, as the
scheduler thread that feeds the GPU does, and the table gives its rate: how
much voice activity leaves the rest of the process (the GIL and the cores).

    python3 bench/vad_speed.py --threads 1,4,16 --out bench/results/vad-speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from steno_inference.audio import SAMPLE_RATE, decode_audio
from steno_inference.benchmarking.report import write_report
from steno_inference.silero_net import FRAME_SAMPLES
from steno_inference.vad import SpeechDetector, silero_model_path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sense-and-sensibility.flac"
SMALL_OPS_PER_STEP = 30  # a scheduler step's worth of small torch calls


def _frame_by_frame() -> Callable[[np.ndarray], np.ndarray]:
    """Silero's own TorchScript model called once per 32 ms frame (a model per thread)."""
    model = torch.jit.load(str(silero_model_path()), map_location="cpu")  # type: ignore[no-untyped-call]
    model.eval()

    def run(pcm: np.ndarray) -> np.ndarray:
        model.reset_states()
        n = pcm.size // FRAME_SAMPLES
        frames = torch.from_numpy(pcm[: n * FRAME_SAMPLES]).view(n, FRAME_SAMPLES)
        with torch.inference_mode():
            return np.array([float(model(frames[i : i + 1], SAMPLE_RATE).item()) for i in range(n)])

    return run


def _blocks(shared: SpeechDetector) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    def make() -> Callable[[np.ndarray], np.ndarray]:
        def run(pcm: np.ndarray) -> np.ndarray:
            return SpeechDetector(shared.net).probabilities(pcm)

        return run

    return make


def _small_op_loop(stop: threading.Event, counter: list[int]) -> None:
    x = torch.zeros(64)
    while not stop.is_set():
        for _ in range(SMALL_OPS_PER_STEP):
            x = x + 1.0
        counter[0] += 1


def measure(make: Callable[[], Callable[[np.ndarray], np.ndarray]], clips: list[np.ndarray],
            threads: int, seconds: float) -> dict:
    runners = [make() for _ in range(threads)]
    for run in runners:
        run(clips[0])  # first calls pay for caches and TorchScript's profiling runs
    stop = threading.Event()
    done = [0] * threads
    steps = [0]

    def worker(index: int) -> None:
        position = index
        while not stop.is_set():
            runners[index](clips[position % len(clips)])
            done[index] += 1
            position += threads

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    loop = threading.Thread(target=_small_op_loop, args=(stop, steps))
    began = time.perf_counter()
    for thread in [*pool, loop]:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in [*pool, loop]:
        thread.join()
    wall = time.perf_counter() - began
    clip_s = clips[0].size / SAMPLE_RATE
    return {"threads": threads, "clips": sum(done), "clips_per_s": round(sum(done) / wall, 1),
            "audio_s_per_s": round(sum(done) * clip_s / wall, 1),
            "side_loop_steps_per_s": round(steps[0] / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clip-s", type=float, default=5.0)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads (the engine uses 1 beside a GPU)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--machine-name", default=platform.node())
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    audio = decode_audio(str(SAMPLE))
    size = int(args.clip_s * SAMPLE_RATE)
    clips = [audio[i : i + size].copy() for i in range(0, audio.size - size + 1, size)]
    shared = SpeechDetector.load()
    reference, got = _frame_by_frame()(clips[1]), _blocks(shared)()(clips[1])
    max_diff = float(np.abs(reference - got).max())

    rows = []
    for threads in (int(x) for x in args.threads.split(",")):
        for name, make in (("frame by frame", _frame_by_frame), ("blocks", _blocks(shared))):
            row = {"implementation": name, **measure(make, clips, threads, args.seconds)}
            rows.append(row)
            print(f"{name:>15} threads {row['threads']:>3}  clips/s {row['clips_per_s']:>8}  "
                  f"audio s/s {row['audio_s_per_s']:>9}  side loop steps/s "
                  f"{row['side_loop_steps_per_s']:>9}", flush=True)
    result = {"machine_name": args.machine_name, "cpu_count": os.cpu_count(),
              "torch_threads": args.torch_threads, "clip_s": args.clip_s,
              "max_abs_probability_difference": max_diff, "rows": rows}
    print(f"largest probability difference, blocks vs frame by frame: {max_diff:.2e}")
    if args.out:
        write_report(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
