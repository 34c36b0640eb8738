"""The ONNX Runtime backend against the torch backend, on real speech.

The graphs are exported once into the cache (the first session pays ~20 s
for tiny.en, ~40 s for base); later sessions load them in about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
from steno_inference.audio import decode_audio
from steno_inference.engine import Engine, EngineConfig
from steno_inference.onnx_runner import OnnxWhisperRunner
from steno_inference.options import TranscribeOptions
from steno_inference.runner import DecodeRequest
from steno_inference.segmentation import WindowBuilder
from steno_inference.vad import SpeechDetector
from support.speech import cards_utterances, librivox_utterances, normalize_text

pytestmark = pytest.mark.integration

FORMATS = ("json", "srt", "vtt", "txt", "tsv")
MAX_INT8_WER_LOSS = 0.01  # int8 may cost at most 1 point of WER against fp32
WORD_TIME_TOLERANCE_S = 0.02  # one timestamp step


def _engine(model: str, backend: str, dtype: str = "auto") -> Engine:
    return Engine.load(EngineConfig(model=model, device="cpu", batch_size=8, backend=backend,
                                    dtype=dtype))


@pytest.fixture(scope="module")
def tiny_onnx() -> Engine:
    return _engine("tiny.en", "onnx")


@pytest.fixture(scope="module")
def tiny_int8() -> Engine:
    return _engine("tiny.en", "onnx", "int8")


def _windows() -> list:
    sources = [decode_audio(u.path) for u in librivox_utterances() + cards_utterances()]
    # One long source as well, so packed multi-piece windows are compared too.
    pause = np.zeros(16000 * 2, dtype=np.float32)
    sources.append(np.concatenate([x for s in sources[:5] * 2 for x in (s, pause)]))
    windows = []
    for audio in sources:
        builder = WindowBuilder(SpeechDetector.load())
        windows += builder.feed(audio) + builder.finish()
    return windows


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_fp32_tokens_equal_torch(model: str, speech_data) -> None:
    torch_engine = _engine(model, "torch")
    onnx_engine = _engine(model, "onnx")
    assert isinstance(onnx_engine.runner, OnnxWhisperRunner)
    windows = _windows()
    features = torch_engine.features([w.audio for w in windows])
    requests = [DecodeRequest(i, features[i], None) for i in range(len(windows))]
    theirs = {r.key: r for r in torch_engine.runner.decode(requests)}
    ours = {r.key: r for r in onnx_engine.runner.decode(requests)}
    assert sorted(ours) == sorted(theirs)
    differ = [k for k in theirs
              if (ours[k].tokens, ours[k].prompt) != (theirs[k].tokens, theirs[k].prompt)]
    assert not differ, f"{len(differ)} of {len(windows)} windows differ, e.g. {differ[:3]}"
    for key in theirs:
        assert ours[key].sum_logprob == pytest.approx(theirs[key].sum_logprob, abs=1e-3)
        assert ours[key].no_speech_prob == pytest.approx(theirs[key].no_speech_prob, abs=1e-4)
    if model == "base":  # multilingual: the language was detected, not given
        assert {r.language for r in ours.values()} == {"en"}


@pytest.mark.parametrize("engine_name", ["tiny_onnx", "tiny_int8"])
def test_one_at_a_time_equals_batched(engine_name: str, request, speech_data) -> None:
    # int8 too: a window's tokens must not depend on which windows share its steps.
    engine: Engine = request.getfixturevalue(engine_name)
    audio = [decode_audio(u.path) for u in librivox_utterances() + cards_utterances()]
    features = engine.features(audio)
    requests = [DecodeRequest(i, features[i], None) for i in range(len(audio))]
    batched = {r.key: r.tokens for r in engine.runner.decode(requests)}
    for one in requests:
        (single,) = engine.runner.decode([one])
        assert single.tokens == batched[one.key]


def _wer(engine: Engine) -> float:
    utterances = librivox_utterances() + cards_utterances()
    results = {r.index: r for r in engine.transcribe_many(
        [(str(u.path), str(u.path)) for u in utterances], TranscribeOptions())}
    hypotheses = [normalize_text(results[i].transcript.text) for i in range(len(utterances))]
    references = [normalize_text(u.reference) for u in utterances]
    return float(jiwer.wer(references, hypotheses))


def test_int8_wer_within_one_point_of_fp32(tiny_onnx, tiny_int8, speech_data,
                                           record_property) -> None:
    fp32, int8 = _wer(tiny_onnx), _wer(tiny_int8)
    record_property("wer_fp32", fp32)
    record_property("wer_int8", int8)
    assert int8 <= fp32 + MAX_INT8_WER_LOSS, f"int8 WER {int8:.4f} vs fp32 {fp32:.4f}"


def test_word_timestamps_match_torch(tiny_engine, tiny_onnx, speech_data) -> None:
    path = librivox_utterances()[0].path
    options = TranscribeOptions(timestamps="word")
    theirs = [w for s in tiny_engine.transcribe(str(path), options).segments for w in s.words]
    ours = [w for s in tiny_onnx.transcribe(str(path), options).segments for w in s.words]
    assert theirs and [w.text for w in ours] == [w.text for w in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a.start_s - b.start_s) <= WORD_TIME_TOLERANCE_S
        assert abs(a.end_s - b.end_s) <= WORD_TIME_TOLERANCE_S


def test_cli_onnx_writes_every_format(tmp_path: Path, speech_data) -> None:
    good = librivox_utterances()[0]
    run = subprocess.run(
        [sys.executable, "-m", "steno_inference.cli", "transcribe", str(good.path),
         "--backend", "onnx", "--dtype", "int8", "--device", "cpu", "--timestamps", "word",
         "--format", ",".join(FORMATS), "--output-dir", "out", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    for ext in FORMATS:
        assert (tmp_path / "out" / f"{good.path.stem}.{ext}").stat().st_size > 0
    data = json.loads((tmp_path / "out" / f"{good.path.stem}.json").read_text())
    assert normalize_text(data["text"]).startswith("and mister john dashwood")


def test_cli_refuses_int8_on_torch(tmp_path: Path, speech_data) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "steno_inference.cli", "transcribe",
         str(librivox_utterances()[0].path), "--backend", "torch", "--dtype", "int8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 2
    assert "int8 weights need the onnx backend" in run.stderr
