"""The decoding flags ``steno transcribe``, ``serve`` and ``work`` share (engine settings)."""

from __future__ import annotations

import argparse


def add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    """``--int8-cross-kv``, ``--beam-size`` and ``--deterministic`` (EngineConfig fields)."""
    parser.add_argument("--int8-cross-kv", action="store_true",
                        help="GPU: keep cross-attention keys and values as int8 (about half the "
                             "bytes each decoder step reads; bench/gpu_correctness.py checks "
                             "tokens)")
    parser.add_argument("--beam-size", type=int, default=1, metavar="N",
                        help="beams per window, 1 to 16 (default 1: greedy); each beam takes a "
                             "decoder slot's memory and reads; torch backend only")
    parser.add_argument("--deterministic", action="store_true",
                        help="GPU: repeatable decoder attention kernels, the same tokens for the "
                             "same input every time (large-v3 fp16 about 30 %% slower)")
