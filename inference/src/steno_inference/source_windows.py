"""A source's windows: decoded block by block, voice activity taken in turns with other sources."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from steno_inference.audio import AudioSource, iter_pcm_blocks
from steno_inference.segmentation import Window, WindowBuilder

READ_BLOCK_S = 30.0  # PCM block read from a source at a time
TURN_POLL_S = 0.5  # how often a source waiting for a turn checks its caller (engine.CANCEL_POLL_S)


class CallerGaveUp(Exception):
    """The caller gave up while its source waited for a turn at voice activity."""


def source_windows(builder: WindowBuilder, source: AudioSource, name: str,
                   kept: list[np.ndarray] | None, turns: threading.Semaphore,
                   cancelled: Callable[[], bool]) -> Iterator[Window]:
    """The windows of ``source`` (its blocks also appended to ``kept`` when given)."""
    for block in iter_pcm_blocks(source, READ_BLOCK_S, name=name):
        if kept is not None:
            kept.append(block)
        yield from _take_turn(turns, cancelled, partial(builder.feed, block))
    yield from _take_turn(turns, cancelled, builder.finish)


def _take_turn(turns: threading.Semaphore, cancelled: Callable[[], bool],
               step: Callable[[], list[Window]]) -> list[Window]:
    """``step()`` once a turn is free; raises CallerGaveUp if the caller gives up first."""
    # Waiting in short slices: a source queued behind others must notice that
    # its caller went away (a deadline, a drain) instead of running on.
    while not turns.acquire(timeout=TURN_POLL_S):
        if cancelled():
            raise CallerGaveUp
    try:
        return step()
    finally:
        turns.release()
