"""Where steno keeps what it builds once and reuses: converted models, binaries.

One convention for the whole project: ``$STENO_CACHE_DIR`` when set, else
``~/.cache/steno``. The environment is read when the function is called, never
at import, so tests and callers can point it elsewhere at any time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CACHE_DIR_ENV = "STENO_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/steno")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the cache directory (not created): ``$STENO_CACHE_DIR`` or ``~/.cache/steno``."""
    env = os.environ if environ is None else environ
    configured = env.get(CACHE_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR.expanduser()
