"""Whisper's encoder as a plain sequence of fused kernels over the model's weights (GPU).

transformers' encoder spends about a third of its time on large-v3 outside
its matrix products (measured on an H100, batch 32: 54 ms of 232 in strided
copies, 34 ms in non-vectorized adds): the convolution stem hands the layers
a transposed tensor that every residual add then carries along, and each
attention layer copies q, k, v and its output into fresh layouts. Here the
stem's output is made contiguous once, q, k and v come from one matrix
product with concatenated weights (the query scaling folded into its rows),
attention reads them in place (flash-attn's packed-QKV kernel when that
package is importable, else PyTorch's SDPA on strided views), and every
elementwise kernel sees contiguous tensors. Each residual add is fused into
the layer norm that follows it (:mod:`add_norm`), and GELU is fc1's cuBLASLt
epilogue instead of a pass of its own.

The arithmetic is transformers' (pre-norm layers, GELU, final norm) except
that the epilogue computes GELU by its tanh approximation and some fp16
roundings come in another order. On real tiny.en speech (60 windows, 1148
tokens, ``bench/encoder_variants.py``) its tokens equal those of
transformers' fp16 encoder in every window, and the same pass without the
two fusions differs from both in 3 windows (99.74 % of tokens), the usual
spread between fp16 orderings. This runs on CUDA only: CPU decoding keeps
transformers' encoder, whose tokens the CPU tests pin.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F

from steno_inference.add_norm import add_layer_norm


class EncoderPass:
    """Encoder forward for (batch, n_mels, 3000) log-mel → (batch, 1500, d_model)."""

    def __init__(self, model: Any) -> None:
        encoder = model.model.encoder
        self._encoder = encoder
        self._layers = list(encoder.layers)
        first = self._layers[0].self_attn
        self.n_heads = int(first.num_heads)
        self.head_dim = int(first.head_dim)
        self._qkv_weight: list[torch.Tensor] = []
        self._qkv_bias: list[torch.Tensor] = []
        with torch.no_grad():
            for layer in self._layers:
                attn = layer.self_attn
                scale = float(attn.scaling)
                k_bias = torch.zeros_like(attn.q_proj.bias)  # Whisper's key projection has none
                self._qkv_weight.append(torch.cat(
                    [attn.q_proj.weight * scale, attn.k_proj.weight, attn.v_proj.weight]
                ).contiguous())
                self._qkv_bias.append(torch.cat(
                    [attn.q_proj.bias * scale, k_bias, attn.v_proj.bias]
                ).contiguous())
        # cuBLASLt applies GELU as the fc1 product's epilogue (tanh approximation).
        self._gelu_epilogue = getattr(model.config, "activation_function", "") == "gelu"
        self._flash: Any = None
        if importlib.util.find_spec("flash_attn") is not None:
            from flash_attn import flash_attn_qkvpacked_func  # type: ignore[import-not-found]

            self._flash = flash_attn_qkvpacked_func

    @property
    def attention_backend(self) -> str:
        return "flash-attn" if self._flash is not None else "sdpa"

    def extra_bytes(self) -> int:
        """Device memory the fused q/k/v weights add."""
        return sum(w.numel() * w.element_size() for w in self._qkv_weight)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = self._stem(features)
        batch, length, width = x.shape
        stream = x.view(batch * length, width)  # the residual stream, updated in place
        pending: torch.Tensor | None = None  # the last MLP output, added by the next norm
        for index in range(len(self._layers)):
            pending = self._layer(index, stream, pending, batch)
        out = add_layer_norm(stream, pending, self._encoder.layer_norm)
        return out.view(batch, length, width)

    def _layer(self, index: int, stream: torch.Tensor, pending: torch.Tensor | None,
               batch: int) -> torch.Tensor:
        """One pre-norm layer over the (rows, d_model) stream; returns its MLP output."""
        layer = self._layers[index]
        rows, width = stream.shape
        h = add_layer_norm(stream, pending, layer.self_attn_layer_norm)
        qkv = F.linear(h, self._qkv_weight[index], self._qkv_bias[index])
        attended = self._attend(qkv.view(batch, rows // batch, 3, self.n_heads, self.head_dim))
        out = layer.self_attn.out_proj(attended.reshape(rows, width))
        h = add_layer_norm(stream, out, layer.final_layer_norm)
        fc1 = layer.fc1
        if self._gelu_epilogue:
            hidden = torch._addmm_activation(fc1.bias, h, fc1.weight.t(), use_gelu=True)
        else:
            hidden = layer.activation_fn(fc1(h))
        result: torch.Tensor = layer.fc2(hidden)
        return result

    def _stem(self, features: torch.Tensor) -> torch.Tensor:
        """The convolution stem and positions: (batch, 1500, d_model), contiguous."""
        enc = self._encoder
        x = F.gelu(enc.conv1(features))
        x = F.gelu(enc.conv2(x))  # (batch, d_model, 1500)
        positions: torch.Tensor = enc.embed_positions.weight[: x.shape[2]]
        return (x.transpose(1, 2) + positions).contiguous()

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(batch, length, 3, heads, dim) packed q/k/v → (batch, length, heads, dim)."""
        if self._flash is not None:
            out: torch.Tensor = self._flash(qkv, softmax_scale=1.0)
            return out
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        attended: torch.Tensor = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return attended.transpose(1, 2)
