"""WER on real human speech: steno's engine against the transformers ASR pipeline."""

from __future__ import annotations

import jiwer
import pytest
import torch
from steno_inference.audio import decode_audio
from steno_inference.options import TranscribeOptions
from support.speech import cards_utterances, librivox_utterances, normalize_text

pytestmark = pytest.mark.integration


def test_wer_no_worse_than_transformers_pipeline(tiny_engine, speech_data, record_property):
    from transformers import pipeline

    utterances = librivox_utterances() + cards_utterances()
    references = [normalize_text(u.reference) for u in utterances]

    results = tiny_engine.transcribe_many(
        [(str(u.path), str(u.path)) for u in utterances], TranscribeOptions()
    )
    by_index = {r.index: r for r in results}
    ours = [normalize_text(by_index[i].transcript.text) for i in range(len(utterances))]

    # The recipe insanely-fast-whisper's CLI runs: 30 s chunks, batched, timestamps on.
    asr = pipeline(
        "automatic-speech-recognition",
        model=tiny_engine.model,
        tokenizer=tiny_engine.tokenizer,
        feature_extractor=str(tiny_engine.model.name_or_path),
        device="cpu",
        dtype=torch.float32,
    )
    inputs = [{"raw": decode_audio(u.path), "sampling_rate": 16000} for u in utterances]
    outputs = asr(inputs, chunk_length_s=30, batch_size=8, return_timestamps=True)
    theirs = [normalize_text(o["text"]) for o in outputs]

    steno_wer = jiwer.wer(references, ours)
    pipeline_wer = jiwer.wer(references, theirs)
    record_property("steno_wer", steno_wer)
    record_property("pipeline_wer", pipeline_wer)
    print(f"\nWER on {len(utterances)} pocketsphinx-testdata utterances, tiny.en CPU fp32: "
          f"steno {steno_wer:.3%}, transformers pipeline {pipeline_wer:.3%}")
    assert steno_wer <= pipeline_wer + 1e-9
    assert steno_wer < 0.25
