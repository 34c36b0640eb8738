"""The fastest int8 kernel mode that keeps ≥ 99 % token agreement with fp16 (device runs).

Reads the JSON of ``bench/kernels.py`` and ``bench/gpu_correctness.py`` from
one machine and prints the mode to pass to ``bench/throughput.py --int8-mode``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

AGREEMENT_FLOOR = 0.99


def main() -> int:
    kernels = json.loads(Path(sys.argv[1]).read_text())
    correctness = json.loads(Path(sys.argv[2]).read_text())
    by_mode = correctness["int8_cross_kv_by_mode"]
    timed = {int(row["variant"].split()[-1]): row["ms"] for row in kernels["cross_attention"]
             if row["variant"].startswith("int8 mode")}
    good = [mode for mode in timed
            if by_mode[str(mode)]["agreement_vs_gpu_fp16"] >= AGREEMENT_FLOOR]
    print(min(good, key=lambda mode: timed[mode]) if good else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
