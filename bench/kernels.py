"""Times the kernels a large-v3 decode step and encoder batch are made of, variant by variant.

A diagnostic beside ``bench/throughput.py`` (one GPU, random data of the
large-v3 shape, fp16): which way of doing each part is fastest here, and how
close it gets to the card's copy bandwidth or matrix rate.

* cross-attention of one new token over 1500 positions: PyTorch SDPA on
  fp16 keys/values against the int8 kernel in each of its modes;
* putting a batch of windows' keys into the int8 cache: PyTorch operations
  and a scattered copy against the one-pass Triton kernel;
* masked self-attention over the static cache at two length buckets;
* one encoder layer's attention under each SDPA backend, and fc1 with its
  GELU apart or in the matrix product's epilogue.

    python bench/kernels.py --out bench/results/kernels-h100.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference" / "src"))

from steno_inference import int8_cross_attention
from steno_inference.benchmarking.machine import describe
from steno_inference.benchmarking.report import write_report

HEADS, HEAD_DIM, POSITIONS, WIDTH, N_CTX = 20, 64, 1500, 1280, 448
DECODE_BATCH = 300
ENCODER_BATCH = 32
REPEATS = 20


def time_ms(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    """Median milliseconds of ``fn`` on the current stream (after two warm-up calls)."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def cross_attention(device: torch.device, batch: int) -> list[dict[str, Any]]:
    q = torch.randn(batch, HEADS, 1, HEAD_DIM, device=device, dtype=torch.float16) * 0.125
    k = torch.randn(batch, HEADS, POSITIONS, HEAD_DIM, device=device, dtype=torch.float16)
    v = torch.randn_like(k)
    fp16_bytes = 2 * k.numel() * 2
    rows = [{"variant": "sdpa fp16", "ms": time_ms(
        lambda: F.scaled_dot_product_attention(q, k, v, scale=1.0))}]
    rows[0]["gbs"] = round(fp16_bytes / rows[0]["ms"] / 1e6, 1)
    kq, ks = int8_cross_attention.quantize(k)
    vq, vs = int8_cross_attention.quantize(v)
    int8_bytes = 2 * (kq.numel() + ks.numel() * 2)
    reference = int8_cross_attention.reference(q[:, :, 0], kq, ks, vq, vs).float()
    for mode in int8_cross_attention.MODES:
        def run(mode: int = mode) -> torch.Tensor:
            return int8_cross_attention.attention(q[:, :, 0], kq, ks, vq, vs, mode=mode)
        error = (run().float() - reference).abs().max().item()
        ms = time_ms(run)
        rows.append({"variant": f"int8 mode {mode}", "ms": ms,
                     "gbs": round(int8_bytes / ms / 1e6, 1), "max_abs_error": error})
    for row in rows:
        row["ms"] = round(row["ms"], 4)
        row["batch"] = batch
    return rows


def quantize_into(device: torch.device, n: int) -> list[dict[str, Any]]:
    slots = 64
    x = torch.randn(n, POSITIONS, WIDTH, device=device, dtype=torch.float16)
    cache = torch.zeros(slots, HEADS, POSITIONS, HEAD_DIM, device=device, dtype=torch.int8)
    scale = torch.ones(slots, HEADS, POSITIONS, device=device, dtype=torch.float16)
    rows = torch.arange(n, device=device) * 2

    def by_operations() -> None:
        q, s = int8_cross_attention.quantize(x.view(n, POSITIONS, HEADS, HEAD_DIM).transpose(1, 2))
        cache[rows] = q
        scale[rows] = s

    def one_pass() -> None:
        int8_cross_attention.quantize_into(x, rows, cache, scale)

    by_operations()
    expected = (cache.clone(), scale.clone())
    cache.zero_()
    one_pass()
    equal = torch.equal(cache, expected[0]) and torch.equal(scale, expected[1])
    return [{"variant": "torch operations + copy", "windows": n,
             "ms": round(time_ms(by_operations), 4)},
            {"variant": "triton one pass", "windows": n, "ms": round(time_ms(one_pass), 4),
             "equal": equal}]


