"""Cross-attention for one new token per window over int8 keys and values (Triton, GPU).

A decode step's time is mostly the reading of every window's cross-attention
keys and values (measured on an H100 at 218 windows: 17.4 of 24.3 ms per
large-v3 step, at the card's copy bandwidth). Stored as int8 with one scale
per (window, head, position) — 64 values share a scale — they are 1 + 2/64
bytes per value instead of 2, so the same step reads about half as much.

Quantization (when a window enters its slot): ``scale = max|x| / 127`` over
the 64 values of one head at one position, ``q = round(x / scale)``. The
kernel never materialises fp16 keys: per block of positions it loads int8
keys, takes the dot product with the query in float32, multiplies by the key
scales, and keeps a running (online) softmax; value scales are folded into
the softmax weights before the weighted sum. One program per (window, head)
walks all 1500 positions: at a few hundred windows × 20 heads that is
thousands of programs, enough to fill the GPU without splitting positions.

Whether this keeps transcripts within 1 % of fp16 is measured on real speech
by ``bench/gpu_correctness.py``; the runner uses it only when asked.
"""

# Triton types a kernel's parameters itself (pointers, integers, constexpr);
# Python annotations on them would change how it specializes the kernel.
# ruff: noqa: ANN001

from __future__ import annotations

from typing import Any

import torch

