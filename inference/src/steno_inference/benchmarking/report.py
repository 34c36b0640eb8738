"""Where a benchmark's JSON goes: one file, its folder made, indented, newline-terminated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(path: Path | None, report: Any) -> None:
    """Write ``report`` as JSON to ``path``; nothing when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
