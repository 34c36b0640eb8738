"""How many windows decode at once, and how many are encoded together: sized from memory.

A decoder slot holds its window's cross-attention keys and values (1500
positions) and a self-attention cache (448 positions) in every layer — for
the large-v3 shape 2 × 32 × 1280 × (1500 + 448) × 2 bytes = 319 MB in fp16 —
plus a little step workspace (float32 logits and the rule masks over the
vocabulary). The decoder reads every slot's cross-attention cache at every
step, so more slots do not make a step cheaper per window; they keep the GPU
busy while windows enter and leave, and amortise reading the weights. The
slot count is therefore "as many as memory allows", up to a cap.

The plan, given the model already on the device:

    budget = (memory cap or free memory) - CUDA context - encoder workspace - reserve
    slots  = min(MAX_SLOTS, budget // bytes per slot)

A memory cap (``memory_cap_gib``, e.g. 24 for a 24 GB card) counts everything
the process holds on the device, model weights included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from steno_inference.decoder_pass import N_AUDIO_CTX, DecoderPass

LOG = logging.getLogger(__name__)

GIB = 1 << 30
MAX_SLOTS = 512  # beyond this a step's weight reads are already < 1 % of its cross-attention reads
CPU_SLOTS = 8  # a CPU gains nothing from wider batches and they delay every window's result
ENCODER_BATCH = 32  # 32 × 1500 = 48,000 rows per encoder matmul: the GPU is saturated already
# The CUDA context, cuBLAS and cuDNN workspaces live outside PyTorch's allocator.
CUDA_CONTEXT_BYTES = 768 << 20
RESERVE_FRACTION = 0.06  # allocator fragmentation and the graphs' shared pool
# Per vocabulary entry per slot during a step: float32 logits, scores and
# log-probabilities (12 bytes) and a few boolean masks (4 bytes).
STEP_BYTES_PER_VOCAB = 16
# Peak encoder activation per window, in d_model-wide rows of the dtype: the
# conv stem's 3000-frame output and its GELU (2 × 3000 rows), then per layer
# the residual, norm, fused q/k/v, attention output (about 7 × 1500 rows) and
# the MLP's 4 × d hidden layer before and after GELU (8 × 1500 rows). The
# turbo shape's 24 GB run overflowed the earlier 3000 + 10 × 1500 estimate.
ENCODER_ROWS_PER_WINDOW = 2 * 3000 + 16 * N_AUDIO_CTX


@dataclass(frozen=True)
class BatchPlan:
    """Decoder slots and encoder batch for one runner."""

    slots: int
    encoder_batch: int
    bytes_per_slot: int
    budget_bytes: int  # what the plan had to spend on slots


def slot_bytes(model: Any, dtype: torch.dtype, n_ctx: int, int8_cross_kv: bool = False,
               beam_size: int = 1) -> int:
    """Device bytes one decoder row costs: caches plus its share of step workspace."""
    decoder = model.model.decoder
    attn = decoder.layers[0].self_attn
    itemsize = torch.finfo(dtype).bits // 8
    caches = DecoderPass.bytes_per_slot(
        len(decoder.layers), int(attn.num_heads), int(attn.head_dim), n_ctx, itemsize,
        int8_cross_kv, beam_size,
    )
    vocab = int(decoder.embed_tokens.weight.shape[0])
    return caches + vocab * STEP_BYTES_PER_VOCAB


def encoder_window_bytes(model: Any, dtype: torch.dtype) -> int:
    d_model = int(model.config.d_model)
    return ENCODER_ROWS_PER_WINDOW * d_model * (torch.finfo(dtype).bits // 8)


def plan_batch(
    model: Any,
    dtype: torch.dtype,
    device: torch.device,
    n_ctx: int,
    memory_cap_gib: float | None = None,
    max_slots: int = MAX_SLOTS,
    int8_cross_kv: bool = False,
    beam_size: int = 1,
) -> BatchPlan:
    """Decoder rows and encoder batch that fit the device (and the cap, when one is given).

    With beam search a window takes ``beam_size`` rows, which share its
    cross-attention keys and values (unless they are int8).
    """
    per_slot = slot_bytes(model, dtype, n_ctx, int8_cross_kv and device.type == "cuda",
                          beam_size)
    if device.type != "cuda":
        return BatchPlan(CPU_SLOTS, CPU_SLOTS, per_slot, 0)
    free, total = torch.cuda.mem_get_info(device)
    held = torch.cuda.memory_reserved(device)
    if memory_cap_gib is not None:
        cap = int(memory_cap_gib * GIB)
        available = min(free, cap - CUDA_CONTEXT_BYTES - held)
    else:
        available = free
    encoder_batch = ENCODER_BATCH
    encoder_bytes = encoder_batch * encoder_window_bytes(model, dtype)
    reserve = int(RESERVE_FRACTION * (cap if memory_cap_gib is not None else total))
    budget = available - encoder_bytes - reserve
    slots = max(1, min(max_slots, budget // per_slot))
    if budget < per_slot:
        # Even one slot does not fit beside a full encoder batch: shrink the encoder's.
        encoder_batch = max(1, encoder_batch // 8)
    LOG.info("batch plan: %d slots of %.0f MB, encoder batch %d, budget %.1f GiB",
             slots, per_slot / 1e6, encoder_batch, budget / GIB)
    return BatchPlan(int(slots), encoder_batch, per_slot, int(budget))


def apply_memory_cap(device: torch.device, memory_cap_gib: float) -> None:
    """Make PyTorch's allocator refuse to grow past the cap (minus the CUDA context).

    This is process-wide; a process that runs only steno (a pod, a benchmark)
    uses it to prove that a smaller card would do.
    """
    total = torch.cuda.get_device_properties(device).total_memory
    allowed = memory_cap_gib * GIB - CUDA_CONTEXT_BYTES
    torch.cuda.set_per_process_memory_fraction(min(1.0, max(0.0, allowed / total)), device)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error)
