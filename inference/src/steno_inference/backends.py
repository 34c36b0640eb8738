"""Which runner executes the model: torch (any device) or ONNX Runtime (CPU).

``backend``:

* ``torch``: :class:`~steno_inference.runner.WhisperRunner`, on GPU or CPU;
* ``onnx``: :class:`~steno_inference.onnx_runner.OnnxWhisperRunner`, CPU only,
  with graphs exported once into the cache (``pip install 'steno[onnx]'``);
* ``auto``: torch on a GPU; on a CPU the faster of the two as measured by
  ``bench/cpu_backends.py`` (ONNX, when ONNX Runtime is installed).

``dtype`` keeps its meaning for torch (``auto``, ``fp16``, ``bf16``,
``fp32``); for ONNX it is ``auto``/``fp32`` or ``int8`` (dynamic int8
quantization of the weights). ``int8`` with ``backend auto`` picks ONNX.
The torch model is loaded in fp32 beside an ONNX runner: it supplies the
tokenizer's configuration and the word-alignment pass.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steno_inference.options import OptionsError

# The CLI imports the names below for its flags: no torch at import, so
# `steno --help` stays instant.
if TYPE_CHECKING:
    import torch

    from steno_inference.onnx_runner import OnnxWhisperRunner
    from steno_inference.tokens import WhisperTokens

Backend = Literal["torch", "onnx"]
BACKENDS = ("auto", "torch", "onnx")
DTYPES = ("auto", "fp16", "bf16", "fp32", "int8")  # int8: ONNX only
ONNX_DTYPES = ("auto", "fp32", "int8")
# bench/results/cpu-backends.json: on 2 cores ONNX Runtime fp32 beat torch fp32
# for tiny.en and base on both the 30 s and the 5-minute file.
CPU_AUTO_BACKEND: Backend = "onnx"


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str, dtype: str, device: torch.device, beam_size: int = 1) -> Backend:
    """The backend to run; raises OptionsError for an unknown or impossible choice.

    Beam search exists only in the torch runner, so ``auto`` picks torch for it.
    """
    if backend not in BACKENDS:
        raise OptionsError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type != "cpu" or (beam_size > 1 and dtype != "int8"):
            backend = "torch"
        elif dtype == "int8" or (CPU_AUTO_BACKEND == "onnx" and dtype in ONNX_DTYPES):
            backend = "onnx" if onnx_available() else "torch"
        else:
            backend = "torch"
    if backend == "onnx":
        if device.type != "cpu":
            raise OptionsError(f"the onnx backend runs on the CPU, not on {device}: use torch")
        if not onnx_available():
            raise OptionsError("the onnx backend needs ONNX Runtime: pip install 'steno[onnx]'")
        if dtype not in ONNX_DTYPES:
            raise OptionsError(f"dtype {dtype!r} on the onnx backend: use auto, fp32 or int8")
        if beam_size > 1:
            raise OptionsError(
                f"beam size {beam_size} needs the torch backend: the onnx backend decodes "
                "greedily (use --backend torch, or --beam-size 1)"
            )
        return "onnx"
    if dtype == "int8":
        raise OptionsError("int8 weights need the onnx backend: use --backend onnx")
    return "torch"


def torch_dtype_name(backend: str, dtype: str, device: torch.device, beam_size: int = 1) -> str:
    """The dtype the torch model is loaded in: fp32 beside an ONNX runner."""
    return "fp32" if resolve_backend(backend, dtype, device, beam_size) == "onnx" else dtype


def make_onnx_runner(
    model: Any,
    model_path: Path | None,
    tokens: WhisperTokens,
    dtype: str,
    cache_dir: Path,
    max_batch: int,
) -> OnnxWhisperRunner:
    """An OnnxWhisperRunner for the model in ``model_path`` (exported on first use)."""
    from steno_inference.onnx_runner import OnnxWhisperRunner

    if model_path is None:
        raise OptionsError("the onnx backend exports from a model directory; none is known")
    precision: Literal["fp32", "int8"] = "int8" if dtype == "int8" else "fp32"
    return OnnxWhisperRunner.build(
        model_path, cache_dir, tokens, int(model.config.num_mel_bins), precision, max_batch
    )
