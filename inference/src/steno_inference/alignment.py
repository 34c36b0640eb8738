"""Word timestamps from the cross-attention of Whisper's alignment heads, with DTW.

A separate, teacher-forced decoder pass over a window's final text tokens
computes the attention weights of only the (layer, head) pairs the model
names as alignment heads; everything else uses fused attention kernels, so
word timestamps never force the fast path off (a limitation
insanely-fast-whisper users keep running into with flash attention).

The weights are normalised per head, median-filtered over time, averaged,
and a dynamic-time-warping path through (tokens × audio frames) gives each
token its first frame; words start and end where their tokens do.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from steno_inference.tokens import TIME_PER_TIMESTAMP_S, WhisperTokens

MEDIAN_FILTER_WIDTH = 7  # frames; smooths attention jitter
QK_SCALE = 1.0  # logits of the heads are used as computed (already scaled by 1/sqrt(d))
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


@dataclass(frozen=True)
class WordTiming:
    """A word in window time and the indices of its tokens among the window's text tokens."""

    text: str
    start_s: float
    end_s: float
    probability: float
    token_start: int
    token_end: int


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment path through a (tokens × frames) cost matrix.

    Row by row, ``c[i, j] = x[i, j] + min(c[i-1, j-1], c[i-1, j], c[i, j-1])``
    is a min-plus scan along j, which ``np.minimum.accumulate`` solves without
    a Python loop over columns.
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])  # over j = 1..m
        sums = np.cumsum(cost[i - 1].astype(np.float64))
        before = np.concatenate(([0.0], sums[:-1]))
        acc[i, 1:] = sums + np.minimum.accumulate(above - before)
    rows: list[int] = []
    cols: list[int] = []
    i, j = n, m
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        if i == 0:
            j -= 1
            continue
        if j == 0:
            i -= 1
            continue
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if c0 < c1 and c0 < c2:
            i, j = i - 1, j - 1
        elif c1 < c0 and c1 < c2:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over the last axis with reflect padding (odd width)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = F.pad(x, (pad, pad), mode="reflect")  # x is (heads, tokens, frames)
    return padded.unfold(-1, width, 1).median(dim=-1).values


def split_words(
    tokens: Sequence[int], decode: Callable[[list[int]], str], eot: int, language: str | None
) -> tuple[list[str], list[list[int]]]:
    """Group tokens into words: by spaces, or by whole characters for languages without them."""
    subwords: list[str] = []
    groups: list[list[int]] = []
    current: list[int] = []
    for token in tokens:
        current.append(token)
        text = decode(current)
        if "\ufffd" not in text:  # a multi-byte character may span tokens
            subwords.append(text)
            groups.append(current)
            current = []
    if current:
        subwords.append(decode(current))
        groups.append(current)
    if language in NO_SPACE_LANGUAGES:
        return subwords, groups
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for text, group in zip(subwords, groups, strict=True):
        special = group[0] >= eot
        starts_word = text.startswith(" ") or text.strip() in string.punctuation
        if special or starts_word or not words:
            words.append(text)
            word_tokens.append(list(group))
        else:
            words[-1] += text
            word_tokens[-1].extend(group)
    return words, word_tokens


def _merge_punctuation(words: list[WordTiming]) -> list[WordTiming]:
    """Attach leading and trailing punctuation marks to their neighbouring words."""
    merged: list[WordTiming] = []
    pending: WordTiming | None = None
    for word in words:
        stripped = word.text.strip()
        if pending is not None:
            word = WordTiming(
                pending.text + word.text, word.start_s, word.end_s,
                (pending.probability + word.probability) / 2,
                pending.token_start, word.token_end,
            )
            pending = None
        if stripped and stripped in PREPEND_PUNCTUATION and word.text.startswith(" "):
            pending = word
            continue
        if merged and stripped and all(ch in APPEND_PUNCTUATION for ch in stripped):
            last = merged[-1]
            merged[-1] = WordTiming(
                last.text + word.text, last.start_s, last.end_s, last.probability,
                last.token_start, word.token_end,
            )
            continue
        merged.append(word)
    if pending is not None:
        merged.append(pending)
    return merged


