"""The Whisper runner: batched encoder and a continuously batched decoder (greedy or beams).

The decoder is steno's own loop around the model's weights rather than
``generate()``:

* **Slots.** Up to ``max_batch`` windows decode at once. Each slot has a static
  self-attention KV cache (448 positions) and the window's cross-attention
  keys and values, computed once when it enters (:mod:`decoder_pass`).
* **State on the device.** Every slot's decoding state — next token,
  position, prompt, timestamp-rule state, generated tokens, scores — lives in
  device tensors updated in place by the step itself (:mod:`slot_state`), so a
  step needs nothing from the host and, on a GPU, is one CUDA-graph replay
  (:mod:`cuda_graphs`) over a bucketed batch.
* **One small read per step.** After each step the "finished" flags are
  copied asynchronously into pinned memory; the host looks at them a step or
  two later, so it never waits for the GPU except to collect finished slots'
  tokens. A finished slot's row freezes (every update is masked by
  ``active``) until the host frees it.
* **Continuous batching.** A freed slot is taken by the next window at once:
  windows are pulled from the feed as slots free up, encoded in batches (log-mel
  computed on the device when a request carries PCM), and their prompt tokens
  (``<|startoftranscript|>``, language, task) are fed one per step like any other
  token, so a newcomer never stalls the others. When no window is waiting,
  busy slots are moved down to the front so steps run on a smaller bucket.
* **Beam search** (``beam_size`` > 1): a slot is a group of ``beam_size``
  consecutive rows, one per beam (:mod:`beam_state`); the step also copies
  each row's self-attention cache from its parent beam. Everything else —
  slots, graphs, compaction, flags — works on slots as with greedy decoding.
* **Rules.** Whisper's decoding rules exactly as transformers'
  ``generate(return_timestamps=True)`` applies them; for a multilingual model
  with language "auto", the language slot of the prompt is filled with the
  most likely language token at position 0.
* **Memory.** The encoder batch is halved and retried when the device runs out
  of memory, so no window is lost; the slot count is chosen by
  :mod:`batching` and halved if the caches cannot be allocated.

Word timestamps are not computed here: :mod:`steno_inference.alignment` runs a
separate teacher-forced pass, so this loop keeps fused attention kernels.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from steno_inference.batching import ENCODER_BATCH, is_out_of_memory
from steno_inference.beam_state import MAX_BEAM_SIZE, BeamSlotState
from steno_inference.cuda_graphs import StepGraphs
from steno_inference.decoder_pass import N_AUDIO_CTX, DecoderPass
from steno_inference.encoder_pass import EncoderPass
from steno_inference.encoder_pipeline import EncoderPipeline
from steno_inference.slot_state import NO_TOKEN, Admission, Harvest, SlotState
from steno_inference.tokens import WhisperTokens

LOG = logging.getLogger(__name__)

__all__ = [
    "N_AUDIO_CTX",
    "DecodeRequest",
    "DecodeResult",
    "IterableFeed",
    "RequestFeed",
    "RunnerStats",
    "WhisperRunner",
]

# Steps the host may run ahead of the GPU before it waits for a step's
# finished flags: enough to hide the host's own work behind the GPU's.
LOOKAHEAD_STEPS = 2
CANCEL_POLL_STEPS = 8  # callers' cancellation is polled every this many steps


@dataclass(frozen=True)
class DecodeRequest:
    """One window to decode: its encoder input and the prompt choices."""

    key: object  # caller's handle, returned with the result
    features: torch.Tensor | None  # (n_mels, 3000) log-mel; None when ``audio`` is given
    language: str | None  # None: detect (multilingual) or English (.en)
    task: str = "transcribe"
    keep_encoded: bool = False  # return the encoder state (for the word-alignment pass)
    # Polled while queued and while decoding: True drops the window (its caller
    # went away or its deadline passed) and frees its slot.
    is_cancelled: Callable[[], bool] | None = None
    # 16 kHz mono float32 PCM of at most 30 s, instead of ``features``: the
    # log-mel is then computed on the device together with the encoder's batch.
    audio: np.ndarray | None = None
    # 0: stop at <|endoftext|>. N > 0: suppress <|endoftext|> and stop after
    # exactly N generated tokens (benchmarks: identical work per window).
    fixed_new_tokens: int = 0


@dataclass(frozen=True)
class DecodeResult:
    """Tokens of one window and the scores used to judge them.

    ``sum_logprob``: greedy decoding sums each chosen token's log-probability
    after the rules' masks (renormalized), <|endoftext|> left out; beam search
    reports its hypothesis' score, transformers' (masked, not renormalized,
    <|endoftext|> included).
    """

    key: object
    tokens: tuple[int, ...]  # generated tokens, timestamps included, <|endoftext|> excluded
    prompt: tuple[int, ...]  # the prompt as finally decoded (detected language filled in)
    language: str | None
    sum_logprob: float
    no_speech_prob: float
    truncated: bool  # hit the 448-position limit without <|endoftext|>
    encoded: torch.Tensor | None = None  # (1500, d_model) when the request asked for it
    cancelled: bool = False  # dropped before it finished: tokens are incomplete
    failure: str | None = None  # set when decoding itself failed (the device, not the input)

    @classmethod
    def from_harvest(
        cls, key: object, harvest: Harvest, tokens: WhisperTokens, encoded: torch.Tensor | None
    ) -> DecodeResult:
        """The result of a finished slot, as either backend harvests it."""
        language = tokens.language_code(harvest.prompt[1]) if tokens.is_multilingual else "en"
        return cls(
            key=key,
            tokens=harvest.tokens,
            prompt=harvest.prompt,
            language=language,
            sum_logprob=harvest.sum_logprob,
            no_speech_prob=harvest.no_speech_prob,
            truncated=not (harvest.ended_by_eot or harvest.reached_fixed),
            encoded=encoded,
        )

    @classmethod
    def dropped(cls, request: DecodeRequest) -> DecodeResult:
        return cls(request.key, (), (), None, 0.0, 0.0, truncated=False, cancelled=True)

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)


@runtime_checkable
class RequestFeed(Protocol):
    """Where the decoder takes windows from."""

    def take(self, limit: int, wait: bool) -> list[DecodeRequest] | None:
        """Up to ``limit`` requests. With ``wait``, block until one arrives or the feed
        closes; without, return at once (possibly empty). None: closed and drained."""


class IterableFeed:
    """A feed over a finite iterable: a one-shot batch of windows."""

    def __init__(self, requests: Iterable[DecodeRequest]) -> None:
        self._source = iter(requests)
        self._done = False

    def take(self, limit: int, wait: bool) -> list[DecodeRequest] | None:
        del wait  # an iterator either has the next item or blocks for it
        if self._done:
            return None
        batch = list(itertools.islice(self._source, limit))
        if not batch:
            self._done = True
            return None
        return batch


@dataclass
class RunnerStats:
    """Counters for benchmarks and metrics (host-side; reading them never syncs)."""

    steps: int = 0
    rows_stepped: int = 0  # batch rows run, padding included
    busy_rows_stepped: int = 0  # rows that held a window
    windows_encoded: int = 0
    encoder_batches: int = 0
    compactions: int = 0
    rows_moved: int = 0
    encoder_oom_splits: int = 0


@dataclass
class _Occupant:
    request: DecodeRequest
    encoded: torch.Tensor | None
    start_step: int  # the step that fed its first prompt token (its position is step - start)
    since_step: int  # finished-flag snapshots from this step on concern this occupant
    end_step: int | None  # the step that generates its last token, when that is known ahead


@dataclass
class _Flags:
    """Finished-flag snapshots in flight from the device to pinned host memory."""

    buffers: list[torch.Tensor]
    events: list[Any]  # torch.cuda.Event, or None on the CPU
    queue: deque[tuple[int, int, int]] = field(default_factory=deque)  # (buffer, step, batch)
    next_buffer: int = 0


def prompt_tokens(tokens: WhisperTokens, request: DecodeRequest) -> tuple[int, ...]:
    """A request's prompt: <|startoftranscript|>, then language and task on multilingual
    models (NO_TOKEN in the language place: detect it at the first step)."""
    if not tokens.is_multilingual:
        return (tokens.sot,)
    task = tokens.translate if request.task == "translate" else tokens.transcribe
    if task is None:
        raise ValueError(f"model has no token for task {request.task!r}")
    if request.language is None:
        return (tokens.sot, NO_TOKEN, task)
    language = tokens.language_ids.get(request.language)
    if language is None:
        raise ValueError(f"model has no language {request.language!r}")
    return (tokens.sot, language, task)


def batch_features(requests: list[DecodeRequest], mel: Callable[[], Any],
                   place: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """One (batch, n_mels, 3000) tensor: given features through ``place``, PCM through ``mel()``.

    ``mel`` is asked for its log-mel only when some request carries PCM (it may
    build it then); the batch's PCM goes to it in one call, so its windows share
    one STFT; rows keep the requests' order.
    """
    pcm = [r.audio for r in requests if r.features is None and r.audio is not None]
    computed = iter(mel()(pcm)) if pcm else iter(())
    rows = []
    for request in requests:
        if request.features is not None:
            rows.append(place(request.features))
        elif request.audio is not None:
            rows.append(next(computed))
        else:
            raise ValueError(f"request {request.key!r} has neither features nor audio")
    return torch.stack(rows)


class WhisperRunner:
    """Runs one Whisper model on one device: encode batches, decode with continuous batching."""

    def __init__(
        self,
        model: Any,
        tokens: WhisperTokens,
        device: torch.device,
        dtype: torch.dtype,
        max_batch: int,
        encoder_batch: int | None = None,
        cuda_graphs: bool = True,
        int8_cross_kv: bool = False,
        beam_size: int = 1,
        deterministic: bool = False,
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.device = device
        self.dtype = dtype
        self.n_ctx = int(tokens.max_target_positions)
        self.vocab = int(model.model.decoder.embed_tokens.weight.shape[0])
        # int8 cross-attention keys/values need the Triton kernel, so a GPU.
        self.int8_cross_kv = int8_cross_kv and device.type == "cuda"
        if not 1 <= beam_size <= MAX_BEAM_SIZE:
            raise ValueError(f"beam size must be 1 to {MAX_BEAM_SIZE}, not {beam_size}")
        self.beam_size = beam_size
        self.deterministic = deterministic  # repeatable attention kernels (decoder_pass)
        # ``max_batch`` counts decoder rows (what memory allows); a window takes
        # ``beam_size`` of them, so the loop's slots are groups of rows.
        self.decoder = self._allocate(max(1, max_batch // beam_size))
        # On a GPU the encoder runs steno's fused pass; on the CPU transformers'
        # own, whose tokens the CPU tests pin to generate().
        self._encoder_pass = EncoderPass(model) if device.type == "cuda" else None
        self.max_batch = self.decoder.slots // beam_size  # windows decoding at once
        self.pipeline = EncoderPipeline(
            self._encode_requests, device, encoder_batch or min(self.max_batch, ENCODER_BATCH)
        )
        self.state: SlotState = (
            SlotState(self.max_batch, tokens, self.vocab, device) if beam_size == 1
            else BeamSlotState(self.max_batch, beam_size, tokens, self.vocab, device)
        )
        self.graphs: StepGraphs | None = None
        if cuda_graphs and device.type == "cuda":
            self.graphs = StepGraphs(self._step_body, self.state, self.max_batch, self.n_ctx,
                                     rows_per_slot=beam_size)
        self.stats = RunnerStats()
        self._log_mel: Any = None

    # ----------------------------------------------------------------- memory

    def _allocate(self, slots: int) -> DecoderPass:
        """Caches for ``slots`` windows; on out-of-memory, half as many, down to one."""
        while True:
            try:
                return DecoderPass(self.model, slots * self.beam_size, self.n_ctx, self.device,
                                   self.dtype, self.int8_cross_kv, self.beam_size,
                                   self.deterministic)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error) or slots == 1:
                    raise
                slots //= 2
                torch.cuda.empty_cache()
                LOG.warning("decoder caches did not fit: retrying with %d slots", slots)

    @staticmethod
    def cache_bytes_per_slot(
        n_layers: int, n_heads: int, head_dim: int, n_ctx: int, itemsize: int
    ) -> int:
        """Bytes one slot holds: self-attention cache plus cross-attention keys and values."""
        return DecoderPass.bytes_per_slot(n_layers, n_heads, head_dim, n_ctx, itemsize)

    # ---------------------------------------------------------------- encoder

    @torch.inference_mode()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, 1500, d_model) for log-mel features (batch, n_mels, 3000)."""
        features = features.to(self.device, self.dtype)
        if self._encoder_pass is not None:
            return self._encoder_pass(features)
        out: torch.Tensor = self.model.model.encoder(features).last_hidden_state
        return out

    def _features(self, requests: list[DecodeRequest]) -> torch.Tensor:
        """Log-mel features for a batch: given ones as they are, PCM turned on the device."""
        return batch_features(requests, self._mel, lambda given: given.to(self.device))

    def _mel(self) -> Any:
        if self._log_mel is None:
            from steno_inference.features import LogMel

            self._log_mel = LogMel(int(self.model.config.num_mel_bins), self.device)
        return self._log_mel

    def _encode_requests(self, requests: list[DecodeRequest]) -> torch.Tensor:
        return self.encode(self._features(requests))

    @property
    def encoder_batch(self) -> int:
        """Windows per encoder call (halved for good after an out-of-memory)."""
        return self.pipeline.batch

    # ------------------------------------------------------------------ step

    def _step_body(self, batch: int, kv_len: int) -> None:
        """One step over rows ``[:batch]``: logits, rules, choice, state update."""
        tokens, positions = self.state.step_inputs(batch)
        logits = self.decoder.logits(tokens, positions, kv_len)
        parents = self.state.advance(logits)
        if parents is not None:  # beam search: rows continue their parents' sequences
            self.decoder.reorder(parents, kv_len)

    def _run_step(self, top: int, kv_len: int) -> int:
        """One step over at least the first ``top`` slots; returns the slots stepped."""
        rows = top * self.beam_size
        if self.graphs is not None:
            rows = self.graphs.run(rows, kv_len)
        else:
            self._step_body(rows, kv_len)
        batch = rows // self.beam_size
        self.stats.steps += 1
        self.stats.rows_stepped += batch
        return batch

    def _on_decode_stream(self) -> contextlib.AbstractContextManager[Any]:
        stream = self.pipeline.decode_stream
        return contextlib.nullcontext() if stream is None else torch.cuda.stream(stream)

    def _use_device(self) -> None:
        # Streams, events and graphs go to the thread's current device: with one
        # replica per GPU, each driving thread must name its own.
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def _bucket(self, rows: int) -> int:
        if self.graphs is None:
            return rows
        return self.graphs.bucket(rows * self.beam_size, 1)[0]

    @torch.inference_mode()
    def capture_graphs(self, max_tokens: int | None = None) -> float:
        """Capture every step graph ahead of time; returns the seconds it took.

        ``max_tokens`` bounds the self-attention lengths captured (a benchmark
        that decodes a known number of tokens); None captures all of them.
        """
        if self.graphs is None:
            return 0.0
        self._use_device()
        limit = self.n_ctx if max_tokens is None else min(self.n_ctx, max_tokens)
        kv = [k for k in self.graphs.kv_buckets if k <= limit]
        kv.append(self.graphs.bucket(1, limit)[1])
        with self._on_decode_stream():
            self.graphs.capture(self.graphs.batch_buckets, sorted(set(kv)))
        return self.graphs.capture_s

    # ------------------------------------------------------------------- loop

    def _prompt(self, request: DecodeRequest) -> tuple[int, ...]:
        return prompt_tokens(self.tokens, request)

    @torch.inference_mode()
    def decode(
        self,
        requests: Iterable[DecodeRequest] | RequestFeed,
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[DecodeResult]:
        """Decode every request; results come out as windows finish (not in input order).

        A feed is polled without blocking while any slot is busy, so windows
        that arrive mid-way join the running batch at the next step. Windows
        are taken and encoded one encoder batch ahead of the free slots
        (:mod:`encoder_pipeline`).
        """
        self._use_device()
        feed = requests if isinstance(requests, RequestFeed) else IterableFeed(requests)
        pipe = self.pipeline
        occupants: list[_Occupant | None] = [None] * self.max_batch
        free = list(range(self.max_batch))  # a heap: new windows take the lowest rows
        flags = self._flag_buffers()
        ends: Counter[int] = Counter()  # steps at which fixed-length windows end
        closed = False
        step = 0
        while True:
            closed = yield from self._fill(feed, occupants, free, step, ends, closed)
            busy = self.max_batch - len(free)
            if busy == 0:
                if closed and pipe.waiting() == 0:
                    return
                continue
            if on_batch is not None:
                on_batch(busy)
            with self._on_decode_stream():
                top = self._compact(occupants, free, busy, step)
                kv_len = min(
                    self.n_ctx,
                    1 + max(step - o.start_step for o in occupants[:top] if o is not None),
                )
                batch = self._run_step(top, kv_len)
                self._push_flags(flags, step, batch)
            self.stats.busy_rows_stepped += busy
            # A window known to end at this step is collected without a step's lag.
            wait = ends.pop(step, 0) > 0
            step += 1
            for finished in self._ready_flags(flags, wait):
                yield from self._collect(finished, occupants, free)
            if step % CANCEL_POLL_STEPS == 0:
                yield from self._evict_cancelled(occupants, free)

    def _fill(
        self,
        feed: RequestFeed,
        occupants: list[_Occupant | None],
        free: list[int],
        step: int,
        ends: Counter[int],
        closed: bool,
    ) -> Generator[DecodeResult, None, bool]:
        """Take, encode and admit windows; returns whether the feed is now closed.

        While a whole encoder batch of slots is free (or none is busy), windows
        are encoded and admitted before the next step: a step costs about the
        same at any batch size below the bandwidth limit, so full batches
        decode the most windows per step. Otherwise one batch is encoded ahead,
        for the slots that free up mid-way. Windows are taken from the feed one
        encoder batch at a time, so runners sharing a feed (one per GPU) split
        it between them instead of the first one taking everything.
        """
        pipe = self.pipeline
        while True:
            busy = self.max_batch - len(free)
            urgent = busy == 0 or len(free) >= pipe.batch
            want = len(free) + pipe.batch - pipe.waiting()
            if not closed and want > 0:
                idle = busy == 0 and pipe.waiting() == 0
                closed = yield from self._take(feed, min(want, pipe.batch), wait=idle)
            if pipe.has_pending() and pipe.encoded() < (1 if urgent else pipe.batch):
                pipe.launch()
                self._count_encoder()
            admitted = False
            while free and pipe.ready(wait=urgent):
                with self._on_decode_stream():
                    taken, states = pipe.take(len(free))
                    yield from self._admit(taken, states, occupants, free, step, ends)
                admitted = True
                urgent = len(free) >= pipe.batch
            drained = closed and pipe.waiting() == 0
            if not (urgent and (admitted or pipe.has_pending()) and not drained):
                return closed

    def _count_encoder(self) -> None:
        pipe = self.pipeline
        self.stats.windows_encoded = pipe.windows_encoded
        self.stats.encoder_batches = pipe.batches_encoded
        self.stats.encoder_oom_splits = pipe.oom_splits

    def _take(
        self, feed: RequestFeed, room: int, wait: bool
    ) -> Generator[DecodeResult, None, bool]:
        """Queue up to ``room`` windows for encoding; returns True once the feed is drained."""
        while room > 0:
            batch = feed.take(min(room, self.pipeline.batch), wait=wait)
            if batch is None:
                return True
            if not batch:
                return False
            wait = False
            room -= len(batch)
            live = []
            for request in batch:
                if request.is_cancelled is not None and request.is_cancelled():
                    yield DecodeResult.dropped(request)
                else:
                    self._prompt(request)  # a bad language or task fails here, not mid-batch
                    live.append(request)
            self.pipeline.add(live)
        return False

    def _admit(
        self,
        requests: list[DecodeRequest],
        encoded: torch.Tensor,
        occupants: list[_Occupant | None],
        free: list[int],
        step: int,
        ends: Counter[int],
    ) -> Iterator[DecodeResult]:
        """Start encoded windows in free slots (on the decode stream)."""
        keep = []
        for i, request in enumerate(requests):
            if request.is_cancelled is not None and request.is_cancelled():
                yield DecodeResult.dropped(request)
            else:
                keep.append(i)
        if not keep:
            return
        if len(keep) < len(requests):
            encoded = encoded[torch.tensor(keep, device=encoded.device)]
            requests = [requests[i] for i in keep]
        admissions = [Admission(self._prompt(r), r.fixed_new_tokens) for r in requests]
        rows = [heapq.heappop(free) for _ in requests]
        self.decoder.fill_cross(torch.tensor(rows, device=self.device), encoded)
        self.state.admit(rows, admissions)
        for i, (row, request) in enumerate(zip(rows, requests, strict=True)):
            kept = None
            if request.keep_encoded:
                kept = encoded[i].clone()
                if kept.is_cuda:  # read later on the caller's stream
                    kept.record_stream(torch.cuda.default_stream(self.device))
            end = None
            if request.fixed_new_tokens > 0:
                # Prompt token k is fed at step + k; the last prompt token's step
                # generates token 1, so token N comes at step + len(prompt) + N - 2.
                end = step + len(admissions[i].prompt) + request.fixed_new_tokens - 2
                ends[end] += 1
            occupants[row] = _Occupant(request, kept, step, step, end)

    def _compact(
        self, occupants: list[_Occupant | None], free: list[int], busy: int, step: int
    ) -> int:
        """Move busy rows down when that shrinks the step's bucket; returns the rows to step.

        Called after the feed was asked for windows, so a free row below the top
        means none was waiting.
        """
        top = 1 + max(i for i, o in enumerate(occupants) if o is not None)
        if top == busy or self._bucket(busy) == self._bucket(top):
            return top
        holes = [row for row in free if row < busy]
        movers = [row for row in range(busy, top) if occupants[row] is not None]
        source = torch.tensor(movers, device=self.device)
        target = torch.tensor(sorted(holes), device=self.device)
        self.decoder.move(source, target)
        self.state.move(source, target)
        for src, dst in zip(movers, sorted(holes), strict=True):
            occupant = occupants[src]
            if occupant is not None:
                occupant.since_step = step
            occupants[dst], occupants[src] = occupant, None
        free[:] = [row for row in free if row >= busy] + movers
        heapq.heapify(free)
        self.stats.compactions += 1
        self.stats.rows_moved += len(movers)
        return busy

    # ------------------------------------------------------- finished flags

    def _flag_buffers(self) -> _Flags:
        count = LOOKAHEAD_STEPS + 1
        if self.device.type != "cuda":
            return _Flags([torch.zeros(self.max_batch, dtype=torch.bool)], [None])
        buffers = [
            torch.zeros(self.max_batch, dtype=torch.bool).pin_memory() for _ in range(count)
        ]
        events = [torch.cuda.Event() for _ in range(count)]  # type: ignore[no-untyped-call]
        return _Flags(buffers, events)

    def _push_flags(self, flags: _Flags, step: int, batch: int) -> None:
        if flags.events[0] is None:  # CPU: the step is done when it returns
            flags.buffers[0][:batch].copy_(self.state.finished_units(batch * self.beam_size))
            flags.queue.append((0, step, batch))
            return
        if len(flags.queue) == len(flags.buffers):
            raise RuntimeError("finished-flag buffers overrun")  # _ready_flags keeps one free
        index = flags.next_buffer
        flags.next_buffer = (index + 1) % len(flags.buffers)
        finished = self.state.finished_units(batch * self.beam_size)
        flags.buffers[index][:batch].copy_(finished, non_blocking=True)
        flags.events[index].record()
        flags.queue.append((index, step, batch))

    def _ready_flags(self, flags: _Flags, wait: bool) -> Iterator[tuple[int, list[int]]]:
        """(step, finished rows) of snapshots the device has delivered.

        Waits only when the host is ``LOOKAHEAD_STEPS`` ahead (or ``wait``), so
        the GPU always has queued work while the host looks at earlier steps.
        """
        while flags.queue:
            index, step, batch = flags.queue[0]
            event = flags.events[index]
            if event is not None:
                if wait or len(flags.queue) > LOOKAHEAD_STEPS:
                    event.synchronize()
                elif not event.query():
                    return
            flags.queue.popleft()
            rows = torch.nonzero(flags.buffers[index][:batch]).flatten().tolist()
            if rows:
                yield step, rows

    def _collect(
        self,
        finished: tuple[int, list[int]],
        occupants: list[_Occupant | None],
        free: list[int],
    ) -> Iterator[DecodeResult]:
        """Results of rows a snapshot shows finished, unless already collected or reused."""
        snapshot_step, rows = finished
        mine = []
        for row in rows:
            occupant = occupants[row]
            if occupant is not None and occupant.since_step <= snapshot_step:
                mine.append(row)
        if not mine:
            return
        t = self.tokens
        with self._on_decode_stream():
            harvests = self.state.harvest(mine)
        for row, harvest in zip(mine, harvests, strict=True):
            occupant = occupants[row]
            if occupant is None:
                continue
            occupants[row] = None
            heapq.heappush(free, row)
            yield DecodeResult.from_harvest(
                occupant.request.key, harvest, t, occupant.encoded
            )

    def _evict_cancelled(
        self, occupants: list[_Occupant | None], free: list[int]
    ) -> Iterator[DecodeResult]:
        rows = []
        for row, occupant in enumerate(occupants):
            check = None if occupant is None else occupant.request.is_cancelled
            if occupant is not None and check is not None and check():
                rows.append(row)
                occupants[row] = None
                heapq.heappush(free, row)
                yield DecodeResult.dropped(occupant.request)
        if rows:
            with self._on_decode_stream():
                self.state.deactivate(rows)
