"""Encoder variants on one GPU: fp8 matrix products and fused fp16 epilogues.

Why the engine's encoder stays fp16: on an H100 the large-v3 encoder takes
about 5.1 ms per window (1.5 s for 150 minutes), most of large-v3-turbo's
time. fp8 (e4m3) tensor cores do twice the arithmetic of fp16, so this
script measures, for several ways of putting the encoder's matrix products
in fp8, both the speed (random weights of the large-v3 shape, batch of 32
windows) and the token agreement with the fp16 encoder on real speech (the
real tiny.en weights and windows packed by ``bench/gpu_correctness.py``,
each window also shifted by 0.5 s and 1.1 s of leading silence for a larger
sample). The bar for a lower-precision encoder is 99 % token agreement.

fp8 here is the usual recipe: weights with one scale per output channel,
activations with one scale per token computed as the row is written, by one
Triton kernel that also does the elementwise work before the product
(residual add and layer norm before q/k/v and fc1, exact GELU before fc2),
float32 accumulation, fp16 output with the bias added; attention, the
residual stream and the final norm stay fp16. Products not listed, and
layers listed as fp16, run as in the engine.

The reference is the engine's fp16 encoder, which fuses each residual add
into the next layer norm and applies fc1's GELU as a cuBLASLt epilogue
(tanh approximation); fp16 variants without either fusion are measured
beside it. The noise floor for agreement is transformers' own fp16 encoder
against the engine's: the same arithmetic in a different order.

    python bench/encoder_variants.py bench/carry/tiny --out bench/results/encoder-variants-h100.json
"""

# Triton types a kernel's parameters itself (pointers, integers, constexpr);
# Python annotations on them would change how it specializes the kernel.

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "inference" / "src"))
sys.path.insert(0, str(REPO / "bench"))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from gpu_correctness import agreement, load_packed_model  # noqa: E402
from steno_inference.add_norm import add_and_normalize, add_layer_norm  # noqa: E402
from steno_inference.benchmarking.machine import describe  # noqa: E402
from steno_inference.benchmarking.report import write_report  # noqa: E402
from steno_inference.benchmarking.shapes import SHAPES, random_model  # noqa: E402
from steno_inference.encoder_pass import EncoderPass  # noqa: E402
from steno_inference.features import LogMel  # noqa: E402
from steno_inference.runner import DecodeRequest, WhisperRunner  # noqa: E402
from steno_inference.tokens import WhisperTokens  # noqa: E402

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 value
SCALE_FLOOR = 1e-12  # an all-zero row keeps a finite scale
ROW_MULTIPLE = 16  # fp8 matrix products want rows in multiples of 16
PRODUCTS = ("qkv", "out", "fc1", "fc2")
SHIFTS_S = (0.5, 1.1)  # leading silence added to each window for more samples
SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
SPEED_BATCH = 32
SPEED_REPEATS = 3

# What the row kernel does before writing (a constexpr: one compiled variant each).
PLAIN, GELU, NORM, ADD_NORM = 0, 1, 2, 3


