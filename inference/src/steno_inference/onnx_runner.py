"""The ONNX Runtime runner: the torch runner's interface and rules, for CPU-only pools.

:class:`OnnxWhisperRunner` takes the same requests and yields the same
results as :class:`~steno_inference.runner.WhisperRunner`, so the engine,
the scheduler, the gRPC server and the job worker use it unchanged. It runs
the two graphs of :mod:`steno_inference.onnx_export` in ONNX Runtime:

* **Encoder.** Windows taken from the feed are encoded together (up to the
  free slots); the graph returns the encoder states and every layer's
  cross-attention keys and values, copied into the new windows' slots.
* **Decoder.** One decoder-step call per step over the busy slots, each at
  its own position. The caches are host memory owned here, one array per
  layer: self-attention ``(slots, heads, 448, head_dim)`` float32 and the
  cross-attention keys and values. A step feeds the busy rows (a contiguous
  prefix, so ONNX Runtime reads the cross-attention arrays in place) and the
  first ``max(position) + 1`` self-attention entries, and writes the new
  token's key and value back at each row's position.
* **Rules.** The scores, Whisper's timestamp rules, the greedy choice and
  every per-window counter are :class:`~steno_inference.slot_state.SlotState`
  itself — the very code the torch runner steps with, run on CPU tensors
  that share memory with ONNX Runtime's outputs. Nothing of the rules is
  copied, so the two backends cannot drift apart.
* **Continuous batching.** Busy slots are kept at the front: a finished
  window is collected right after the step that ended it, the rows above it
  move down, and waiting windows take the free rows before the next step. A
  step therefore costs what its busy windows cost; on a CPU there is nothing
  to gain from padding to buckets.

Word timestamps need attention weights of the alignment heads, which these
graphs do not return: a request with ``keep_encoded`` gets the encoder
states back (as with the torch runner) and the engine's aligner computes
those weights with the torch decoder weights it already holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steno_inference.decoder_pass import N_AUDIO_CTX
from steno_inference.onnx_export import (
    DECODER_FILE,
    ENCODER_FILE,
    Precision,
    cache_names,
    ensure_exported,
)
from steno_inference.runner import (
    DecodeRequest,
    DecodeResult,
    IterableFeed,
    RequestFeed,
    RunnerStats,
    batch_features,
    prompt_tokens,
)
from steno_inference.slot_state import Admission, SlotState
from steno_inference.tokens import WhisperTokens

LOG = logging.getLogger(__name__)

CANCEL_POLL_STEPS = 8  # callers' cancellation is polled every this many steps (as in runner)
# The torch runner's CPU slot count (batching.CPU_SLOTS): wider batches only
# delay every window's result on a few cores.
DEFAULT_SLOTS = 8


@dataclass
class _Occupant:
    request: DecodeRequest
    encoded: torch.Tensor | None


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options for a shared CPU: as many threads as torch uses, no spinning.

    Spinning worker threads, ONNX Runtime's default, cost as much on a busy
    2-core machine as OpenMP's do (see OMP_WAIT_POLICY=PASSIVE).
    """
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options