class WordAligner:
    """Places the words of decoded windows in time."""

    def __init__(
        self, model: Any, tokens: WhisperTokens, decode: Callable[[list[int]], str]
    ) -> None:
        self._model = model
        self._tokens = tokens
        self._decode = decode
        heads: dict[int, list[int]] = {}
        for layer, head in tokens.alignment_heads:
            heads.setdefault(layer, []).append(head)
        if not heads:
            # Models without a list: openai's default is the second half of the decoder layers.
            n_layers = len(model.model.decoder.layers)
            n_heads = int(model.model.decoder.layers[0].encoder_attn.num_heads)
            heads = {layer: list(range(n_heads)) for layer in range(n_layers // 2, n_layers)}
        self._heads = heads

    @torch.inference_mode()
    def align(
        self,
        encoded: torch.Tensor,
        prompt: Sequence[int],
        text_tokens: Sequence[int],
        n_samples: int,
        language: str | None,
    ) -> list[WordTiming]:
        """Words of one window; ``encoded`` is its encoder state (1500, d_model)."""
        if not text_tokens:
            return []
        t = self._tokens
        sequence = [*prompt, t.no_timestamps, *text_tokens, t.eot]
        weights, logits = self._cross_attention(encoded, sequence)
        n_frames = max(1, min(weights.shape[-1], n_samples // 320))  # 2 × 10 ms per position
        weights = weights[:, :, :n_frames].float().softmax(dim=-1)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = (weights - mean) / (std + 1e-10)
        weights = median_filter(weights, MEDIAN_FILTER_WIDTH)
        matrix = weights.mean(dim=0)[len(prompt) : -1]  # rows: no_timestamps, text..., last
        rows, cols = dtw_path(-matrix.double().cpu().numpy())

        start = len(prompt)
        probs = logits[start : start + len(text_tokens), : t.eot].float().softmax(dim=-1)
        token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(list(text_tokens))]
        words, groups = split_words([*text_tokens, t.eot], self._decode, t.eot, language)
        boundaries = np.pad(np.cumsum([len(g) for g in groups[:-1]]), (1, 0))
        jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
        jump_times = cols[jumps] * TIME_PER_TIMESTAMP_S
        timings: list[WordTiming] = []
        for index, word in enumerate(words[:-1]):
            lo, hi = int(boundaries[index]), int(boundaries[index + 1])
            start_s = float(jump_times[min(lo, len(jump_times) - 1)])
            end_s = float(jump_times[min(hi, len(jump_times) - 1)])
            probability = float(token_probs[lo:hi].mean()) if hi > lo else 0.0
            timings.append(WordTiming(word, start_s, max(start_s, end_s), probability, lo, hi))
        return _merge_punctuation(timings)

    def _cross_attention(
        self, encoded: torch.Tensor, sequence: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass: alignment heads' attention (heads, T, 1500) and logits (T, V)."""
        decoder = self._model.model.decoder
        device = encoded.device
        ids = torch.tensor(sequence, device=device)
        length = ids.shape[0]
        x = decoder.embed_tokens(ids) + decoder.embed_positions.weight[:length]
        x = x[None]
        collected: list[torch.Tensor] = []
        for index, layer in enumerate(decoder.layers):
            attn = layer.self_attn
            n_heads, head_dim = int(attn.num_heads), int(attn.head_dim)
            h = layer.self_attn_layer_norm(x)
            q = (attn.q_proj(h) * attn.scaling).view(1, length, n_heads, head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, length, n_heads, head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, length, n_heads, head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
            x = x + attn.out_proj(out.transpose(1, 2).reshape(1, length, -1))
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = (cross.q_proj(h) * cross.scaling).view(1, length, n_heads, head_dim).transpose(1, 2)
            k = cross.k_proj(encoded[None]).view(1, -1, n_heads, head_dim).transpose(1, 2)
            v = cross.v_proj(encoded[None]).view(1, -1, n_heads, head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            if index in self._heads:
                heads = self._heads[index]
                collected.append((q[0, heads] @ k[0, heads].transpose(-1, -2)) * QK_SCALE)
            x = x + cross.out_proj(out.transpose(1, 2).reshape(1, length, -1))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = decoder.layer_norm(x)
        logits = x[0] @ decoder.embed_tokens.weight.T
        return torch.cat(collected, dim=0), logits
