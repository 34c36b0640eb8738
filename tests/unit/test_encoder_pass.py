"""The fused encoder pass against transformers' encoder, on the CPU in float32.

On the CPU the residual adds and norms run as PyTorch operations and fc1's
GELU is exact, so what is checked here is the pass's own arrangement: fused
q/k/v weights with the query scaling folded in, the residual stream updated
in place with each sublayer's output added by the next norm, and the final
norm. The cuBLASLt GELU epilogue runs on GPUs only (``bench/encoder_variants.py``
and ``bench/gpu_correctness.py`` judge it there); the add-and-norm Triton
kernel is also run here, in Triton's interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from steno_inference.add_norm import add_layer_norm
from steno_inference.benchmarking.shapes import SHAPES, random_model
from steno_inference.encoder_pass import EncoderPass

pytestmark = pytest.mark.unit


def test_encoder_pass_matches_transformers_encoder() -> None:
    model = random_model(SHAPES["tiny"], torch.device("cpu"), torch.float32, seed=3)
    features = torch.randn(2, SHAPES["tiny"].n_mels, 3000, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = model.model.encoder(features).last_hidden_state
        got = EncoderPass(model)(features)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_add_layer_norm_updates_the_stream_and_returns_its_norm() -> None:
    generator = torch.Generator().manual_seed(5)
    stream = torch.randn(7, 48, generator=generator)
    addend = torch.randn(7, 48, generator=generator)
    norm = torch.nn.LayerNorm(48)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3, generator=generator)
        norm.bias.normal_(0.0, 0.3, generator=generator)
    before = stream.clone()
    with torch.inference_mode():
        normed = add_layer_norm(stream, addend, norm)
        torch.testing.assert_close(stream, before + addend)
        torch.testing.assert_close(normed, norm(before + addend))
        alone = add_layer_norm(stream, None, norm)
    torch.testing.assert_close(alone, normed)


KERNEL_SCRIPT = textwrap.dedent("""
    import json
    import torch
    from steno_inference.add_norm import _add_norm_kernel

    g = torch.Generator().manual_seed(6)
    rows, width = 6, 48  # a width below the block: masked columns
    stream = torch.randn(rows, width, generator=g).half()
    addend = torch.randn(rows, width, generator=g).half()
    norm = torch.nn.LayerNorm(width)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3, generator=g)
        norm.bias.normal_(0.0, 0.3, generator=g)
    summed = (stream.float() + addend.float()).half()  # an fp16 add rounds the sum
    out = torch.empty(rows, width)
    _add_norm_kernel[(rows,)](stream, addend, norm.weight, norm.bias, out, width, norm.eps,
                              HAS_ADDEND=True, BLOCK=64)
    with torch.no_grad():
        want = torch.nn.functional.layer_norm(summed.float(), (width,), norm.weight, norm.bias,
                                              norm.eps)
    print(json.dumps({"stream_equal": torch.equal(stream, summed),
                      "largest_error": (out - want).abs().max().item()}))
""")


def test_add_norm_kernel_in_the_triton_interpreter() -> None:
    done = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT],
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stream_equal"] is True
    assert result["largest_error"] < 1e-5
