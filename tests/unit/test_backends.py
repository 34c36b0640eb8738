"""Backend selection: what --backend and --dtype resolve to, and the clear refusals."""

from __future__ import annotations

import pytest
import torch
from steno_inference import backends
from steno_inference.backends import resolve_backend, torch_dtype_name
from steno_inference.options import OptionsError

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")
GPU = torch.device("cuda:0")  # only its type is read: no GPU needed


def test_auto_is_torch_on_gpu_and_onnx_on_cpu() -> None:
    assert resolve_backend("auto", "auto", GPU) == "torch"
    assert resolve_backend("auto", "fp16", GPU) == "torch"
    assert resolve_backend("auto", "auto", CPU) == "onnx"
    assert resolve_backend("auto", "int8", CPU) == "onnx"
    assert resolve_backend("auto", "bf16", CPU) == "torch"  # bf16 exists only on torch


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch) -> None:
    monkeypatch.setattr(backends, "onnx_available", lambda: False)
    assert resolve_backend("auto", "auto", CPU) == "torch"
    with pytest.raises(OptionsError, match=r"steno\[onnx\]"):
        resolve_backend("onnx", "auto", CPU)


@pytest.mark.parametrize(("backend", "dtype", "device", "message"), [
    ("torch", "int8", CPU, "int8 weights need the onnx backend"),
    ("onnx", "auto", GPU, "runs on the CPU"),
    ("onnx", "fp16", CPU, "use auto, fp32 or int8"),
    ("tensorrt", "auto", CPU, "unknown backend"),
])
def test_refusals_name_the_fix(backend: str, dtype: str, device: torch.device,
                               message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        resolve_backend(backend, dtype, device)


def test_torch_model_is_fp32_beside_onnx() -> None:
    assert torch_dtype_name("onnx", "int8", CPU) == "fp32"
    assert torch_dtype_name("auto", "auto", CPU) == "fp32"
    assert torch_dtype_name("torch", "bf16", CPU) == "bf16"
