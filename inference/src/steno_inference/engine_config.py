"""How an engine runs: its settings, and the device, dtype and attention they resolve to."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from steno_inference.backends import torch_dtype_name
from steno_inference.beam_state import MAX_BEAM_SIZE
from steno_inference.options import OptionsError

GPU_SWITCH_INTERVAL_S = 0.0005  # the GIL hand-over interval on a GPU engine (see resolve_runtime)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs; fixed for the engine's lifetime."""

    model: str = "tiny.en"  # short name, local HF or CTranslate2 directory, or hub id
    device: str = "auto"  # auto: cuda:0 when available, else cpu
    dtype: str = "auto"  # auto: fp16 on GPU, fp32 on CPU
    attention: str = "auto"  # encoder attention: flash (flash-attn), sdpa, eager
    batch_size: int | None = None  # decoder slots; None: chosen from the device's free memory
    memory_cap_gib: float | None = None  # all device memory the engine may hold (24 GB card: 24)
    vad: bool = True  # find speech first; off: back-to-back 30 s windows
    cache_dir: Path | None = None  # converted models; None: $STENO_CACHE_DIR or ~/.cache/steno
    backend: str = "auto"  # torch, onnx (CPU; dtype fp32 or int8), auto (steno_inference.backends)
    vad_threads: int | None = None  # sources running voice activity at once; None: half the CPUs
    int8_cross_kv: bool = False  # GPU: cross-attention keys/values as int8 (half a step's reads)
    beam_size: int = 1  # beams per window (1: greedy); torch backend only (beam_state.py)
    deterministic: bool = False  # GPU: repeatable decoder attention kernels (slower; decoder_pass)


def vad_threads(config: EngineConfig) -> int:
    """How many sources may run voice activity at once: the setting, or half the CPUs."""
    if config.vad_threads is not None:
        if config.vad_threads < 1:
            raise OptionsError(f"vad threads must be at least 1, not {config.vad_threads}")
        return config.vad_threads
    return max(1, (os.cpu_count() or 2) // 2)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise OptionsError(f"unknown device {device!r}: use auto, cpu or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"device {device!r} asked for, but no CUDA device is available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise OptionsError(f"unknown dtype {dtype!r}: use auto, fp16, bf16 or fp32")
    if device.type == "cpu" and dtype == "fp16":
        raise OptionsError("fp16 on CPU is not supported: use fp32 or bf16 on CPU")
    return table[dtype]


def resolve_attention(attention: str, device: torch.device) -> str:
    """The transformers attention implementation for the encoder."""
    if attention not in ("auto", "flash", "sdpa", "eager"):
        raise OptionsError(f"unknown attention {attention!r}: use auto, flash, sdpa or eager")
    flash_available = False
    if device.type == "cuda":
        flash_available = importlib.util.find_spec("flash_attn") is not None
    if attention == "flash":
        if device.type != "cuda":
            raise OptionsError("flash attention needs a CUDA device; use sdpa on CPU")
        # Without the flash-attn package, SDPA runs PyTorch's own flash kernels.
        return "flash_attention_2" if flash_available else "sdpa"
    if attention == "auto":
        return "flash_attention_2" if flash_available else "sdpa"
    return attention


def resolve_runtime(config: EngineConfig) -> tuple[torch.device, torch.dtype, str]:
    """Device, dtype and encoder attention of ``config``; raises OptionsError naming the problem."""
    device = resolve_device(config.device)
    if config.int8_cross_kv and device.type != "cuda":
        raise OptionsError(
            f"int8 cross-attention keys and values need a CUDA device, not {device}"
        )
    if config.batch_size is not None and config.batch_size < 1:
        raise OptionsError(f"batch size must be at least 1, not {config.batch_size}")
    vad_threads(config)  # a bad setting fails here, before any model is loaded
    if not 1 <= config.beam_size <= MAX_BEAM_SIZE:
        raise OptionsError(f"beam size must be 1 to {MAX_BEAM_SIZE}, not {config.beam_size}")
    if device.type == "cuda":
        # The model runs on the GPU; what torch still does on the CPU is
        # voice activity, small convolutions over a block of frames, on the
        # thread of each source (several at once in a server). Spread over
        # an intra-op pool those ops mostly wait for each other; one thread
        # each lets sources run side by side on the other cores.
        torch.set_num_threads(1)
        # The scheduler thread gives up the GIL at every GPU synchronization
        # and must get it back from whichever source thread took it; by
        # default that takes up to 5 ms. With 256 concurrent short calls on
        # an H100, 0.5 ms raised capacity from 24.5 to 34.8 calls/s
        # (bench/grpc_load.py).
        sys.setswitchinterval(GPU_SWITCH_INTERVAL_S)
    dtype = resolve_dtype(
        torch_dtype_name(config.backend, config.dtype, device, config.beam_size), device)
    return device, dtype, resolve_attention(config.attention, device)
