"""Decode steps captured as CUDA graphs, one per (batch bucket, key-length bucket).

A large-v3 decode step is about a thousand small kernels (32 layers × norms,
projections, two attentions, the MLP; then the rules). Launched one by one
from Python that costs several milliseconds of CPU time per step, which at
small batches is longer than the GPU work itself. Replaying a captured graph
launches them all in one call.

A graph has fixed shapes, so steps are bucketed: the batch is rounded up to
the next of a few sizes (rows past the busy ones are padding that the step's
``active`` mask leaves untouched) and the self-attention length up to the
next of a few lengths (the mask hides keys past each row's position). All
inputs and outputs are the slot-state tensors, updated in place, so a graph
keeps no output of its own and every graph can share one memory pool: their
temporaries are dead when a replay ends.

Capturing needs one eager warm-up run first (cuBLAS and cuDNN choose their
kernels then), and that run changes the slot state, so the state is saved
before it and restored after.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from steno_inference.slot_state import SlotState

LOG = logging.getLogger(__name__)

# Self-attention lengths a graph is captured for: a 30 s window rarely needs
# more than ~200 tokens, and reading 448 positions where 128 would do costs
# (448 - 128) / 1500 ≈ 21 % more bytes than the cross-attention alone. Steps
# of 32 up to 128 keep the self-attention at about a third of the positions
# it would read at a fixed 128 early in a window (measured on an H100,
# large-v3, 218 windows: 2.7 ms of a 24.3 ms step at length 128).
KV_BUCKETS = (32, 64, 96, 128, 192, 256, 448)
# Small batches in powers of two, then steps of 32 up to 256 and of 64 beyond:
# padding rows cost as much as busy ones (they read their cross-attention cache),
# so buckets stay close together where batches are large.
SMALL_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MID_BATCH_STEP, MID_BATCH_LIMIT = 32, 256
LARGE_BATCH_STEP = 64

StepBody = Callable[[int, int], None]


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes a graph is captured for, ending with ``max_batch`` itself."""
    sizes = [b for b in SMALL_BATCH_BUCKETS if b < max_batch]
    size = SMALL_BATCH_BUCKETS[-1] + MID_BATCH_STEP
    while size < max_batch:
        sizes.append(size)
        size += MID_BATCH_STEP if size < MID_BATCH_LIMIT else LARGE_BATCH_STEP
    sizes.append(max_batch)
    return tuple(sizes)


def round_up(value: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= value (the largest when none is)."""
    index = bisect.bisect_left(buckets, value)
    return buckets[min(index, len(buckets) - 1)]


class StepGraphs:
    """Replays a captured step for the bucket of (batch, kv_len), capturing it on first use."""

    def __init__(self, body: StepBody, state: SlotState, max_batch: int, n_ctx: int,
                 rows_per_slot: int = 1) -> None:
        self._body = body
        self._state = state
        # Buckets count rows: with beam search a slot's beams are whole rows.
        self.batch_buckets = tuple(rows_per_slot * b for b in batch_buckets(max_batch))
        self.kv_buckets = tuple(sorted({min(k, n_ctx) for k in KV_BUCKETS} | {n_ctx}))
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool: Any = None  # torch's graph pool handle (its type is private)
        self._stream: Any = None  # warm-up and capture stream, on the runner's device
        self.capture_s = 0.0  # time spent capturing, for the benchmark's report

    def bucket(self, batch: int, kv_len: int) -> tuple[int, int]:
        return round_up(batch, self.batch_buckets), round_up(kv_len, self.kv_buckets)

    def run(self, batch: int, kv_len: int) -> int:
        """One step over at least ``batch`` rows; returns the batch actually run."""
        key = self.bucket(batch, kv_len)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._capture(*key)
        graph.replay()
        return key[0]

    def capture(self, batches: Sequence[int], kv_lens: Sequence[int]) -> None:
        """Capture ahead of time (a server's start-up), so no request waits on a capture."""
        for batch in batches:
            for kv_len in kv_lens:
                key = self.bucket(batch, kv_len)
                if key not in self._graphs:
                    self._capture(*key)

    def _capture(self, batch: int, kv_len: int) -> torch.cuda.CUDAGraph:
        started = time.perf_counter()
        saved = self._state.snapshot()
        if self._stream is None:
            # torch.cuda.graph's own default capture stream belongs to whichever
            # device was current when it was first made: with one runner per
            # GPU, each must capture on a stream of its own device.
            self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side = self._stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body(batch, kv_len)
        torch.cuda.current_stream().wait_stream(side)
        self._state.restore(saved)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # thread_local: another replica's thread may be running its GPU meanwhile.
        with torch.cuda.graph(graph, pool=self._pool, stream=side,
                              capture_error_mode="thread_local"):
            self._body(batch, kv_len)
        self._graphs[(batch, kv_len)] = graph
        self.capture_s += time.perf_counter() - started
        LOG.debug("captured decode step batch=%d kv_len=%d", batch, kv_len)
        return graph
