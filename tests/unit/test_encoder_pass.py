"""The fused encoder pass against transformers' encoder, on the CPU in float32.

On the CPU the residual adds and norms run as PyTorch operations and fc1's
GELU is exact, so what is checked here is the pass's own arrangement: fused
q/k/v weights with the query scaling folded in, the residual stream updated
in place with each sublayer's output added by the next norm, and the final
norm. The Triton kernel and the cuBLASLt GELU epilogue run on GPUs only;
``bench/encoder_variants.py`` and ``bench/gpu_correctness.py`` judge them there.
"""

from __future__ import annotations

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
