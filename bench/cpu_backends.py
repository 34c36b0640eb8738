"""CPU real-time factor of the torch and ONNX backends, one process, this machine's cores.

For tiny.en and base, each of torch fp32, ONNX fp32 and ONNX int8 loads an
engine (ONNX graphs exported into the cache beforehand, so export time is
not counted), warms up on the 30 s file, then transcribes

* the bundled 32 s LibriVox sample (``samples/sense-and-sensibility.flac``),
  ``--repeats`` times (median), and
* a 5-minute file of real speech built by concatenating the sample and
  Debian's pocketsphinx LibriVox and cards utterances with 1 s pauses,
  once.

The real-time factor is wall time over audio duration. The machine is
shared, so the load average before and after each measurement is recorded
with it; run it when ``uptime`` shows the machine quietest.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/cpu_backends.py \\
        --out bench/results/cpu-backends.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from steno_inference.audio import decode_audio
from steno_inference.benchmarking.report import write_report
from steno_inference.engine import Engine, EngineConfig
from steno_inference.options import TranscribeOptions

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sense-and-sensibility.flac"
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
SAMPLE_RATE = 16_000
LONG_FILE_S = 300.0  # the "5-minute file"
PAUSE_S = 1.0
MODELS = ("tiny.en", "base")
CONFIGS = (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def build_long_file(path: Path) -> float:
    """Write 5 minutes of real speech (16 kHz mono s16 WAV); returns its duration."""
    pieces = [decode_audio(str(SAMPLE))]
    for pattern in ("librivox/*.wav", "cards/*.wav"):
        pieces += [decode_audio(str(p)) for p in sorted(POCKETSPHINX.glob(pattern))]
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    out: list[np.ndarray] = []
    total = 0
    target = int(LONG_FILE_S * SAMPLE_RATE)
    while total < target:
        for piece in pieces:
            take = min(len(piece), target - total)
            out += [piece[:take], pause]
            total += take + len(pause)
            if total >= target:
                break
    audio = np.concatenate(out)[:target]
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return target / SAMPLE_RATE


def measure(engine: Engine, path: Path, repeats: int) -> dict[str, object]:
    options = TranscribeOptions()
    walls = []
    before = load_average()
    transcript = None
    for _ in range(repeats):
        begin = time.perf_counter()
        transcript = engine.transcribe(str(path), options)
        walls.append(time.perf_counter() - begin)
    if transcript is None:
        raise RuntimeError("no repeats")
    wall = statistics.median(walls)
    return {
        "audio_s": round(transcript.duration_s, 2),
        "wall_s_median": round(wall, 3),
        "wall_s_all": [round(w, 3) for w in walls],
        "rtf": round(wall / transcript.duration_s, 4),
        "load_avg_before": before,
        "load_avg_after": load_average(),
        "text_words": len(transcript.text.split()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of the 30 s file")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        long_path = Path(tmp) / "five-minutes.wav"
        build_long_file(long_path)
        for model in args.models.split(","):
            for backend, dtype in CONFIGS:
                # Export (first use) happens here, outside the timed runs.
                started = time.perf_counter()
                engine = Engine.load(EngineConfig(model=model, device="cpu", backend=backend,
                                                  dtype=dtype))
                load_s = time.perf_counter() - started
                engine.transcribe(str(SAMPLE), TranscribeOptions())  # warm-up
                for name, path, repeats in (("30s", SAMPLE, args.repeats),
                                            ("5min", long_path, 1)):
                    row = {"model": model, "backend": backend, "dtype": dtype, "file": name,
                           "load_s": round(load_s, 2), **measure(engine, path, repeats)}
                    rows.append(row)
                    print(f"{model:8} {backend:6} {dtype:5} {name:5} "
                          f"audio {row['audio_s']:7.1f} s  wall {row['wall_s_median']:7.2f} s  "
                          f"RTF {row['rtf']:.4f}  load {row['load_avg_before']}", flush=True)
                engine.close()
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        "files": {"30s": str(SAMPLE.relative_to(ROOT)),
                  "5min": f"{LONG_FILE_S:.0f} s: the 30 s sample + pocketsphinx librivox "
                          f"and cards utterances, {PAUSE_S:.0f} s pauses, repeated"},
        "rows": rows,
    }
    write_report(args.out, result)


if __name__ == "__main__":
    main()
