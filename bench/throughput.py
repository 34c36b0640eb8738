"""Throughput: steno's runner against the insanely-fast-whisper recipe, one process, one GPU.

The same as ``steno bench`` (see ``steno_inference.benchmarking.throughput``),
runnable from a checkout on a machine where steno is not installed, with torch
and transformers only (the GPU machine)::

    python bench/throughput.py --tokenizer bench/carry/tokenizer \
        --out bench/results/throughput-h100.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference" / "src"))

from steno_inference.commands import bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command")
    bench.register(subparsers)
    argv = ["bench", *sys.argv[1:]]
    return bench.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
