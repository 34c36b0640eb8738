"""One decoder step over every slot at once, reading from static per-slot caches.

The caches are allocated once, for ``slots`` rows:

* self-attention keys and values, ``(slots, heads, 448, head_dim)`` per layer:
  a step writes the new token's key and value at its position and attends
  over the first ``kv_len`` positions with a mask (``key <= position``), so
  rows at different positions share one fixed-shape kernel sequence;
* cross-attention keys and values, ``(slots, heads, 1500, head_dim)`` per
  layer, computed once when a window enters its slot.

Reading the cross-attention keys and values is what bounds a step on a GPU
(for the large-v3 shape, 32 layers × 2 × 1500 × 1280 × 2 bytes = 246 MB per
window per token): the rest of the step is a few small matrix products per
layer. Attention goes through PyTorch's SDPA, which picks cuDNN's or its own
flash kernels for the unmasked cross-attention and the memory-efficient
kernel for the masked self-attention; ``deterministic`` holds it to the
memory-efficient kernel (see ``STEP_ATTENTION_BACKENDS``).

The arithmetic follows transformers' Whisper decoder layer by layer (pre-norm,
query scaled before the product), so on the CPU the logits equal
``generate()``'s.

With ``int8_cross_kv`` (GPU, optional) the cross-attention keys and values are
kept as int8 with a scale per (window, head, position) and read by
:mod:`int8_cross_attention`: about half the bytes per step.

With beam search (``beam`` > 1) a slot is ``beam`` consecutive rows, one per
beam. The beams of a window share one copy of its cross-attention keys and
values: their queries attend as ``beam`` query positions of one attention
call, so a step reads each window's keys and values once, not once per beam.
The int8 kernel takes one query per row, so with ``int8_cross_kv`` every beam
keeps its own copy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from steno_inference import int8_cross_attention

N_AUDIO_CTX = 1500  # encoder positions per 30 s window
# With ``deterministic`` a GPU step's attention runs only on PyTorch's
# memory-efficient kernel (math where that cannot run). For one query over 1500
# keys the flash and cuDNN kernels that SDPA picks by default are not
# repeatable: on an H100 and an H200 a near-tie window's greedy tokens changed
# between decodes of the same input (bench/repeatability.py: 7 of 15 decodes
# on an H100); with the memory-efficient kernel they never did.
# It costs speed: large-v3, 150 min, 7.7 s instead of 6.0 s on an H100.
STEP_ATTENTION_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
SCALE_BYTES = 2  # one float16 scale per (window, head, position) of int8 keys or values


class DecoderPass:
    """The decoder's weights, its per-slot caches, and the step that reads them."""

    def __init__(self, model: Any, slots: int, n_ctx: int, device: torch.device,
                 dtype: torch.dtype, int8_cross_kv: bool = False, beam: int = 1,
                 deterministic: bool = False) -> None:
        decoder = model.model.decoder
        self._decoder = decoder
        self._layers = list(decoder.layers)
        first = self._layers[0].self_attn
        self.n_heads = int(first.num_heads)
        self.head_dim = int(first.head_dim)
        self.n_ctx = n_ctx
        self.slots = slots  # rows: windows × beam
        self.beam = beam
        self.deterministic = deterministic and device.type == "cuda"
        self.shared_cross = beam > 1 and not int8_cross_kv
        self.device = device
        self.dtype = dtype
        shape_self = (slots, self.n_heads, n_ctx, self.head_dim)
        cross_rows = slots // beam if self.shared_cross else slots
        shape_cross = (cross_rows, self.n_heads, N_AUDIO_CTX, self.head_dim)

        def empty(shape: tuple[int, int, int, int]) -> torch.Tensor:
            # Zeros, not garbage: padding rows read these and must stay finite.
            return torch.zeros(shape, device=device, dtype=dtype)

        self.int8_cross_kv = int8_cross_kv
        cross_dtype = torch.int8 if int8_cross_kv else dtype

        def cross() -> torch.Tensor:
            return torch.zeros(shape_cross, device=device, dtype=cross_dtype)

        def scales() -> torch.Tensor:
            # Ones, so that padding rows dequantize to finite zeros.
            return torch.ones(shape_cross[:3], device=device, dtype=torch.float16)

        self.self_k = [empty(shape_self) for _ in self._layers]
        self.self_v = [empty(shape_self) for _ in self._layers]
        self.cross_k = [cross() for _ in self._layers]
        self.cross_v = [cross() for _ in self._layers]
        self.cross_k_scale = [scales() for _ in self._layers] if int8_cross_kv else []
        self.cross_v_scale = [scales() for _ in self._layers] if int8_cross_kv else []
        self._key_positions = torch.arange(n_ctx, device=device)

    @staticmethod
    def bytes_per_slot(n_layers: int, n_heads: int, head_dim: int, n_ctx: int,
                       itemsize: int, int8_cross_kv: bool = False, beam: int = 1) -> int:
        """Bytes one row holds: self-attention cache plus its share of cross keys and values."""
        self_bytes = 2 * n_layers * n_heads * head_dim * n_ctx * itemsize
        if int8_cross_kv:
            cross_bytes = 2 * n_layers * n_heads * N_AUDIO_CTX * (head_dim + SCALE_BYTES)
        else:
            cross_bytes = 2 * n_layers * n_heads * N_AUDIO_CTX * head_dim * itemsize // beam
        return self_bytes + cross_bytes

    def rows_of(self, windows: torch.Tensor) -> torch.Tensor:
        """The rows of slot indices ``windows`` (a window's beams are consecutive rows)."""
        if self.beam == 1:
            return windows
        offsets = torch.arange(self.beam, device=windows.device)
        return (windows[:, None] * self.beam + offsets[None, :]).flatten()

    def fill_cross(self, windows: torch.Tensor, encoded: torch.Tensor) -> None:
        """Cross-attention keys and values of ``encoded`` (n, 1500, d) for slots ``windows``."""
        rows = windows
        if self.beam > 1 and not self.shared_cross:
            rows = self.rows_of(windows)
            encoded = encoded.repeat_interleave(self.beam, dim=0)
        n = encoded.shape[0]
        shape = (n, N_AUDIO_CTX, self.n_heads, self.head_dim)
        for index, layer in enumerate(self._layers):
            attn = layer.encoder_attn
            if self.int8_cross_kv:
                int8_cross_attention.quantize_into(
                    attn.k_proj(encoded), rows, self.cross_k[index], self.cross_k_scale[index])
                int8_cross_attention.quantize_into(
                    attn.v_proj(encoded), rows, self.cross_v[index], self.cross_v_scale[index])
                continue
            self.cross_k[index][rows] = attn.k_proj(encoded).view(shape).transpose(1, 2)
            self.cross_v[index][rows] = attn.v_proj(encoded).view(shape).transpose(1, 2)

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy every cache of slots ``source`` onto slots ``target`` (compaction)."""
        rows_source, rows_target = self.rows_of(source), self.rows_of(target)
        cross_source, cross_target = (
            (source, target) if self.shared_cross else (rows_source, rows_target))
        for cache in (*self.self_k, *self.self_v):
            cache[rows_target] = cache[rows_source]
        for cache in (*self.cross_k, *self.cross_v, *self.cross_k_scale, *self.cross_v_scale):
            cache[cross_target] = cache[cross_source]

    def reorder(self, source: torch.Tensor, kv_len: int) -> None:
        """Rows ``[:len(source)]`` take the self-attention caches of rows ``source`` (beams).

        Only the first ``kv_len`` positions: a row's keys past its position
        are never read before they are written again.
        """
        batch = source.shape[0]
        for caches in (self.self_k, self.self_v):
            for cache in caches:
                cache[:batch, :, :kv_len] = cache[:batch, :, :kv_len].index_select(0, source)

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Float32 logits (batch, vocab) for one new token per row ``[:batch]``."""
        # The CPU keeps PyTorch's choice (repeatable there): its tokens are pinned
        # to generate()'s.
        backends = (sdpa_kernel(STEP_ATTENTION_BACKENDS) if self.deterministic
                    else contextlib.nullcontext())
        with backends:
            return self._logits(tokens, positions, kv_len)

    def _logits(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        batch = tokens.shape[0]
        decoder = self._decoder
        x = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[positions]
        rows = torch.arange(batch, device=self.device)
        keys = self._key_positions[:kv_len]
        mask = (keys[None, :] <= positions[:, None])[:, None, None, :]
        shape = (batch, self.n_heads, 1, self.head_dim)
        for index, layer in enumerate(self._layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = (attn.q_proj(h) * attn.scaling).view(shape)
            k = attn.k_proj(h).view(batch, self.n_heads, self.head_dim)
            v = attn.v_proj(h).view(batch, self.n_heads, self.head_dim)
            self.self_k[index][rows, :, positions] = k
            self.self_v[index][rows, :, positions] = v
            out = F.scaled_dot_product_attention(
                q,
                self.self_k[index][:batch, :, :kv_len],
                self.self_v[index][:batch, :, :kv_len],
                attn_mask=mask,
                scale=1.0,
            )
            x = x + attn.out_proj(out.reshape(batch, -1))
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = (cross.q_proj(h) * cross.scaling).view(shape)
            if self.int8_cross_kv:
                out = int8_cross_attention.attention(
                    q.view(batch, self.n_heads, self.head_dim),
                    self.cross_k[index], self.cross_k_scale[index],
                    self.cross_v[index], self.cross_v_scale[index],
                )
            elif self.shared_cross:
                # A window's beams as query positions over its one copy of keys and values.
                windows = batch // self.beam
                queries = q.view(windows, self.beam, self.n_heads, self.head_dim).transpose(1, 2)
                out = F.scaled_dot_product_attention(
                    queries, self.cross_k[index][:windows], self.cross_v[index][:windows],
                    scale=1.0,
                ).transpose(1, 2)
            else:
                out = F.scaled_dot_product_attention(
                    q, self.cross_k[index][:batch], self.cross_v[index][:batch], scale=1.0
                )
            x = x + cross.out_proj(out.reshape(batch, -1))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = decoder.layer_norm(x)
        logits: torch.Tensor = x @ decoder.embed_tokens.weight.T
        return logits.float()
