"""Residual add and layer norm in one pass over the rows (Triton, GPU).

A pre-norm layer adds each sublayer's output into the residual stream and
then normalizes the stream for the next sublayer. As two PyTorch kernels
that reads the stream three times and writes it twice; fused, each row is
read once with the addend, and both the new stream and its normalized copy
are written once (large-v3 encoder on an H100, ``bench/encoder_variants.py``:
4.89 ms per window against 5.31 ms unfused, 4.63 ms with fc1's GELU epilogue).

The arithmetic is PyTorch's: the sum is rounded to fp16 before the norm
reads it, as the fp16 add would round it, and the norm accumulates in
float32 with a biased variance.
"""

# Triton types a kernel's parameters itself (pointers, integers, constexpr);
# Python annotations on them would change how it specializes the kernel.
# ruff: noqa: ANN001

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may lack it
    import triton  # type: ignore[import-untyped,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None


def add_layer_norm(residual: torch.Tensor, addend: torch.Tensor | None,
                   norm: torch.nn.LayerNorm) -> torch.Tensor:
    """``residual += addend`` in place (when given), then ``norm(residual)``; 2-D, contiguous."""
    if triton is None or not residual.is_cuda:
        if addend is not None:
            residual += addend
        out: torch.Tensor = F.layer_norm(residual, norm.normalized_shape, norm.weight,
                                         norm.bias, norm.eps)
        return out
    rows, width = residual.shape
    normed = torch.empty_like(residual)
    grid: Any = (rows,)
    _add_norm_kernel[grid](
        residual, addend if addend is not None else residual, norm.weight, norm.bias, normed,
        width, float(norm.eps),
        HAS_ADDEND=addend is not None, BLOCK=triton.next_power_of_2(width), num_warps=4,
    )
    return normed


if triton is not None:

    @triton.jit  # type: ignore[untyped-decorator,unused-ignore]
    def add_and_normalize(  # type: ignore[no-untyped-def,unused-ignore] # noqa: ANN201
        residual_ptr, addend_ptr, weight_ptr, bias_ptr, offsets, cols, mask, width, eps,
        HAS_ADDEND: tl.constexpr,
    ):
        """One row of the stream, with the addend added and stored (HAS_ADDEND), layer-normed
        in float32. For kernels that go on with the normalized row (a bench's fp8 rows)."""
        x = tl.load(residual_ptr + offsets, mask=mask, other=0.0)
        if HAS_ADDEND:
            x = (x.to(tl.float32)
                 + tl.load(addend_ptr + offsets, mask=mask, other=0.0).to(tl.float32))
            x = x.to(residual_ptr.dtype.element_ty)  # the stream is stored in its own dtype
            tl.store(residual_ptr + offsets, x, mask=mask)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=0) / width
        centred = tl.where(mask, x - mean, 0.0)
        variance = tl.sum(centred * centred, axis=0) / width
        weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        return centred * tl.rsqrt(variance + eps) * weight + bias

    @triton.jit  # type: ignore[untyped-decorator,unused-ignore]
    def _add_norm_kernel(  # type: ignore[no-untyped-def,unused-ignore] # noqa: ANN202
        residual_ptr, addend_ptr, weight_ptr, bias_ptr, out_ptr, width, eps,
        HAS_ADDEND: tl.constexpr, BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < width
        offsets = row * width + cols
        y = add_and_normalize(residual_ptr, addend_ptr, weight_ptr, bias_ptr, offsets, cols,
                              mask, width, eps, HAS_ADDEND)
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)
