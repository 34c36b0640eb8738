"""WER on real human speech: steno's engine against the transformers ASR pipeline."""

from __future__ import annotations

import jiwer
import pytest
import torch
from steno_inference.audio import decode_audio
from steno_inference.engine import Engine
from steno_inference.engine_config import EngineConfig
from steno_inference.options import TranscribeOptions
from support.speech import alsa_utterances, cards_utterances, librivox_utterances, normalize_text

pytestmark = pytest.mark.integration


def test_wer_no_worse_than_transformers_pipeline(tiny_engine, speech_data, record_property):
    from transformers import pipeline

    utterances = librivox_utterances() + cards_utterances() + alsa_utterances()
    assert len(utterances) >= 18
    references = [normalize_text(u.reference) for u in utterances]

    results = tiny_engine.transcribe_many(
        [(str(u.path), str(u.path)) for u in utterances], TranscribeOptions()
    )
    by_index = {r.index: r for r in results}
    ours = [normalize_text(by_index[i].transcript.text) for i in range(len(utterances))]
    beam_engine = Engine.load(EngineConfig(model="tiny.en", device="cpu", beam_size=5))
    beam_results = {r.index: r for r in beam_engine.transcribe_many(
        [(str(u.path), str(u.path)) for u in utterances], TranscribeOptions())}
    ours_beam = [normalize_text(beam_results[i].transcript.text) for i in range(len(utterances))]

    # The recipe insanely-fast-whisper's CLI runs: 30 s chunks, batched, timestamps on.
    asr = pipeline(
        "automatic-speech-recognition",
        model=str(tiny_engine.model_path),
        device="cpu",
        dtype=torch.float32,
    )
    audio = [decode_audio(u.path) for u in utterances]

    def pipeline_texts(**generate_kwargs) -> list[str]:
        # Fresh dicts each time: the pipeline consumes the ones it is given.
        inputs = [{"raw": a, "sampling_rate": 16000} for a in audio]
        outputs = asr(inputs, chunk_length_s=30, batch_size=8, return_timestamps=True,
                      generate_kwargs=generate_kwargs)
        return [normalize_text(o["text"]) for o in outputs]

    # The pipeline's own default search is 5-beam (it follows openai/whisper);
    # steno decodes greedily by default, so each is compared with its like.
    greedy = pipeline_texts(num_beams=1)
    beam = pipeline_texts()

    for ref, a, b in zip(references, ours, greedy, strict=True):
        if a != b:
            print(f"\n  ref:      {ref}\n  steno:    {a}\n  pipeline: {b}")
    steno_wer = jiwer.wer(references, ours)
    steno_beam_wer = jiwer.wer(references, ours_beam)
    greedy_wer = jiwer.wer(references, greedy)
    beam_wer = jiwer.wer(references, beam)
    record_property("steno_wer", steno_wer)
    record_property("steno_beam5_wer", steno_beam_wer)
    record_property("pipeline_greedy_wer", greedy_wer)
    record_property("pipeline_beam5_wer", beam_wer)
    print(f"\nWER on {len(utterances)} real utterances (pocketsphinx-testdata, alsa-utils), "
          f"tiny.en CPU fp32: steno (greedy) {steno_wer:.3%}, steno 5 beams "
          f"{steno_beam_wer:.3%}, transformers pipeline greedy "
          f"{greedy_wer:.3%}, transformers pipeline 5-beam (its default) {beam_wer:.3%}")
    assert steno_wer <= greedy_wer + 1e-9
    assert steno_beam_wer <= beam_wer + 1e-9
    assert steno_wer < 0.25
