"""Speaker assignment onto transcripts: largest overlap, per word, segments split at changes."""

from __future__ import annotations

import json

import pytest
from steno_inference.diarization import SpeakerTurn, assign_speakers
from steno_inference.formats import render
from steno_inference.transcript import Segment, Transcript, Word, join_segment_text

pytestmark = pytest.mark.unit

A, B = "SPEAKER_00", "SPEAKER_01"


def _word(start: float, end: float, text: str) -> Word:
    return Word(start_s=start, end_s=end, text=text, probability=0.9)


def _transcript(*segments: Segment) -> Transcript:
    return Transcript(
        text=join_segment_text(segments), segments=segments, language="en", duration_s=20.0
    )


def _turns(*spans: tuple[float, float, str]) -> list[SpeakerTurn]:
    return [SpeakerTurn(start, end, speaker) for start, end, speaker in spans]


def test_segment_spanning_two_speakers_is_split_at_the_change_and_words_labelled() -> None:
    words = (
        _word(0.5, 0.9, " Are"),
        _word(0.9, 1.2, " you"),
        _word(1.2, 1.8, " coming?"),
        _word(2.6, 3.0, " Yes,"),
        _word(3.0, 3.4, " right"),
        _word(3.4, 3.9, " away."),
    )
    segment = Segment(0.4, 4.0, " Are you coming? Yes, right away.", tokens=(1, 2, 3),
                      avg_logprob=-0.2, no_speech_prob=0.01, words=words)
    result = assign_speakers(_transcript(segment), _turns((0.3, 2.0, A), (2.4, 4.2, B)))

    assert [w.speaker for s in result.segments for w in s.words] == [A, A, A, B, B, B]
    first, second = result.segments
    assert (first.speaker, first.start_s, first.end_s, first.text) == (A, 0.4, 1.8, " Are you coming?")
    assert (second.speaker, second.start_s, second.end_s, second.text) == (B, 2.6, 4.0, " Yes, right away.")
    assert first.avg_logprob == second.avg_logprob == -0.2
    assert first.tokens == second.tokens == ()  # words do not say which tokens are theirs
    assert result.speakers == (A, B)
    assert result.text == "Are you coming? Yes, right away."


def test_nearest_end_time_rule_would_mislabel_what_overlap_gets_right() -> None:
    # One long segment, mostly A; its end touches B's turn. Labelled as a whole by the
    # turn nearest its end it would be B; per word, only the last word is B's.
    words = (_word(1.0, 2.0, " one"), _word(2.0, 3.0, " two"), _word(3.0, 3.5, " three"),
             _word(4.1, 4.5, " four"))
    segment = Segment(1.0, 4.5, " one two three four", words=words)
    result = assign_speakers(_transcript(segment), _turns((0.8, 3.6, A), (4.0, 6.0, B)))
    assert [(s.speaker, s.text) for s in result.segments] == [(A, " one two three"), (B, " four")]


def test_word_straddling_a_boundary_goes_to_the_larger_overlap() -> None:
    words = (_word(1.9, 2.3, " hello"),)  # 0.1 s with A, 0.3 s with B
    segment = Segment(1.9, 2.3, " hello", words=words)
    result = assign_speakers(_transcript(segment), _turns((0.0, 2.0, A), (2.0, 5.0, B)))
    assert result.segments[0].words[0].speaker == B
    assert result.segments[0].speaker == B


def test_word_in_a_pause_takes_the_nearest_turn() -> None:
    words = (_word(5.0, 5.2, " um"), _word(7.7, 7.9, " so"))
    segment = Segment(5.0, 7.9, " um so", words=words)
    result = assign_speakers(_transcript(segment), _turns((0.0, 4.8, A), (8.0, 9.0, B)))
    assert [w.speaker for s in result.segments for w in s.words] == [A, B]
    assert [s.speaker for s in result.segments] == [A, B]


def test_overlapping_turns_of_one_speaker_add_up() -> None:
    # Hub pipelines may return overlapping turns: A has two short ones inside the word,
    # B one longer than either but shorter than their sum.
    words = (_word(0.0, 1.0, " word"),)
    segment = Segment(0.0, 1.0, " word", words=words)
    turns = _turns((0.0, 0.3, A), (0.3, 0.7, B), (0.65, 1.0, A))
    assert assign_speakers(_transcript(segment), turns).segments[0].speaker == A


def test_segments_without_words_are_labelled_whole_by_largest_overlap() -> None:
    first = Segment(0.0, 3.0, " First part.")
    second = Segment(3.0, 6.0, " Second part.")  # 1 s of A, 2 s of B: B, not split
    result = assign_speakers(_transcript(first, second), _turns((0.0, 4.0, A), (4.0, 6.0, B)))
    assert [(s.speaker, s.text) for s in result.segments] == [(A, " First part."), (B, " Second part.")]
    assert result.speakers == (A, B)


def test_no_turns_leaves_the_transcript_without_speakers() -> None:
    segment = Segment(0.0, 1.0, " Nothing.", words=(_word(0.0, 1.0, " Nothing."),))
    result = assign_speakers(_transcript(segment), [])
    assert result.speakers == ()
    assert result.segments[0].speaker is None
    assert result.segments[0].words[0].speaker is None


def test_one_speaker_gives_one_label_and_keeps_segments_whole() -> None:
    segments = (
        Segment(0.0, 2.0, " One.", tokens=(5,), words=(_word(0.1, 1.0, " One."),)),
        Segment(2.0, 4.0, " Two.", tokens=(6,), words=(_word(2.1, 3.0, " Two."),)),
    )
    result = assign_speakers(_transcript(*segments), _turns((0.0, 4.0, A)))
    assert result.speakers == (A,)
    assert [s.tokens for s in result.segments] == [(5,), (6,)]
    assert all(s.speaker == A for s in result.segments)


def test_input_transcript_is_not_changed() -> None:
    segment = Segment(0.0, 1.0, " Hi.", words=(_word(0.0, 1.0, " Hi."),))
    original = _transcript(segment)
    assign_speakers(original, _turns((0.0, 1.0, B)))
    assert original.segments[0].speaker is None and original.speakers == ()


def test_labels_reach_every_output_format() -> None:
    words = (_word(0.0, 1.0, " Hello."), _word(2.0, 3.0, " Hi."))
    segment = Segment(0.0, 3.0, " Hello. Hi.", words=words)
    result = assign_speakers(_transcript(segment), _turns((0.0, 1.5, A), (1.5, 3.0, B)))

    data = json.loads(render(result, "json"))
    assert [c["speaker"] for c in data["chunks"]] == [A, B]
    assert [t["speaker"] for t in data["speakers"]] == [A, B]
    assert [w["speaker"] for s in data["segments"] for w in s["words"]] == [A, B]
    assert "[SPEAKER_00] Hello." in render(result, "srt")
    assert "<v SPEAKER_01>Hi.</v>" in render(result, "vtt")
    assert render(result, "txt") == "[SPEAKER_00] Hello.\n[SPEAKER_01] Hi.\n"
