"""Diarization benchmark: N minutes of multi-speaker speech through the offline pipeline.

The base clip (about 90 s, four voices) is the real two-speaker recording built
from pocketsphinx-testdata (a LibriVox reader and a card caller, alternating)
followed by a two-voice flite dialogue (awb and slt); it is repeated to the
requested length, references included. Machines without flite or the
pocketsphinx data (the GPU machine) read the same clip from a fixture written
here first::

    python bench/diarization.py --write-fixture bench/diarization-fixture.npz
    python bench/diarization.py --export-weights bench/diarization-weights
    # on the GPU machine (torch + numpy only):
    python bench/diarization.py --minutes 150 --fixture bench/diarization-fixture.npz \
        --weights-dir bench/diarization-weights --out bench/diarization-h100.json

The timed run follows a warm-up call on 60 s of the same audio (CUDA context,
cuDNN autotuning). DER is frame-level (10 ms, no collar, optimal one-to-one
speaker mapping), and also pyannote.metrics' DER when that package is
importable; both count the whole audio.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "inference" / "src"))
sys.path.insert(0, str(REPO / "tests"))

from steno_inference.benchmarking.report import write_report  # noqa: E402
from steno_inference.diarization import (  # noqa: E402
    DiarizationOptions,
    Diarizer,
    PipelineConfig,
    SpeakerTurn,
    locate_weights,
)

SAMPLE_RATE = 16000
DER_FRAME_S = 0.01
WARMUP_S = 60.0

Reference = list[tuple[float, float, str]]


def build_base_clip() -> tuple[np.ndarray, Reference]:
    """Real two-speaker recording, then a flite dialogue (needs flite and the Debian data)."""
    from support.speech import flite_dialogue, pocketsphinx_dialogue

    real, real_ref = pocketsphinx_dialogue(gap_s=1.0)
    with tempfile.TemporaryDirectory() as scratch:
        synthetic, synthetic_ref = flite_dialogue(Path(scratch), voices=("awb", "slt"))
    offset = real.size / SAMPLE_RATE
    reference = [(t.start_s, t.end_s, t.speaker) for t in real_ref]
    reference += [(t.start_s + offset, t.end_s + offset, t.speaker) for t in synthetic_ref]
    return np.concatenate([real, synthetic]).astype(np.float32), reference


def write_fixture(path: Path) -> None:
    audio, reference = build_base_clip()
    np.savez_compressed(
        path,
        audio=(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16),
        starts=np.array([r[0] for r in reference]),
        ends=np.array([r[1] for r in reference]),
        speakers=np.array([r[2] for r in reference]),
    )
    print(f"wrote {path} ({audio.size / SAMPLE_RATE:.1f} s, {len(reference)} turns)")


def read_fixture(path: Path) -> tuple[np.ndarray, Reference]:
    data = np.load(path)
    audio = data["audio"].astype(np.float32) / 32768.0
    reference = [
        (float(s), float(e), str(k))
        for s, e, k in zip(data["starts"], data["ends"], data["speakers"], strict=True)
    ]
    return audio, reference


def tile(audio: np.ndarray, reference: Reference, minutes: float) -> tuple[np.ndarray, Reference]:
    """The clip repeated (and cut) to ``minutes``; speakers keep their names across copies."""
    total = int(minutes * 60 * SAMPLE_RATE)
    copies = -(-total // audio.size)
    period = audio.size / SAMPLE_RATE
    tiled = np.tile(audio, copies)[:total]
    end_s = total / SAMPLE_RATE
    turns = [
        (s + k * period, min(e + k * period, end_s), spk)
        for k in range(copies)
        for s, e, spk in reference
        if s + k * period < end_s
    ]
    return tiled, turns


def frame_der(reference: Reference, hypothesis: list[SpeakerTurn], duration_s: float) -> float:
    """DER on 10 ms frames with the best one-to-one mapping of hypothesis to reference."""
    frames = int(np.ceil(duration_s / DER_FRAME_S))
    ref_names = sorted({r[2] for r in reference})
    hyp_names = sorted({h.speaker for h in hypothesis})
    ref = np.full(frames, -1)
    hyp = np.full(frames, -1)
    for s, e, spk in reference:
        ref[int(s / DER_FRAME_S) : int(e / DER_FRAME_S)] = ref_names.index(spk)
    for turn in hypothesis:
        hyp[int(turn.start_s / DER_FRAME_S) : int(turn.end_s / DER_FRAME_S)] = hyp_names.index(
            turn.speaker
        )
    total = int((ref >= 0).sum())
    if total == 0:
        return 0.0
    both = (ref >= 0) & (hyp >= 0)
    counts = np.zeros((len(ref_names), max(len(hyp_names), 1)), dtype=np.int64)
    np.add.at(counts, (ref[both], hyp[both]), 1)
    matched = _best_matching(counts)
    miss = int(((ref >= 0) & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    confusion = int(both.sum()) - matched
    return (miss + false_alarm + confusion) / total


def _best_matching(counts: np.ndarray) -> int:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        linear_sum_assignment = None
    if linear_sum_assignment is not None:
        rows, cols = linear_sum_assignment(-counts)
        return int(counts[rows, cols].sum())
    r, h = counts.shape
    if min(r, h) > 6:  # brute force is too slow; a greedy matching is a lower bound
        left, total = counts.copy(), 0
        for _ in range(min(r, h)):
            i, j = np.unravel_index(np.argmax(left), left.shape)
            total += int(left[i, j])
            left[i, :] = -1
            left[:, j] = -1
        return total
    if r <= h:
        return max(
            int(sum(counts[i, p[i]] for i in range(r))) for p in itertools.permutations(range(h), r)
        )
    return max(
        int(sum(counts[p[j], j] for j in range(h))) for p in itertools.permutations(range(r), h)
    )


def pyannote_der(reference: Reference, hypothesis: list[SpeakerTurn], duration_s: float):
    try:
        from pyannote.core import Annotation, Segment, Timeline
        from pyannote.metrics.diarization import DiarizationErrorRate
    except ImportError:
        return None
    ref, hyp = Annotation(), Annotation()
    for i, (s, e, spk) in enumerate(reference):
        ref[Segment(s, e), i] = spk
    for i, turn in enumerate(hypothesis):
        hyp[Segment(turn.start_s, turn.end_s), i] = turn.speaker
    uem = Timeline([Segment(0.0, duration_s)])
    return float(DiarizationErrorRate(collar=0.0)(ref, hyp, uem=uem))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--fixture", type=Path, help="base clip written by --write-fixture")
    parser.add_argument("--weights-dir", type=Path, help="directory with the two weight files")
    parser.add_argument("--num-speakers", type=int, default=None)
    parser.add_argument(
        "--precision",
        choices=("auto", "fp16", "fp32"),
        default="auto",
        help="auto: fp16 autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument("--write-fixture", type=Path, help="write the base clip and exit")
    parser.add_argument("--export-weights", type=Path, help="copy the weights here and exit")
    args = parser.parse_args(argv)

    if args.write_fixture:
        write_fixture(args.write_fixture)
        return 0
    if args.export_weights:
        paths = locate_weights()
        args.export_weights.mkdir(parents=True, exist_ok=True)
        for path in (paths.segmentation, paths.embedding):
            shutil.copy2(path, args.export_weights / path.name)
        print(
            f"copied {paths.segmentation.name} and {paths.embedding.name} to {args.export_weights}"
        )
        return 0

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    base, base_ref = read_fixture(args.fixture) if args.fixture else build_base_clip()
    audio, reference = tile(base, base_ref, args.minutes)
    duration_s = audio.size / SAMPLE_RATE
    options = DiarizationOptions(num_speakers=args.num_speakers)

    started = time.perf_counter()
    half = {"auto": None, "fp16": True, "fp32": False}[args.precision]
    config = PipelineConfig(half_precision=half)
    diarizer = Diarizer.load(device, weights_dir=args.weights_dir, config=config)
    load_s = time.perf_counter() - started
    diarizer(audio[: int(min(WARMUP_S, duration_s) * SAMPLE_RATE)], options)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    turns = diarizer(audio, options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total_s = time.perf_counter() - started
    stages = diarizer.last_times

    result = {
        "benchmark": "diarization",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "audio_minutes": round(duration_s / 60, 3),
        "base_clip_s": round(base.size / SAMPLE_RATE, 2),
        "reference_speakers": len({r[2] for r in reference}),
        "found_speakers": len({t.speaker for t in turns}),
        "turns": len(turns),
        "windows": stages.windows,
        "half_precision": diarizer.half_precision,
        "load_s": round(load_s, 3),
        "speech_activity_s": round(stages.speech_s, 3),
        "fbank_s": round(stages.fbank_s, 3),
        "embeddings_s": round(stages.embeddings_s, 3),
        "clustering_s": round(stages.clustering_s, 3),
        "diarization_s": round(total_s, 3),
        "realtime_factor": round(duration_s / total_s, 1),
        "der_frame": round(frame_der(reference, turns, duration_s), 4),
        "der_pyannote_metrics": None,
        "peak_gpu_memory_mb": (
            round(torch.cuda.max_memory_allocated(device) / 2**20)
            if device.type == "cuda"
            else None
        ),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    der = pyannote_der(reference, turns, duration_s)
    result["der_pyannote_metrics"] = None if der is None else round(der, 4)

    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.out:
        write_report(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
