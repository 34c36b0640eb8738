"""The block-batched Silero network scores real speech as Silero's own TorchScript model does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from steno_inference.audio import decode_audio
from steno_inference.silero_net import FRAME_SAMPLES, SileroNet, SileroState
from steno_inference.vad import SpeechDetector, VadOptions, silero_model_path, speech_regions
from support.speech import librivox_utterances

pytestmark = pytest.mark.integration

TOLERANCE = 1e-5  # float32 rounding of differently ordered sums; probabilities are in [0, 1]


def _speech(count: int) -> list[np.ndarray]:
    return [decode_audio(str(u.path)) for u in librivox_utterances()[:count]]


def _silero_reference(pcm: np.ndarray) -> np.ndarray:
    """Silero's TorchScript model called frame by frame, as its own iterator does."""
    model = torch.jit.load(str(silero_model_path()), map_location="cpu")  # type: ignore[no-untyped-call]
    model.eval()
    model.reset_states()
    n_frames = pcm.size // FRAME_SAMPLES
    frames = torch.from_numpy(pcm[: n_frames * FRAME_SAMPLES].copy()).view(n_frames, FRAME_SAMPLES)
    with torch.inference_mode():
        return np.array([float(model(frames[i : i + 1], 16000).item()) for i in range(n_frames)])


@pytest.fixture(scope="module")
def net(speech_data: None) -> SileroNet:
    return SileroNet.from_torchscript(silero_model_path())


def test_probabilities_match_silero_frame_by_frame(net: SileroNet) -> None:
    pcm = np.concatenate(_speech(3))
    expected = _silero_reference(pcm)
    got = SpeechDetector(net).probabilities(pcm)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < TOLERANCE
    # Not a trivial signal: real speech has both speech and pauses.
    assert expected.min() < 0.1 and expected.max() > 0.9
    total = pcm.size
    options = VadOptions()
    assert speech_regions(got, options, total) == speech_regions(expected, options, total)


def test_blocks_of_any_size_give_the_same_probabilities(net: SileroNet) -> None:
    pcm = _speech(1)[0]
    whole = SpeechDetector(net)
    expected = np.concatenate([whole.probabilities(pcm), whole.flush()])
    detector = SpeechDetector(net)
    rng = np.random.default_rng(7)
    parts, start = [], 0
    while start < pcm.size:  # block sizes that split frames anywhere, some under one frame
        size = int(rng.integers(1, 40_000))
        parts.append(detector.probabilities(pcm[start : start + size]))
        start += size
    parts.append(detector.flush())
    got = np.concatenate(parts)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < TOLERANCE


def test_one_network_serves_concurrent_sources_independently(net: SileroNet) -> None:
    sources = _speech(4)
    alone = [SpeechDetector(net).probabilities(pcm) for pcm in sources]

    def blockwise(pcm: np.ndarray) -> np.ndarray:
        detector = SpeechDetector(net)
        blocks = [detector.probabilities(pcm[i : i + 8000]) for i in range(0, pcm.size, 8000)]
        return np.concatenate(blocks)

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(blockwise, sources))
    for got, expected in zip(together, alone, strict=True):
        assert float(np.abs(got - expected).max()) < TOLERANCE


def test_a_partial_block_is_refused_by_the_network(net: SileroNet) -> None:
    with pytest.raises(ValueError, match="whole frames of 512 samples, got 700"):
        net(torch.zeros(700), SileroState.initial())