class OnnxWhisperRunner:
    """Runs one exported Whisper model in ONNX Runtime with continuous batching."""

    def __init__(
        self,
        graphs_dir: Path,
        tokens: WhisperTokens,
        n_mels: int,
        max_batch: int = DEFAULT_SLOTS,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.graphs_dir = graphs_dir
        self.tokens = tokens
        self.n_ctx = int(tokens.max_target_positions)
        self.n_mels = n_mels
        options = session_options(threads)
        providers = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(str(graphs_dir / ENCODER_FILE), options,
                                             providers=providers)
        self._decoder = ort.InferenceSession(str(graphs_dir / DECODER_FILE), options,
                                             providers=providers)
        cross = next(i for i in self._decoder.get_inputs() if i.name == "cross_v_0")
        _batch, self.n_heads, _frames, self.head_dim = cross.shape
        self.n_layers = sum(1 for i in self._decoder.get_inputs() if i.name.startswith("cross_v_"))
        logits = self._decoder.get_outputs()[0]
        self.vocab = int(logits.shape[1])
        self.max_batch = max_batch
        self.encoder_batch = max_batch
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        shapes = {
            "self_k": (max_batch, self.n_heads, self.n_ctx, self.head_dim),
            "self_v": (max_batch, self.n_heads, self.n_ctx, self.head_dim),
            "cross_k": (max_batch, self.n_heads, self.head_dim, N_AUDIO_CTX),
            "cross_v": (max_batch, self.n_heads, N_AUDIO_CTX, self.head_dim),
        }
        # Zeros, not garbage: masked entries still enter the products and must be finite.
        self._caches = {
            name: np.zeros(shapes[name.rsplit("_", 1)[0]], dtype=np.float32)
            for name in cache_names(self.n_layers)
        }
        self._self_names = [n for n in self._caches if n.startswith("self_k_")]
        self._value_names = [n for n in self._caches if n.startswith("self_v_")]
        self._cross_names = [n for n in self._caches if n.startswith("cross_")]
        self.state = SlotState(max_batch, tokens, self.vocab, self.device)
        self.stats = RunnerStats()
        self._log_mel: Any = None

    @classmethod
    def build(
        cls,
        model_path: Path,
        cache_dir: Path,
        tokens: WhisperTokens,
        n_mels: int,
        precision: Precision = "fp32",
        max_batch: int = DEFAULT_SLOTS,
    ) -> OnnxWhisperRunner:
        """Export (once, cached) the model in ``model_path`` and open its graphs."""
        started = time.perf_counter()
        graphs = ensure_exported(model_path, cache_dir, precision)
        runner = cls(graphs, tokens, n_mels, max_batch)
        LOG.info("ONNX %s graphs ready in %.1f s: %s", precision,
                 time.perf_counter() - started, graphs)
        return runner

    @staticmethod
    def cache_bytes_per_slot(
        n_layers: int, n_heads: int, head_dim: int, n_ctx: int, itemsize: int = 4
    ) -> int:
        """Host bytes one slot holds: self-attention cache plus cross-attention keys/values."""
        return 2 * n_layers * n_heads * head_dim * (n_ctx + N_AUDIO_CTX) * itemsize

    # ---------------------------------------------------------------- encoder

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, 1500, d_model) for log-mel features (batch, n_mels, 3000)."""
        encoded, _cross = self._run_encoder(features)
        return torch.from_numpy(encoded)

    def _run_encoder(self, features: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
        """Encoder states and the cross-attention arrays, in ``cross_k_0, cross_v_0, ...`` order."""
        array = np.ascontiguousarray(features.detach().to("cpu", torch.float32).numpy())
        encoded, *cross = self._encoder.run(None, {"features": array})
        self.stats.encoder_batches += 1
        self.stats.windows_encoded += int(array.shape[0])
        return encoded, cross

    def _features(self, requests: list[DecodeRequest]) -> torch.Tensor:
        return batch_features(requests, self._mel,
                              lambda given: given.to("cpu", torch.float32))

    def _mel(self) -> Any:
        if self._log_mel is None:
            from steno_inference.features import LogMel

            self._log_mel = LogMel(self.n_mels, self.device)
        return self._log_mel

    # ------------------------------------------------------------------- loop

    def decode(
        self,
        requests: Iterable[DecodeRequest] | RequestFeed,
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[DecodeResult]:
        """Decode every request; results come out as windows finish (not in input order)."""
        feed = requests if isinstance(requests, RequestFeed) else IterableFeed(requests)
        occupants: list[_Occupant] = []  # row i holds occupants[i]: busy rows are a prefix
        closed = False
        step = 0
        with torch.inference_mode():
            while True:
                room = self.max_batch - len(occupants)
                if not closed and room > 0:
                    batch = feed.take(room, wait=not occupants)
                    if batch is None:
                        closed = True
                    elif batch:
                        yield from self._admit(batch, occupants)
                if not occupants:
                    if closed:
                        return
                    continue
                if on_batch is not None:
                    on_batch(len(occupants))
                self._step(len(occupants))
                step += 1
                yield from self._collect(occupants)
                if step % CANCEL_POLL_STEPS == 0:
                    yield from self._evict_cancelled(occupants)

    def _admit(self, requests: list[DecodeRequest], occupants: list[_Occupant]) -> (
        Iterator[DecodeResult]
    ):
        live = []
        for request in requests:
            if request.is_cancelled is not None and request.is_cancelled():
                yield DecodeResult.dropped(request)
            else:
                prompt_tokens(self.tokens, request)  # a bad language or task fails here
                live.append(request)
        if not live:
            return
        encoded, cross = self._run_encoder(self._features(live))
        first = len(occupants)
        rows = list(range(first, first + len(live)))
        for name, value in zip(self._cross_names, cross, strict=True):
            self._caches[name][first : first + len(live)] = value
        admissions = [Admission(prompt_tokens(self.tokens, r), r.fixed_new_tokens) for r in live]
        self.state.admit(rows, admissions)
        for i, request in enumerate(live):
            kept = torch.from_numpy(encoded[i].copy()) if request.keep_encoded else None
            occupants.append(_Occupant(request, kept))

    def _step(self, batch: int) -> None:
        """One decoder call over rows ``[:batch]``, then the shared rules and update."""
        tokens, positions = self.state.step_inputs(batch)
        position = positions.numpy()
        past = int(position.max()) + 1  # at least 1: entries at or past a row's position are masked
        feeds = {"tokens": tokens.numpy(), "positions": position}
        for name, cache in self._caches.items():
            feeds[name] = cache[:batch] if name.startswith("cross_") else cache[:batch, :, :past]
        logits, new_k, new_v = self._decoder.run(None, feeds)
        rows = np.arange(batch)
        for layer, (k_name, v_name) in enumerate(zip(self._self_names, self._value_names,
                                                     strict=True)):
            self._caches[k_name][rows, :, position] = new_k[:, layer]
            self._caches[v_name][rows, :, position] = new_v[:, layer]
        self.state.advance(torch.from_numpy(logits))
        self.stats.steps += 1
        self.stats.rows_stepped += batch
        self.stats.busy_rows_stepped += batch

    def _collect(self, occupants: list[_Occupant]) -> Iterator[DecodeResult]:
        rows = torch.nonzero(self.state.finished[: len(occupants)]).flatten().tolist()
        if not rows:
            return
        t = self.tokens
        harvests = self.state.harvest(rows)
        done = [occupants[row] for row in rows]
        self._release(rows, occupants)
        for occupant, harvest in zip(done, harvests, strict=True):
            yield DecodeResult.from_harvest(
                occupant.request.key, harvest, t, occupant.encoded
            )

    def _evict_cancelled(self, occupants: list[_Occupant]) -> Iterator[DecodeResult]:
        rows = [
            row for row, o in enumerate(occupants)
            if o.request.is_cancelled is not None and o.request.is_cancelled()
        ]
        if not rows:
            return
        dropped = [occupants[row].request for row in rows]
        self.state.deactivate(rows)
        self._release(rows, occupants)
        for request in dropped:
            yield DecodeResult.dropped(request)

    def _release(self, rows: list[int], occupants: list[_Occupant]) -> None:
        """Free ``rows``; busy rows above the new count move into the freed rows below it.

        Sources and targets are disjoint (as in the torch runner's compaction),
        which SlotState.move needs: it frees its source rows after copying.
        """
        gone = set(rows)
        count = len(occupants) - len(gone)
        holes = sorted(row for row in gone if row < count)
        movers = [row for row in range(count, len(occupants)) if row not in gone]
        if movers:
            for cache in self._caches.values():
                cache[holes] = cache[movers]
            self.state.move(torch.tensor(movers), torch.tensor(holes))
            for src, dst in zip(movers, holes, strict=True):
                occupants[dst] = occupants[src]
        del occupants[count:]
        # Rows past the busy prefix must not look finished to the next _collect.
        self.state.finished[count:] = False
        self.state.active[count:] = False
        self.stats.rows_moved += len(movers)
        self.stats.compactions += 1 if movers else 0
