"""The Whisper runner: batched encoder and a continuously batched greedy decoder.

The decoder is steno's own loop around the model's weights rather than
``generate()``:

* **Slots.** The decoder holds up to ``max_batch`` windows at once. Each slot
  has a static self-attention KV cache (448 positions) and the window's
  cross-attention keys and values, computed once when it enters. Active slots
  are kept packed at the front (a finished slot is filled by moving the last
  one into it), so every step runs on a contiguous ``[:active]`` view.
* **Continuous batching.** When a window ends (``<|endoftext|>``), its slot is
  freed and the next encoded window takes it at once; prompt tokens
  (``<|startoftranscript|>``, language, task) are fed one per step like any
  other token, so a newcomer never stalls the others.
* **Rules.** Each step applies Whisper's decoding rules exactly as
  transformers' ``generate(return_timestamps=True)`` does, vectorized over the
  batch: suppressed tokens, no blank first token, timestamps in pairs and
  never decreasing, the first timestamp within 1 s, and "pick a timestamp when
  their summed probability beats every text token".
* **Language.** For a multilingual model with language "auto", the language
  token slot is filled with the most likely language token at that step.

Word timestamps are not computed here: :mod:`steno_inference.alignment` runs a
separate teacher-forced pass, so this loop keeps fused attention kernels.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from steno_inference.tokens import WhisperTokens

N_AUDIO_CTX = 1500  # encoder positions per 30 s window


@dataclass(frozen=True)
class DecodeRequest:
    """One window to decode: its encoder input and the prompt choices."""

    key: object  # caller's handle, returned with the result
    features: torch.Tensor  # (n_mels, 3000) log-mel
    language: str | None  # None: detect (multilingual) or English (.en)
    task: str = "transcribe"
    keep_encoded: bool = False  # return the encoder state (for the word-alignment pass)
    # Polled while queued and while decoding: True drops the window (its caller
    # went away or its deadline passed) and frees its slot.
    is_cancelled: Callable[[], bool] | None = None


@dataclass(frozen=True)
class DecodeResult:
    """Greedy tokens of one window and the scores used to judge them."""

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
class _Slot:
    request: DecodeRequest
    prompt: list[int]
    detect_language: bool
    encoded: torch.Tensor | None
    generated: list[int] = field(default_factory=list)
    position: int = 0
    sum_logprob: float = 0.0
    no_speech_prob: float = 0.0


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
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.encoder_batch = encoder_batch or max_batch
        decoder = model.model.decoder
        self._decoder = decoder
        self._layers = list(decoder.layers)
        first = self._layers[0].self_attn
        self.n_heads = int(first.num_heads)
        self.head_dim = int(first.head_dim)
        self.n_ctx = int(tokens.max_target_positions)
        vocab = int(decoder.embed_tokens.weight.shape[0])
        self.vocab = vocab
        self._static_suppress = torch.zeros(vocab, dtype=torch.bool, device=device)
        ids = [t for t in tokens.suppress if t < vocab] + [tokens.no_timestamps]
        self._static_suppress[torch.tensor(ids, device=device, dtype=torch.long)] = True
        self._begin_suppress = torch.zeros(vocab, dtype=torch.bool, device=device)
        if tokens.begin_suppress:
            begin = torch.tensor(tokens.begin_suppress, device=device, dtype=torch.long)
            self._begin_suppress[begin] = True
        self._vocab_ids = torch.arange(vocab, device=device)
        self._language_mask = torch.ones(vocab, dtype=torch.bool, device=device)
        if tokens.language_ids:
            lang = torch.tensor(sorted(tokens.language_ids.values()), device=device)
            self._language_mask[lang] = False  # True = excluded when detecting
        self._allocate(max_batch)

    # ----------------------------------------------------------------- memory

    def _allocate(self, slots: int) -> None:
        shape_self = (slots, self.n_heads, self.n_ctx, self.head_dim)
        shape_cross = (slots, self.n_heads, N_AUDIO_CTX, self.head_dim)
        def zeros(shape: tuple[int, int, int, int]) -> torch.Tensor:
            return torch.zeros(shape, device=self.device, dtype=self.dtype)

        self._self_k = [zeros(shape_self) for _ in self._layers]
        self._self_v = [zeros(shape_self) for _ in self._layers]
        self._cross_k = [zeros(shape_cross) for _ in self._layers]
        self._cross_v = [zeros(shape_cross) for _ in self._layers]

    @staticmethod
    def cache_bytes_per_slot(
        n_layers: int, n_heads: int, head_dim: int, n_ctx: int, itemsize: int
    ) -> int:
        """Bytes one slot holds: self-attention cache plus cross-attention keys and values."""
        return 2 * n_layers * n_heads * head_dim * (n_ctx + N_AUDIO_CTX) * itemsize

    # ---------------------------------------------------------------- encoder

    @torch.inference_mode()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, 1500, d_model) for log-mel features (batch, n_mels, 3000)."""
        features = features.to(self.device, self.dtype)
        out: torch.Tensor = self.model.model.encoder(features).last_hidden_state
        return out

    def _fill_cross(self, slot: int, encoded: torch.Tensor) -> None:
        for index, layer in enumerate(self._layers):
            attn = layer.encoder_attn
            k = attn.k_proj(encoded).view(N_AUDIO_CTX, self.n_heads, self.head_dim)
            v = attn.v_proj(encoded).view(N_AUDIO_CTX, self.n_heads, self.head_dim)
            self._cross_k[index][slot].copy_(k.transpose(0, 1))
            self._cross_v[index][slot].copy_(v.transpose(0, 1))

    def _move_slot(self, source: int, target: int, length: int) -> None:
        for index in range(len(self._layers)):
            self._self_k[index][target, :, :length].copy_(self._self_k[index][source, :, :length])
            self._self_v[index][target, :, :length].copy_(self._self_v[index][source, :, :length])
            self._cross_k[index][target].copy_(self._cross_k[index][source])
            self._cross_v[index][target].copy_(self._cross_v[index][source])

    # ------------------------------------------------------------------ step

    def _step(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Logits (active, vocab) for one new token per active slot."""
        active = tokens.shape[0]
        decoder = self._decoder
        x = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[positions]
        rows = torch.arange(active, device=self.device)
        key_pos = torch.arange(kv_len, device=self.device)
        mask = (key_pos[None, :] <= positions[:, None])[:, None, None, :]
        shape = (active, self.n_heads, 1, self.head_dim)
        for index, layer in enumerate(self._layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = (attn.q_proj(h) * attn.scaling).view(shape)
            k = attn.k_proj(h).view(active, self.n_heads, self.head_dim)
            v = attn.v_proj(h).view(active, self.n_heads, self.head_dim)
            self._self_k[index][rows, :, positions] = k
            self._self_v[index][rows, :, positions] = v
            out = F.scaled_dot_product_attention(
                q,
                self._self_k[index][:active, :, :kv_len],
                self._self_v[index][:active, :, :kv_len],
                attn_mask=mask,
                scale=1.0,
            )
            x = x + attn.out_proj(out.reshape(active, -1))
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = (cross.q_proj(h) * cross.scaling).view(shape)
            out = F.scaled_dot_product_attention(
                q, self._cross_k[index][:active], self._cross_v[index][:active], scale=1.0
            )
            x = x + cross.out_proj(out.reshape(active, -1))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = decoder.layer_norm(x)
        logits: torch.Tensor = x @ decoder.embed_tokens.weight.T
        return logits.float()

    # ------------------------------------------------------------ the rules

    def _apply_rules(self, logits: torch.Tensor, slots: list[_Slot]) -> torch.Tensor:
        """Whisper's timestamp and suppression rules for slots that are generating."""
        t = self.tokens
        tb = t.timestamp_begin
        n = len(slots)
        gen_len = torch.tensor([len(s.generated) for s in slots], device=self.device)
        last = [s.generated[-1] if s.generated else -1 for s in slots]
        prev = [s.generated[-2] if len(s.generated) >= 2 else -1 for s in slots]
        last_ts = torch.tensor([x >= tb for x in last], device=self.device)
        # Fewer than two generated tokens counts as "penultimate was a timestamp".
        prev_ts = torch.tensor(
            [len(s.generated) < 2 or p >= tb for s, p in zip(slots, prev, strict=True)],
            device=self.device,
        )
        floors = []
        for s, lt, pt in zip(slots, last_ts.tolist(), prev_ts.tolist(), strict=True):
            stamps = [x for x in s.generated if x >= tb]
            if not stamps:
                floors.append(tb)
            elif lt and not pt:
                floors.append(stamps[-1])
            else:
                floors.append(stamps[-1] + 1)
        floor = torch.tensor(floors, device=self.device)[:, None]

        first = (gen_len == 0)[:, None]
        vocab = self._vocab_ids[None, :]
        banned = self._static_suppress[None, :].expand(n, -1).clone()
        banned |= first & self._begin_suppress[None, :]
        is_ts = vocab >= tb
        banned |= (last_ts & prev_ts)[:, None] & is_ts
        banned |= (last_ts & ~prev_ts)[:, None] & (vocab < t.eot)
        banned |= is_ts & (vocab < floor)
        banned |= first & (vocab < tb)
        banned |= first & (vocab > tb + t.max_initial_timestamp_index)
        scores = logits.masked_fill(banned, -math.inf)
        logprobs = F.log_softmax(scores, dim=-1)
        ts_logprob = logprobs[:, tb:].logsumexp(dim=-1)
        text_max = logprobs[:, :tb].max(dim=-1).values
        force_ts = (ts_logprob > text_max)[:, None] & (vocab < tb)
        return scores.masked_fill(force_ts, -math.inf)

    # ------------------------------------------------------------------- loop

    def _prompt(self, request: DecodeRequest) -> tuple[list[int], bool]:
        t = self.tokens
        if not t.is_multilingual:
            return [t.sot], False
        task = t.translate if request.task == "translate" else t.transcribe
        if task is None:
            raise ValueError(f"model has no token for task {request.task!r}")
        if request.language is None:
            return [t.sot, -1, task], True
        language = t.language_ids.get(request.language)
        if language is None:
            raise ValueError(f"model has no language {request.language!r}")
        return [t.sot, language, task], False

    @torch.inference_mode()
    def decode(
        self,
        requests: Iterable[DecodeRequest] | RequestFeed,
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[DecodeResult]:
        """Decode every request; results come out as windows finish (not in input order).

        A feed is polled without blocking while any slot is busy, so windows
        that arrive mid-way join the running batch at the next step.
        """
        feed = requests if isinstance(requests, RequestFeed) else IterableFeed(requests)
        encoded: deque[tuple[DecodeRequest, torch.Tensor]] = deque()
        closed = False
        slots: list[_Slot] = []
        while True:
            free = self.max_batch - len(slots)
            if free and not encoded and not closed:
                batch = feed.take(self.encoder_batch, wait=not slots)
                if batch is None:
                    closed = True
                else:
                    live = []
                    for request in batch:
                        if request.is_cancelled is not None and request.is_cancelled():
                            yield DecodeResult.dropped(request)
                        else:
                            live.append(request)
                    if live:
                        states = self.encode(torch.stack([r.features for r in live]))
                        encoded.extend(zip(live, states, strict=True))
            while free and encoded:
                request, state = encoded.popleft()
                if request.is_cancelled is not None and request.is_cancelled():
                    yield DecodeResult.dropped(request)
                    continue
                prompt, detect = self._prompt(request)
                self._fill_cross(len(slots), state)
                kept = state if request.keep_encoded else None
                slots.append(_Slot(request, prompt, detect, kept))
                free -= 1
            if not slots:
                if closed and not encoded:
                    return
                continue
            if on_batch is not None:
                on_batch(len(slots))
            yield from self._advance(slots)
            yield from self._evict_cancelled(slots)

    def _evict_cancelled(self, slots: list[_Slot]) -> Iterator[DecodeResult]:
        for i in reversed(range(len(slots))):
            check = slots[i].request.is_cancelled
            if check is not None and check():
                yield DecodeResult.dropped(slots[i].request)
                self._free(slots, i)

    def _free(self, slots: list[_Slot], i: int) -> None:
        """Release slot i, moving the last busy slot into it so busy slots stay packed."""
        last = len(slots) - 1
        if i != last:
            self._move_slot(last, i, slots[last].position)
            slots[i] = slots[last]
        slots.pop()

    def _advance(self, slots: list[_Slot]) -> Iterator[DecodeResult]:
        t = self.tokens

        inputs = [s.prompt[s.position] if s.position < len(s.prompt) else s.generated[-1]
                  for s in slots]
        positions = [s.position for s in slots]
        kv_len = max(positions) + 1
        logits = self._step(
            torch.tensor(inputs, device=self.device, dtype=torch.long),
            torch.tensor(positions, device=self.device, dtype=torch.long),
            kv_len,
        )
        generating = [i for i, s in enumerate(slots) if s.position + 1 >= len(s.prompt)]
        chosen: dict[int, tuple[int, float]] = {}
        if generating:
            index = torch.tensor(generating, device=self.device)
            scores = self._apply_rules(logits[index], [slots[i] for i in generating])
            best = scores.argmax(dim=-1)
            logprobs = F.log_softmax(scores, dim=-1).gather(1, best[:, None])[:, 0]
            for i, token, logprob in zip(
                generating, best.tolist(), logprobs.tolist(), strict=True
            ):
                chosen[i] = (int(token), float(logprob))
        for i, slot in enumerate(slots):
            if slot.position == 0:
                slot.no_speech_prob = float(torch.softmax(logits[i], dim=-1)[t.no_speech])
                if slot.detect_language:
                    best = logits[i].masked_fill(self._language_mask, -math.inf).argmax()
                    slot.prompt[1] = int(best)
            if i in chosen:
                token, logprob = chosen[i]
                if token != t.eot:
                    slot.sum_logprob += logprob
                slot.generated.append(token)
            slot.position += 1
        finished = [
            i for i, s in enumerate(slots)
            if s.generated and (s.generated[-1] == t.eot or s.position >= self.n_ctx)
        ]
        for i in reversed(finished):
            slot = slots[i]
            done = slot.generated[-1] == t.eot
            tokens = tuple(slot.generated[:-1] if done else slot.generated)
            language = (
                t.language_code(slot.prompt[1]) if t.is_multilingual else "en"
            )
            yield DecodeResult(
                key=slot.request.key,
                tokens=tokens,
                prompt=tuple(slot.prompt),
                language=language,
                sum_logprob=slot.sum_logprob,
                no_speech_prob=slot.no_speech_prob,
                truncated=not done,
                encoded=slot.encoded,
            )
            self._free(slots, i)