INT8_MAX = 127
SCALE_FLOOR = 1e-8  # an all-zero row (padding) keeps a finite scale
# How the kernel turns int8 into floats and multiplies (see _as_float):
# 0 plain conversion and float32 math, 1 integer trick and float32 math,
# 2 integer trick and tensor-core products. bench/kernels.py times them.
MODES = (0, 1, 2)
DEFAULT_MODE = 0

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may lack it
    import triton  # type: ignore[import-untyped,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values and float16 scales of ``x`` (..., head_dim), one scale per last-dim row."""
    scale = x.abs().amax(dim=-1).float().clamp(min=SCALE_FLOOR) / INT8_MAX
    scaled = x.float() / scale[..., None]
    # Half away from zero, as the Triton kernel rounds.
    q = (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale.to(torch.float16)


def quantize_into(x: torch.Tensor, rows: torch.Tensor, cache: torch.Tensor,
                  scale: torch.Tensor) -> None:
    """Quantize projected keys or values ``x`` (n, positions, heads × head_dim) into slots ``rows``.

    ``cache`` is (slots, heads, positions, head_dim) int8 and ``scale``
    (slots, heads, positions) float16. On a GPU one kernel reads ``x`` once
    and writes both, already in the cache's layout: quantizing with PyTorch
    operations took about eight passes over each window's 246 MB of keys
    and values (large-v3), plus a scattered copy.
    """
    n, positions, _ = x.shape
    heads, head_dim = cache.shape[1], cache.shape[3]
    if triton is None or not x.is_cuda:
        q, s = quantize(x.view(n, positions, heads, head_dim).transpose(1, 2))
        cache[rows] = q
        scale[rows] = s
        return
    grid: Any = (n * positions,)
    _quantize_into_kernel[grid](
        x, rows, cache, scale,
        x.stride(0), x.stride(1),
        cache.stride(0), cache.stride(1), cache.stride(2),
        scale.stride(0), scale.stride(1),
        heads, positions,
        D=head_dim, BLOCK_H=triton.next_power_of_2(heads),
    )


def reference(q: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor, v: torch.Tensor,
              v_scale: torch.Tensor) -> torch.Tensor:
    """The same attention in plain PyTorch (tests, and machines without Triton)."""
    keys = k.float() * k_scale.float()[..., None]
    values = v.float() * v_scale.float()[..., None]
    scores = torch.einsum("bhd,bhtd->bht", q.float(), keys)
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bht,bhtd->bhd", weights, values).to(q.dtype)


if triton is not None:

    @triton.jit  # type: ignore[untyped-decorator,unused-ignore]
    def _as_float(x, MODE: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore] # noqa: ANN202
        """int8 → float: a plain conversion (MODE 0), or exact integer arithmetic
        into float16 (MODE ≥ 1: ``(x + 128) | 0x6400`` is the float16 ``1024 + x + 128``),
        which avoids the GPU's quarter-rate conversion unit."""
        # One return: the branch taken is fixed at compile time (MODE is a
        # constant), but Triton wants every return of a function to agree in type.
        if MODE == 0:
            value = x.to(tl.float32)
        else:
            value = (x.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0
        return value

    @triton.autotune(  # type: ignore[untyped-decorator,unused-ignore]
        configs=[
            triton.Config({"BLOCK_T": 64}, num_warps=4, num_stages=3),
            triton.Config({"BLOCK_T": 128}, num_warps=4, num_stages=3),
            triton.Config({"BLOCK_T": 128}, num_warps=8, num_stages=2),
            triton.Config({"BLOCK_T": 256}, num_warps=8, num_stages=2),
        ],
        key=["T", "MODE"],
    )
    @triton.jit  # type: ignore[untyped-decorator,unused-ignore]
    def _int8_attention_kernel(  # type: ignore[no-untyped-def,unused-ignore]
        Q, K, KS, V, VS, Out,
        stride_qb, stride_qh,
        stride_kb, stride_kh, stride_kt,
        stride_sb, stride_sh,
        stride_ob, stride_oh,
        H, T,
        D: tl.constexpr, MODE: tl.constexpr, BLOCK_T: tl.constexpr,
    ) -> None:
        pid = tl.program_id(0)
        b = (pid // H).to(tl.int64)
        h = pid % H
        offs_d = tl.arange(0, D)
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_d).to(tl.float32)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_kb + h * stride_kh
        s_base = b * stride_sb + h * stride_sh
        m = tl.full((), float("-inf"), tl.float32)
        total = tl.zeros((), tl.float32)
        acc = tl.zeros((D,), tl.float32)
        if MODE == 2:
            # Tensor cores: the query is row 0 of a 16-row operand (rows 1-15 zero).
            first = tl.arange(0, 16)[:, None] == 0
            q_rows = tl.where(first, q[None, :], 0.0).to(tl.float16)
        for start in range(0, T, BLOCK_T):
            offs_t = start + tl.arange(0, BLOCK_T)
            valid = offs_t < T
            rows = offs_t[:, None] * stride_kt + offs_d[None, :]
            k = _as_float(tl.load(k_base + rows, mask=valid[:, None], other=0), MODE)
            k_scale = tl.load(KS + s_base + offs_t, mask=valid, other=0).to(tl.float32)
            if MODE == 2:
                scores = tl.sum(tl.dot(q_rows, tl.trans(k)), axis=0) * k_scale
            else:
                scores = tl.sum(k.to(tl.float32) * q[None, :], axis=1) * k_scale
            scores = tl.where(valid, scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            alpha = tl.exp(m - m_new)
            p = tl.exp(scores - m_new)
            total = total * alpha + tl.sum(p, axis=0)
            v = _as_float(tl.load(v_base + rows, mask=valid[:, None], other=0), MODE)
            v_scale = tl.load(VS + s_base + offs_t, mask=valid, other=0).to(tl.float32)
            if MODE == 2:
                weights = tl.where(first, (p * v_scale)[None, :], 0.0).to(tl.float16)
                acc = acc * alpha + tl.sum(tl.dot(weights, v), axis=0)
            else:
                acc = acc * alpha + tl.sum((p * v_scale)[:, None] * v.to(tl.float32), axis=0)
            m = m_new
        out = acc / total
        tl.store(Out + b * stride_ob + h * stride_oh + offs_d, out.to(Out.dtype.element_ty))

    @triton.jit  # type: ignore[untyped-decorator,unused-ignore]
    def _quantize_into_kernel(  # type: ignore[no-untyped-def,unused-ignore]
        X, Rows, Out, Scale,
        stride_xn, stride_xt,
        stride_ob, stride_oh, stride_ot,
        stride_sb, stride_sh,
        H, T,
        D: tl.constexpr, BLOCK_H: tl.constexpr,
    ) -> None:
        pid = tl.program_id(0)
        i = pid // T
        t = pid % T
        slot = tl.load(Rows + i).to(tl.int64)
        offs_h = tl.arange(0, BLOCK_H)
        offs_d = tl.arange(0, D)
        heads = offs_h < H
        source = X + i.to(tl.int64) * stride_xn + t * stride_xt
        x = tl.load(source + offs_h[:, None] * D + offs_d[None, :], mask=heads[:, None],
                    other=0.0).to(tl.float32)
        # IEEE divisions (plain "/" is approximate on GPUs): the same values as quantize().
        scale = tl.div_rn(tl.maximum(tl.max(tl.abs(x), axis=1), 1e-8), 127.0)
        scaled = tl.div_rn(x, scale[:, None])
        q = tl.where(scaled >= 0, tl.floor(scaled + 0.5), -tl.floor(-scaled + 0.5))
        q = tl.minimum(tl.maximum(q, -127.0), 127.0)
        target = Out + slot * stride_ob + t * stride_ot
        tl.store(target + offs_h[:, None] * stride_oh + offs_d[None, :], q.to(tl.int8),
                 mask=heads[:, None])
        tl.store(Scale + slot * stride_sb + offs_h * stride_sh + t, scale.to(tl.float16),
                 mask=heads)


def attention(q: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor, v: torch.Tensor,
              v_scale: torch.Tensor, mode: int | None = None) -> torch.Tensor:
    """Softmax(q · kᵀ) · v for q (batch, heads, head_dim), already scaled.

    ``k``/``v``: int8 (slots ≥ batch, heads, positions, head_dim), contiguous
    in the last two dims; ``k_scale``/``v_scale``: (slots, heads, positions).
    Rows ``[:batch]`` of the caches are read.
    """
    if triton is None or not q.is_cuda:
        batch = q.shape[0]
        return reference(q, k[:batch], k_scale[:batch], v[:batch], v_scale[:batch])
    batch, heads, head_dim = q.shape
    positions = k.shape[2]
    out = torch.empty_like(q)
    grid: Any = (batch * heads,)
    _int8_attention_kernel[grid](
        q, k, k_scale, v, v_scale, out,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        k_scale.stride(0), k_scale.stride(1),
        out.stride(0), out.stride(1),
        heads, positions,
        D=head_dim, MODE=DEFAULT_MODE if mode is None else mode,
    )
    return out
