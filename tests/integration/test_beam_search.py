"""Beam search: transformers' ``generate(num_beams=K)`` tokens, window by window, and its limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from steno_inference.audio import decode_audio
from steno_inference.engine import Engine
from steno_inference.engine_config import EngineConfig
from steno_inference.options import OptionsError, TranscribeOptions
from steno_inference.runner import DecodeRequest, WhisperRunner
from support.speech import cards_utterances, librivox_utterances

pytestmark = pytest.mark.integration

BEAMS = 3
SLOTS = 4  # fewer than the windows: windows join as others finish, and rows get compacted


def test_beam_tokens_equal_generate(tiny_engine, speech_data) -> None:
    audio = [decode_audio(u.path) for u in librivox_utterances() + cards_utterances()]
    assert len(audio) > SLOTS
    features = tiny_engine.features(audio)
    runner = WhisperRunner(tiny_engine.model, tiny_engine.tokens, tiny_engine.device,
                           tiny_engine.dtype, max_batch=SLOTS * BEAMS, beam_size=BEAMS)
    assert runner.max_batch == SLOTS
    requests = [DecodeRequest(i, features[i], None) for i in range(len(audio))]
    ours = {r.key: r for r in runner.decode(requests)}
    assert runner.stats.compactions > 0
    with torch.inference_mode():
        generated = tiny_engine.model.generate(features, return_timestamps=True,
                                               num_beams=BEAMS)

    eot = tiny_engine.tokens.eot
    mismatches = []
    for i in range(len(audio)):
        theirs = [t for t in generated[i].tolist() if t != eot]
        if theirs != list(ours[i].tokens):
            mismatches.append((i, theirs, ours[i].tokens))
    assert not mismatches, f"{len(mismatches)} of {len(audio)} windows differ: {mismatches[:2]}"


def test_beam_of_one_row_each_is_greedy(tiny_engine, speech_data) -> None:
    from steno_inference.beam_state import BeamSlotState

    audio = [decode_audio(u.path) for u in librivox_utterances()[:3]]
    features = tiny_engine.features(audio)
    runner = WhisperRunner(tiny_engine.model, tiny_engine.tokens, tiny_engine.device,
                           tiny_engine.dtype, max_batch=2)
    runner.state = BeamSlotState(runner.max_batch, 1, tiny_engine.tokens, runner.vocab,
                                 tiny_engine.device)
    requests = [DecodeRequest(i, features[i], None) for i in range(len(audio))]
    beam = {r.key: r.tokens for r in runner.decode(requests)}
    greedy = {r.key: r.tokens for r in tiny_engine.runner.decode(requests)}
    assert beam == greedy


def test_engine_with_beams_transcribes(speech_data) -> None:
    engine = Engine.load(EngineConfig(model="tiny.en", device="cpu", batch_size=2, beam_size=2))
    assert engine.backend == "torch"  # auto picks torch: beam search is the torch runner's
    assert isinstance(engine.runner, WhisperRunner)
    assert engine.runner.beam_size == 2 and engine.runner.max_batch == 2
    utterance = librivox_utterances()[0]
    transcript = engine.transcribe(str(utterance.path), TranscribeOptions())
    words = set(transcript.text.lower().split())
    assert len(words & set(utterance.reference.lower().split())) >= 3


@pytest.mark.parametrize(("config", "message"), [
    (EngineConfig(model="tiny.en", device="cpu", beam_size=0), "beam size must be 1 to 16, not 0"),
    (EngineConfig(model="tiny.en", device="cpu", beam_size=17),
     "beam size must be 1 to 16, not 17"),
    (EngineConfig(model="tiny.en", device="cpu", beam_size=4, backend="onnx"),
     "beam size 4 needs the torch backend"),
])
def test_bad_beam_settings_are_refused(config: EngineConfig, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        Engine.load(config)


def test_silence_ends_with_a_hypothesis(tiny_engine) -> None:
    features = tiny_engine.features([np.zeros(16000 * 5, dtype=np.float32)])
    runner = WhisperRunner(tiny_engine.model, tiny_engine.tokens, tiny_engine.device,
                           tiny_engine.dtype, max_batch=BEAMS, beam_size=BEAMS)
    (result,) = runner.decode([DecodeRequest(0, features[0], None)])
    assert not result.truncated and not result.cancelled
