"""Transcription with speakers: a two-voice dialogue through the engine and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from steno_inference.options import TranscribeOptions
from support.speech import flite_dialogue, write_wav

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory, flite):
    scratch = tmp_path_factory.mktemp("dialogue")
    audio, turns = flite_dialogue(scratch)
    path = scratch / "dialogue.wav"
    write_wav(path, audio)
    return path, turns


def _speaker_at(transcript, start_s: float, end_s: float) -> str | None:
    votes: Counter[str] = Counter()
    for segment in transcript.segments:
        for word in segment.words or ():
            overlap = min(end_s, word.end_s) - max(start_s, word.start_s)
            if overlap > 0 and word.speaker:
                votes[word.speaker] += 1
    return votes.most_common(1)[0][0] if votes else None


def test_words_carry_the_speaker_of_their_turn(tiny_engine, dialogue):
    path, turns = dialogue
    transcript = tiny_engine.transcribe(
        str(path), TranscribeOptions(timestamps="word", diarize=True, num_speakers=2)
    )
    assert len(transcript.speakers) == 2
    labels = [_speaker_at(transcript, t.start_s, t.end_s) for t in turns]
    assert None not in labels
    by_voice: dict[str, set[str | None]] = {}
    for turn, label in zip(turns, labels, strict=True):
        by_voice.setdefault(turn.speaker, set()).add(label)
    # Each voice maps to exactly one label, and the two labels differ.
    assert all(len(found) == 1 for found in by_voice.values()), by_voice
    assert len({next(iter(found)) for found in by_voice.values()}) == 2


def test_segment_mode_splits_where_the_speaker_changes(tiny_engine, dialogue):
    path, turns = dialogue
    transcript = tiny_engine.transcribe(str(path), TranscribeOptions(diarize=True))
    assert all(segment.words == () for segment in transcript.segments)
    assert all(segment.speaker for segment in transcript.segments)
    changes = sum(
        1 for a, b in zip(transcript.segments, transcript.segments[1:], strict=False)
        if a.speaker != b.speaker
    )
    assert changes >= len(turns) - 1 - 1  # every turn boundary, give or take one


def test_cli_writes_speaker_labels(dialogue, tmp_path: Path):
    path, _ = dialogue
    run = subprocess.run(
        [sys.executable, "-m", "steno_inference.cli", "transcribe", str(path), "--diarize",
         "--device", "cpu", "--format", "json,srt", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "dialogue.json").read_text())
    assert {chunk.get("speaker") for chunk in data["chunks"]} >= {"SPEAKER_00", "SPEAKER_01"}
    assert "[SPEAKER_0" in (tmp_path / "dialogue.srt").read_text()


def test_bad_speaker_counts_are_refused(tiny_engine):
    from steno_inference.options import OptionsError

    with pytest.raises(OptionsError, match="min_speakers"):
        tiny_engine.check_options(
            TranscribeOptions(diarize=True, min_speakers=3, max_speakers=2)
        )