@triton.jit
def _rows_kernel(x_ptr, add_ptr, weight_ptr, bias_ptr, out_ptr, scale_ptr, n_cols, eps,
                 PRE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    offsets = row * n_cols + cols
    if PRE >= 2:
        # The engine's fused residual add and norm (add_norm), then fp8 rows.
        x = add_and_normalize(x_ptr, add_ptr, weight_ptr, bias_ptr, offsets, cols, mask,
                              n_cols, eps, PRE == 3)
    else:
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if PRE == 1:
            x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    amax = tl.maximum(tl.max(tl.where(mask, tl.abs(x), 0.0), axis=0), 1e-12)
    q = tl.clamp(x * (448.0 / amax), -448.0, 448.0)
    tl.store(out_ptr + offsets, q.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row, amax / 448.0)


def rows(x: torch.Tensor, pre: int, add: torch.Tensor | None = None,
         norm: torch.nn.LayerNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``pre`` applied to each row of 2-D ``x``: fp8 rows (padded to 16) and their scales."""
    n_rows, cols = x.shape
    padded = -(-n_rows // ROW_MULTIPLE) * ROW_MULTIPLE
    out = torch.empty((padded, cols), dtype=FP8, device=x.device)
    scale = torch.ones((padded, 1), dtype=torch.float32, device=x.device)
    if padded > n_rows:
        out[n_rows:].zero_()
    block = triton.next_power_of_2(cols)
    _rows_kernel[(n_rows,)](
        x, add if add is not None else x, norm.weight if norm is not None else x,
        norm.bias if norm is not None else x, out, scale,
        cols, float(norm.eps) if norm is not None else 0.0,
        PRE=pre, BLOCK=block, num_warps=4,
    )
    return out, scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) weight → fp8 (out, in) and float32 scales (1, out), one per output channel."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=SCALE_FLOOR) / FP8_MAX
    return (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8).contiguous(), scale[None, :]


class VariantEncoderPass(EncoderPass):
    """The engine's encoder with some products in fp8 and/or fused fp16 epilogues."""

    def __init__(self, model: Any, products: Collection[str] = (),
                 fp16_layers: Collection[int] = (), fused_norm: bool = False,
                 gelu_epilogue: bool = False) -> None:
        super().__init__(model)
        self.fused_norm = fused_norm
        self.gelu_epilogue = gelu_epilogue
        self._fp8: list[dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
        with torch.no_grad():
            for index, layer in enumerate(self._layers):
                weights = {"qkv": (self._qkv_weight[index], self._qkv_bias[index]),
                           "out": (layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias),
                           "fc1": (layer.fc1.weight, layer.fc1.bias),
                           "fc2": (layer.fc2.weight, layer.fc2.bias)}
                chosen = () if index in fp16_layers else products
                self._fp8.append({name: (*quantize_weight(weights[name][0]),
                                         weights[name][1].detach().half()) for name in chosen})

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = self._stem(features)
        batch, length, width = x.shape
        flat = x.view(batch * length, width)  # the residual stream, updated in place
        pending: torch.Tensor | None = None  # the last sublayer's output, not yet added
        for index in range(len(self._layers)):
            pending = self._layer(index, flat, pending, batch)
        if pending is not None:
            flat += pending
        out: torch.Tensor = self._encoder.layer_norm(x)
        return out

    def _product(self, index: int, name: str, source: torch.Tensor, pre: int,
                 fp16: Callable[[torch.Tensor], torch.Tensor], add: torch.Tensor | None = None,
                 norm: torch.nn.LayerNorm | None = None) -> torch.Tensor:
        """Product ``name`` of ``pre(source)``: fp8 when chosen, else ``fp16`` of the fp16 rows."""
        if name in self._fp8[index]:
            q, scale = rows(source, pre, add=add, norm=norm)
            weight, weight_scale, bias = self._fp8[index][name]
            out: torch.Tensor = torch._scaled_mm(q, weight.t(), scale_a=scale,
                                                 scale_b=weight_scale, bias=bias,
                                                 out_dtype=torch.float16)
            return out[: source.shape[0]]
        if pre >= NORM and self.fused_norm and norm is not None:
            return fp16(add_layer_norm(source, add, norm))
        if add is not None:
            source += add
        if norm is not None:
            source = norm(source)
        return fp16(source)

    def _layer(self, index: int, flat: torch.Tensor, pending: torch.Tensor | None,
               batch: int) -> torch.Tensor:
        layer = self._layers[index]
        n_rows, width = flat.shape
        qkv = self._product(index, "qkv", flat, NORM if pending is None else ADD_NORM,
                            lambda h: F.linear(h, self._qkv_weight[index], self._qkv_bias[index]),
                            add=pending, norm=layer.self_attn_layer_norm)
        attended = self._attend(qkv.view(batch, n_rows // batch, 3, self.n_heads, self.head_dim))
        out = self._product(index, "out", attended.reshape(n_rows, width).contiguous(), PLAIN,
                            layer.self_attn.out_proj)
        fc1 = layer.fc1
        if "fc2" not in self._fp8[index] and self.gelu_epilogue:
            def first(h: torch.Tensor) -> torch.Tensor:
                return torch._addmm_activation(fc1.bias, h, fc1.weight.t(), use_gelu=True)
        else:
            first = fc1
        hidden = self._product(index, "fc1", flat, ADD_NORM, first, add=out,
                               norm=layer.final_layer_norm)
        if "fc2" in self._fp8[index]:
            return self._product(index, "fc2", hidden, GELU, layer.fc2)
        if not self.gelu_epilogue or "fc1" in self._fp8[index]:
            hidden = F.gelu(hidden)
        result: torch.Tensor = layer.fc2(hidden)
        return result


def variants(model: Any, layers: int) -> dict[str, Callable[[], EncoderPass]]:
    ends = {0, layers - 1}
    return {
        "fp16, engine (add fused into norm, GELU epilogue)": lambda: EncoderPass(model),
        "fp16, no fusions": lambda: VariantEncoderPass(model),
        "fp16, add fused into norm only": lambda: VariantEncoderPass(model, fused_norm=True),
        "fp16, GELU epilogue only": lambda: VariantEncoderPass(model, gelu_epilogue=True),
        "fp8 all products": lambda: VariantEncoderPass(model, PRODUCTS),
        "fp8 all products, first and last layer fp16": lambda: VariantEncoderPass(
            model, PRODUCTS, ends),
        "fp8 qkv+fc1": lambda: VariantEncoderPass(model, ("qkv", "fc1")),
        "fp8 qkv+fc1, first and last layer fp16": lambda: VariantEncoderPass(
            model, ("qkv", "fc1"), ends),
        "fp8 fc1+fc2": lambda: VariantEncoderPass(model, ("fc1", "fc2")),
        "fp8 fc1+fc2, first and last layer fp16": lambda: VariantEncoderPass(
            model, ("fc1", "fc2"), ends),
        "fp8 fc1": lambda: VariantEncoderPass(model, ("fc1",)),
    }


def shifted(windows: list[np.ndarray]) -> list[np.ndarray]:
    """Each window, then its copies behind SHIFTS_S of silence (where they still fit 30 s)."""
    out = list(windows)
    for shift in SHIFTS_S:
        pad = np.zeros(int(shift * SAMPLE_RATE), dtype=np.float32)
        out += [np.concatenate([pad, w]) for w in windows if len(w) + len(pad) <= WINDOW_SAMPLES]
    return out


def accuracy(source: Path, device: torch.device) -> dict[str, Any]:
    model = load_packed_model(source, device, torch.float16)
    tokens = WhisperTokens.from_generation_config(model.generation_config,
                                                  int(model.config.max_target_positions))
    with np.load(source / "windows.npz") as data:
        windows = shifted([data[f"arr_{i}"] for i in range(len(data.files))])
    features = LogMel(int(model.config.num_mel_bins), device)(windows)
    # Repeatable decoder kernels: token differences then come from the encoder alone.
    runner = WhisperRunner(model, tokens, device, torch.float16, max_batch=64, deterministic=True)

    def decode() -> list[list[int]]:
        requests = [DecodeRequest(i, features[i], None) for i in range(len(windows))]
        got = {int(r.key): list(r.tokens) for r in runner.decode(requests)}
        return [got[i] for i in range(len(windows))]

    def text(windows_tokens: list[list[int]]) -> list[list[int]]:
        return [[t for t in w if t < tokens.timestamp_begin] for w in windows_tokens]

    reference = decode()
    report: dict[str, Any] = {"windows": len(windows),
                              "reference_tokens": sum(len(t) for t in reference), "variants": {}}
    encoders: dict[str, Any] = dict(variants(model, len(model.model.encoder.layers)))
    encoders["fp16, transformers' encoder (noise floor)"] = lambda: None
    for name, build in encoders.items():
        runner._encoder_pass = build()
        got = decode()
        report["variants"][name] = {
            "agreement": round(agreement(reference, got), 5),
            "text_agreement": round(agreement(text(reference), text(got)), 5),
            "windows_identical": sum(a == b for a, b in zip(reference, got, strict=True)),
        }
        print(name, report["variants"][name], flush=True)
    return report


def speed(device: torch.device) -> dict[str, Any]:
    shape = SHAPES["large-v3"]
    model = random_model(shape, device, torch.float16)
    features = torch.randn(SPEED_BATCH, shape.n_mels, 3000, device=device, dtype=torch.float16)
    report: dict[str, Any] = {"shape": "large-v3", "batch": SPEED_BATCH, "variants": {}}
    for name, build in variants(model, shape.encoder_layers).items():
        encoder = build()
        with torch.inference_mode():
            encoder(features)
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(SPEED_REPEATS):
                encoder(features)
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / SPEED_REPEATS
        report["variants"][name] = {"ms_per_window": round(seconds / SPEED_BATCH * 1e3, 3),
                                    "s_per_300_windows": round(seconds / SPEED_BATCH * 300, 3)}
        print(name, report["variants"][name], flush=True)
        del encoder
    return report


def table(report: dict[str, Any]) -> str:
    lines = ["| encoder | token agreement | text agreement | windows identical | "
             "ms per window (large-v3) | s per 300 windows |", "|---|---|---|---|---|---|"]
    acc, fast = report["accuracy"]["variants"], report["speed"]["variants"]
    for name, a in acc.items():
        s = fast.get(name, {})
        lines.append(f"| {name} | {a['agreement']:.4f} | {a['text_agreement']:.4f} | "
                     f"{a['windows_identical']}/{report['accuracy']['windows']} | "
                     f"{s.get('ms_per_window', '-')} | {s.get('s_per_300_windows', '-')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="packed tiny.en (gpu_correctness.py pack)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda:0")
    report: dict[str, Any] = {"machine": describe(device)}
    report["accuracy"] = accuracy(args.directory, device)
    torch.cuda.empty_cache()
    report["speed"] = speed(device)
    report["table"] = table(report)
    print(report["table"])
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
