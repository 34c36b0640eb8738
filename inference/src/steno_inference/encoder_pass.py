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
elementwise kernel sees contiguous tensors.

The arithmetic is transformers' (pre-norm layers, GELU, final norm); only
the order of some fp16 roundings differs, so this runs on CUDA only: CPU
decoding keeps transformers' encoder, whose tokens the CPU tests pin.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F


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
        enc = self._encoder
        x = F.gelu(enc.conv1(features))
        x = F.gelu(enc.conv2(x))  # (batch, d_model, 1500)
        positions = enc.embed_positions.weight[: x.shape[2]]
        x = (x.transpose(1, 2) + positions).contiguous()
        batch, length, width = x.shape
        for index, layer in enumerate(self._layers):
            h = layer.self_attn_layer_norm(x)
            qkv = F.linear(h, self._qkv_weight[index], self._qkv_bias[index])
            qkv = qkv.view(batch, length, 3, self.n_heads, self.head_dim)
            attended: torch.Tensor
            if self._flash is not None:
                attended = self._flash(qkv, softmax_scale=1.0)  # (batch, length, heads, dim)
            else:
                q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
                attended = F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2)
            x = x + layer.self_attn.out_proj(attended.reshape(batch, length, width))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        out: torch.Tensor = enc.layer_norm(x)
        return out
