"""The engine's own decode loop gives exactly transformers' greedy tokens, window by window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from steno_inference.audio import decode_audio
from steno_inference.runner import DecodeRequest
from steno_inference.segmentation import WindowBuilder
from steno_inference.vad import SpeechDetector
from support.speech import cards_utterances, librivox_utterances

pytestmark = pytest.mark.integration


def _windows(audio: np.ndarray) -> list:
    builder = WindowBuilder(SpeechDetector.load())
    return builder.feed(audio) + builder.finish()


def test_greedy_tokens_equal_generate(tiny_engine, speech_data) -> None:
    sources = [decode_audio(u.path) for u in librivox_utterances() + cards_utterances()]
    # One long source as well, so packed multi-piece windows are compared too.
    pause = np.zeros(16000 * 2, dtype=np.float32)
    sources.append(np.concatenate([x for s in sources[:5] * 2 for x in (s, pause)]))
    windows = [w for audio in sources for w in _windows(audio)]
    assert len(windows) >= len(sources) + 1  # the long source needs two windows
    assert any(len(w.pieces) > 1 for w in windows)  # and its pauses were cut
    features = tiny_engine.features([w.audio for w in windows])

    requests = [DecodeRequest(i, features[i], None) for i in range(len(windows))]
    ours = {r.key: r for r in tiny_engine.runner.decode(requests)}
    with torch.inference_mode():
        generated = tiny_engine.model.generate(features, return_timestamps=True)

    eot = tiny_engine.tokens.eot
    mismatches = []
    for i in range(len(windows)):
        theirs = [t for t in generated[i].tolist() if t != eot]
        mine = list(ours[i].tokens)
        if theirs != mine:
            mismatches.append((i, theirs, mine))
    assert not mismatches, f"{len(mismatches)} of {len(windows)} windows differ: {mismatches[:2]}"


def test_continuous_batching_equals_one_at_a_time(tiny_engine, speech_data) -> None:
    audio = [decode_audio(u.path) for u in librivox_utterances()]
    features = tiny_engine.features(audio)
    requests = [DecodeRequest(i, features[i], None) for i in range(len(audio))]
    batched = {r.key: r.tokens for r in tiny_engine.runner.decode(requests)}
    for request in requests:
        single = list(tiny_engine.runner.decode([request]))
        assert single[0].tokens == batched[request.key]
