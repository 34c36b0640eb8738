"""Timestamps on synthesized speech with known sentence and word times and long silences."""

from __future__ import annotations

import difflib
import itertools
import statistics
from pathlib import Path

import pytest
from steno_inference.options import TranscribeOptions
from support.speech import normalize_text, synthesize_timeline, write_wav

pytestmark = pytest.mark.integration

SCRIPT = [
    ("kal16", "The weather today is cold and windy in the north."),
    ("slt", "Please remember to bring your umbrella tomorrow morning."),
    ("awb", "The meeting has been moved to the large room upstairs."),
    ("rms", "We should finish the report before the end of the week."),
    ("kal16", "Thank you all for coming, and have a safe trip home."),
    ("slt", "Our next call will start at ten in the morning."),
]
GAPS_S = [4.0, 2.5, 6.0, 3.0, 8.0]  # silences between sentences, long enough to be cut


@pytest.fixture(scope="module")
def timeline(tmp_path_factory, flite):
    scratch = tmp_path_factory.mktemp("flite")
    audio, sentences = synthesize_timeline(SCRIPT, GAPS_S, scratch)
    path = scratch / "timeline.wav"
    write_wav(path, audio)
    return path, sentences


@pytest.fixture(scope="module")
def transcript(tiny_engine, timeline):
    path, _ = timeline
    return tiny_engine.transcribe(str(path), TranscribeOptions(timestamps="word"))


def test_segment_boundaries_within_half_a_second(transcript, timeline):
    _, sentences = timeline
    starts = [s.start_s for s in transcript.segments]
    ends = [s.end_s for s in transcript.segments]
    for sentence in sentences:
        assert min(abs(sentence.start_s - s) for s in starts) <= 0.5, (sentence, starts)
        assert min(abs(sentence.end_s - e) for e in ends) <= 0.5, (sentence, ends)


def test_median_word_time_error_within_0_3_s(transcript, timeline):
    _, sentences = timeline
    ref = [w for s in sentences for w in s.words]
    hyp = [w for s in transcript.segments for w in s.words]
    ref_text = [normalize_text(w.text) for w in ref]
    hyp_text = [normalize_text(w.text) for w in hyp]
    matcher = difflib.SequenceMatcher(a=ref_text, b=hyp_text, autojunk=False)
    errors = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            r, h = ref[block.a + k], hyp[block.b + k]
            errors.append(abs(r.start_s - h.start_s))
            errors.append(abs(r.end_s - h.end_s))
    assert len(errors) >= len(ref)  # at least half the words matched (two errors per word)
    print(f"\nword-time error over {len(errors) // 2} words: median "
          f"{statistics.median(errors):.3f} s, max {max(errors):.3f} s")
    assert statistics.median(errors) <= 0.3


def test_no_words_inside_silences(transcript, timeline):
    _, sentences = timeline
    words = [w for s in transcript.segments for w in s.words]
    assert words
    for before, after in itertools.pairwise(sentences):
        lo, hi = before.end_s + 0.25, after.start_s - 0.25
        inside = [w for w in words if w.start_s < hi and w.end_s > lo]
        assert not inside, f"words in the silence {lo:.2f}–{hi:.2f} s: {inside}"


def test_text_is_the_script(transcript):
    expected = normalize_text(" ".join(text for _, text in SCRIPT)).split()
    got = normalize_text(transcript.text).split()
    ratio = difflib.SequenceMatcher(a=expected, b=got).ratio()
    assert ratio >= 0.9, transcript.text


def test_silence_and_noise_give_no_text(tiny_engine, tmp_path: Path):
    import numpy as np

    rng = np.random.default_rng(0)
    silence = tmp_path / "silence.wav"
    noise = tmp_path / "noise.wav"
    write_wav(silence, np.zeros(16000 * 20, dtype=np.float32))
    write_wav(noise, (rng.normal(size=16000 * 20) * 0.05).astype(np.float32))
    for path in (silence, noise):
        result = tiny_engine.transcribe(str(path), TranscribeOptions())
        assert result.text == "" and result.segments == (), (path.name, result.text)
        assert result.duration_s == pytest.approx(20.0, abs=0.05)