def self_attention(device: torch.device, batch: int) -> list[dict[str, Any]]:
    cache_k = torch.randn(batch, HEADS, N_CTX, HEAD_DIM, device=device, dtype=torch.float16)
    cache_v = torch.randn_like(cache_k)
    q = torch.randn(batch, HEADS, 1, HEAD_DIM, device=device, dtype=torch.float16) * 0.125
    positions = torch.randint(3, 100, (batch,), device=device)
    out = []
    for kv_len in (128, 256, N_CTX):
        keys = torch.arange(kv_len, device=device)
        mask = (keys[None, :] <= positions[:, None])[:, None, None, :]
        ms = time_ms(lambda kv_len=kv_len, mask=mask: F.scaled_dot_product_attention(
            q, cache_k[:, :, :kv_len], cache_v[:, :, :kv_len], attn_mask=mask, scale=1.0))
        read = 2 * batch * HEADS * kv_len * HEAD_DIM * 2
        out.append({"variant": "sdpa masked", "batch": batch, "kv_len": kv_len,
                    "ms": round(ms, 4), "gbs": round(read / ms / 1e6, 1)})
    return out


def encoder_parts(device: torch.device) -> list[dict[str, Any]]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tokens = ENCODER_BATCH * POSITIONS
    qkv = torch.randn(ENCODER_BATCH, POSITIONS, 3, HEADS, HEAD_DIM, device=device,
                      dtype=torch.float16)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    attention_flop = 4 * ENCODER_BATCH * HEADS * POSITIONS * POSITIONS * HEAD_DIM
    rows: list[dict[str, Any]] = []
    backends = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION))
    for name, backend in backends:
        for layout in ("strided", "contiguous"):
            qs, ks, vs = (q, k, v) if layout == "strided" else (q.contiguous(), k.contiguous(),
                                                                 v.contiguous())
            try:
                with sdpa_kernel([backend]):
                    ms = time_ms(lambda qs=qs, ks=ks, vs=vs: F.scaled_dot_product_attention(
                        qs, ks, vs, scale=1.0))
                rows.append({"part": f"attention {name} {layout}", "ms": round(ms, 3),
                             "tflops": round(attention_flop / ms / 1e9, 1)})
            except RuntimeError as error:
                rows.append({"part": f"attention {name} {layout}", "error": str(error)[:120]})
    h = torch.randn(tokens, WIDTH, device=device, dtype=torch.float16)
    w1 = torch.randn(4 * WIDTH, WIDTH, device=device, dtype=torch.float16) * 0.02
    b1 = torch.randn(4 * WIDTH, device=device, dtype=torch.float16) * 0.02
    w_qkv = torch.randn(3 * WIDTH, WIDTH, device=device, dtype=torch.float16) * 0.02
    flop_fc1 = 2 * tokens * WIDTH * 4 * WIDTH
    for part, fn, flop in (
        ("qkv linear", lambda: F.linear(h, w_qkv), 3 * flop_fc1 / 4),
        ("fc1 linear", lambda: F.linear(h, w1, b1), flop_fc1),
        ("fc1 linear + gelu", lambda: F.gelu(F.linear(h, w1, b1)), flop_fc1),
        ("fc1 addmm gelu epilogue", lambda: torch._addmm_activation(b1, h, w1.t(), use_gelu=True),
         flop_fc1),
        ("layer norm", lambda: F.layer_norm(h, (WIDTH,)), 0),
        ("residual add", lambda: h + h, 0),
    ):
        ms = time_ms(fn)
        row = {"part": part, "ms": round(ms, 3)}
        if flop:
            row["tflops"] = round(flop / ms / 1e9, 1)
        rows.append(row)
    exact = F.gelu(F.linear(h, w1, b1)).float()
    fused = torch._addmm_activation(b1, h, w1.t(), use_gelu=True).float()
    rows.append({"part": "gelu epilogue max abs difference",
                 "value": (exact - fused).abs().max().item()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda:0")
    torch.manual_seed(0)
    report = {
        "machine": describe(device),
        "cross_attention": cross_attention(device, DECODE_BATCH),
        "quantize_into": quantize_into(device, ENCODER_BATCH),
        "self_attention": self_attention(device, DECODE_BATCH),
        "encoder": encoder_parts(device),
    }
    for section, rows in report.items():
        if section == "machine":
            continue
        print(f"\n{section}")
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
