"""``steno bench``: steno's runner against the insanely-fast-whisper recipe, side by side.

Random-weight models of the named Whisper shapes (no downloads), a fixed
number of decoded tokens per window on both sides, one process, one GPU
(plus one runner per GPU when there are several). Prints a table and writes
JSON; ``bench/throughput.py`` is the same with the repository's paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "bench"
EXIT_OK = 0
EXIT_USAGE = 2


def _cap(text: str) -> float | None:
    return None if text in ("none", "off", "0") else float(text)


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="throughput of the engine against the insanely-fast-whisper recipe",
        description="Time steno's runner and the transformers pipeline recipe on the same "
                    "audio with random-weight models; print a table and write JSON.",
    )
    bench.add_argument("--shapes", default="large-v3,large-v3-turbo,distil-large-v3",
                       help="comma-separated shapes: tiny, base, small, medium, large-v3, "
                            "large-v3-turbo, distil-large-v3")
    bench.add_argument("--minutes", type=float, default=150.0, help="audio per steno run")
    bench.add_argument("--new-tokens", type=int, default=110, help="decoded tokens per window")
    bench.add_argument("--recipe-minutes", type=float, default=30.0,
                       help="audio for the recipe's run (its rate scales); 0 skips it")
    bench.add_argument("--recipe-greedy", default="large-v3",
                       help="shapes whose recipe also runs with num_beams=1 ('' for none)")
    bench.add_argument("--tokenizer", type=Path, default=None,
                       help="a local Whisper tokenizer directory (needed by the recipe)")
    bench.add_argument("--memory-cap-gib", type=_cap, default=24.0,
                       help="also run capped to this much GPU memory; 'none' skips it")
    bench.add_argument("--max-slots", type=int, default=None,
                       help="decoder slots (default: as many as memory allows)")
    bench.add_argument("--no-pcm", action="store_true", help="skip the run from PCM")
    bench.add_argument("--no-int8", action="store_true",
                       help="skip the run with int8 cross-attention keys and values")
    bench.add_argument("--int8-mode", type=int, choices=(0, 1, 2), default=None,
                       help="how the int8 kernel converts and multiplies (bench/kernels.py)")
    bench.add_argument("--beam-size", type=int, default=1, metavar="N",
                       help="above 1: also time beam search with N beams per window")
    bench.add_argument("--no-replicas", action="store_true",
                       help="skip the one-runner-per-GPU run on multi-GPU machines")
    bench.add_argument("--device", default="cuda:0")
    bench.add_argument("--out", type=Path, default=None, help="JSON path")


def run(args: argparse.Namespace) -> int:
    from steno_inference.benchmarking.throughput import Settings
    from steno_inference.benchmarking.throughput import run as run_bench

    settings = Settings(
        shapes=tuple(s for s in args.shapes.split(",") if s),
        minutes=args.minutes,
        new_tokens=args.new_tokens,
        recipe_minutes=args.recipe_minutes,
        greedy_recipe_shapes=tuple(s for s in args.recipe_greedy.split(",") if s),
        memory_cap_gib=args.memory_cap_gib,
        pcm=not args.no_pcm,
        int8_cross_kv=not args.no_int8,
        int8_mode=args.int8_mode,
        replicas=not args.no_replicas,
        beam_size=args.beam_size,
        max_slots=args.max_slots,
        tokenizer_dir=args.tokenizer,
        device=args.device,
        out=args.out,
    )
    report = run_bench(settings)
    print(report["table"])
    return EXIT_OK
