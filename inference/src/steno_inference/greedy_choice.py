"""A greedy step's rules, choice and log-probability in one pass over the logits (Triton, GPU).

The rules of :meth:`SlotState._rules` (suppressed tokens, Whisper's timestamp
pairing and ordering, the first token's limits, a held end-of-text) set
some logits to -inf; the choice is the argmax of what is left, and the
log-probability of the chosen token is taken after the rules. As PyTorch
operations that is about twenty passes over a (rows, vocabulary) float32
tensor: a large-v3-turbo step at 320 windows on an H100 took 5.54 ms with
them and takes 4.66 ms with this kernel (``bench/profile_step.py``).
Here one program per row walks its logits once in blocks, building the
rules' mask from the row's few state values, and keeps running maxima,
their first positions and log-sum-exps for the text and timestamp parts
(and for the raw logits, whose normalizer gives the no-speech probability).

The arithmetic is the PyTorch path's except for the order in which the
log-sum-exps add their terms, so log-probabilities may differ in the last
bits. Ties go to the lower token id, as ``argmax`` breaks them.
"""

# Triton types a kernel's parameters itself (pointers, integers, constexpr);
# Python annotations on them would change how it specializes the kernel.
# ruff: noqa: ANN001

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steno_inference.tokens import WhisperTokens

BLOCK = 2048  # logits per iteration of a row's walk
WARPS = 8

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may lack it
    import triton  # type: ignore[import-untyped,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


@dataclass(frozen=True)
class RowState:
    """The per-row columns the rules read (each (batch,) long, contiguous)."""

    gen_count: torch.Tensor
    last_token: torch.Tensor
    prev_token: torch.Tensor
    last_stamp: torch.Tensor
    fixed_new_tokens: torch.Tensor


def choose(logits: torch.Tensor, rows: RowState, static_suppress: torch.Tensor,
           begin_suppress: torch.Tensor,
           tokens: WhisperTokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(best token, its log-probability after the rules, log-sum-exp of the raw logits) per row."""
    batch, vocab = logits.shape
    best = torch.empty(batch, dtype=torch.long, device=logits.device)
    logprob = torch.empty(batch, dtype=torch.float32, device=logits.device)
    normalizer = torch.empty(batch, dtype=torch.float32, device=logits.device)
    grid: Any = (batch,)
    _choose_kernel[grid](
        logits, logits.stride(0), vocab,
        rows.gen_count, rows.last_token, rows.prev_token, rows.last_stamp, rows.fixed_new_tokens,
        static_suppress, begin_suppress, best, logprob, normalizer,
        tokens.timestamp_begin, tokens.eot,
        tokens.timestamp_begin + tokens.max_initial_timestamp_index,
        BLOCK=BLOCK, num_warps=WARPS,
    )
    return best, logprob, normalizer


if triton is not None:

    @triton.jit  # type: ignore[untyped-decorator,unused-ignore]
    def _choose_kernel(  # type: ignore[no-untyped-def,unused-ignore] # noqa: ANN202
        logits_ptr, row_stride, vocab,
        gen_ptr, last_ptr, prev_ptr, stamp_ptr, fixed_ptr,
        static_ptr, begin_ptr, best_ptr, logprob_ptr, normalizer_ptr,
        tb, eot, last_initial,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0)
        gen = tl.load(gen_ptr + row)
        last = tl.load(last_ptr + row)
        prev = tl.load(prev_ptr + row)
        stamp = tl.load(stamp_ptr + row)
        fixed = tl.load(fixed_ptr + row)
        last_ts = last >= tb
        prev_ts = (gen < 2) | (prev >= tb)
        floor = tl.where(stamp < 0, tb, tl.where(last_ts & (prev_ts == 0), stamp, stamp + 1))
        first = gen == 0
        hold_eot = (fixed > 0) & (gen < fixed)
        pair_closed = last_ts & prev_ts  # two timestamps in a row: text must follow
        pair_open = last_ts & (prev_ts == 0)  # a lone timestamp: another must follow

        neg = float("-inf")
        raw_m = neg
        raw_s = 0.0
        text_m = neg
        text_s = 0.0
        text_at = 0
        ts_m = neg
        ts_s = 0.0
        ts_at = tb
        base = logits_ptr + row.to(tl.int64) * row_stride
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            inside = v < vocab
            x = tl.load(base + v, mask=inside, other=neg)
            is_ts = v >= tb
            banned = (tl.load(static_ptr + v, mask=inside, other=1) != 0) | (inside == 0)
            banned |= first & (tl.load(begin_ptr + v, mask=inside, other=0) != 0)
            banned |= pair_closed & is_ts
            banned |= pair_open & (v < eot)
            banned |= is_ts & (v < floor)
            banned |= first & ((v < tb) | (v > last_initial))
            banned |= hold_eot & (v == eot)
            s = tl.where(banned, neg, x)

            # Running log-sum-exps: (max m, sum of exp(x - m)), rescaled as m grows;
            # a max still at -inf is replaced by 0 so no -inf - -inf appears.
            new_m = tl.maximum(raw_m, tl.max(x, axis=0))
            safe = tl.where(new_m == neg, 0.0, new_m)
            raw_s = raw_s * tl.exp(raw_m - safe) + tl.sum(tl.exp(x - safe), axis=0)
            raw_m = new_m

            text = tl.where(is_ts, neg, s)
            block_max = tl.max(text, axis=0)
            block_at = start + tl.argmax(text, axis=0)  # first position of the block's max
            text_at = tl.where(block_max > text_m, block_at, text_at)
            new_m = tl.maximum(text_m, block_max)
            safe = tl.where(new_m == neg, 0.0, new_m)
            text_s = text_s * tl.exp(text_m - safe) + tl.sum(tl.exp(text - safe), axis=0)
            text_m = new_m

            stamps = tl.where(is_ts, s, neg)
            block_max = tl.max(stamps, axis=0)
            block_at = start + tl.argmax(stamps, axis=0)
            ts_at = tl.where(block_max > ts_m, block_at, ts_at)
            new_m = tl.maximum(ts_m, block_max)
            safe = tl.where(new_m == neg, 0.0, new_m)
            ts_s = ts_s * tl.exp(ts_m - safe) + tl.sum(tl.exp(stamps - safe), axis=0)
            ts_m = new_m

        ts_mass = ts_m + tl.log(ts_s)  # -inf when every timestamp is banned
        force_ts = ts_mass > text_m
        take_text = (force_ts == 0) & (text_m >= ts_m)
        best = tl.where(take_text, text_at, ts_at)
        best_score = tl.where(take_text, text_m, ts_m)
        # The normalizer over what is left: the timestamps alone when forced.
        all_m = tl.where(force_ts, ts_m, tl.maximum(text_m, ts_m))
        safe = tl.where(all_m == neg, 0.0, all_m)
        all_s = ts_s * tl.exp(ts_m - safe) + tl.where(force_ts, 0.0, text_s * tl.exp(text_m - safe))
        tl.store(best_ptr + row, best.to(tl.int64))
        tl.store(logprob_ptr + row, (best_score - all_m) - tl.log(all_s))
        tl.store(normalizer_ptr + row, raw_m + tl.log(raw_s))
