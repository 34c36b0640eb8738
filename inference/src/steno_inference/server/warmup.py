"""Warm-up before health turns SERVING: one real window through the encoder and decoder.

The first call on a fresh process pays for lazy initialisation (CUDA context
and kernels, cuDNN's algorithm search, allocator growth, torch's dispatch
caches). The server pays it instead, before it reports SERVING: the log-mel
of one window of silence goes through the engine's own scheduler (so it is
safe even when a job worker already uses the engine), is encoded, and is
decoded for exactly :data:`WARMUP_DECODE_TOKENS` tokens.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from steno_inference.engine import Engine
from steno_inference.runner import DecodeRequest, DecodeResult
from steno_inference.segmentation import N_SAMPLES

WARMUP_DECODE_TOKENS = 8  # a short decode: every step kernel runs, none of it for long
WARMUP_TIMEOUT_S = 600.0  # a CPU on a busy machine can be slow; a hang is still caught


def warm_up(engine: Engine, timeout_s: float = WARMUP_TIMEOUT_S) -> float:
    """Run the warm-up window; returns its wall time in seconds."""
    started = time.perf_counter()
    features = engine.features([np.zeros(N_SAMPLES, dtype=np.float32)])[0]
    finished = threading.Event()
    failure: list[str] = []

    def on_result(result: DecodeResult) -> None:
        if result.failure is not None:
            failure.append(result.failure)
        finished.set()

    request = DecodeRequest(
        key="warm-up", features=features, language=None,
        fixed_new_tokens=WARMUP_DECODE_TOKENS,
    )
    engine.scheduler.submit(request, 0.0, on_result)
    if not finished.wait(timeout_s):
        raise RuntimeError(f"warm-up did not finish within {timeout_s:.0f} s")
    if failure:
        raise RuntimeError(f"warm-up failed: {failure[0]}")
    return time.perf_counter() - started
