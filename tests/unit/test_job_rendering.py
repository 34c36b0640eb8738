"""Outputs rendered from a record's transcript JSON equal those of the live transcript."""

from __future__ import annotations

import math

import pytest
from steno_inference.formats import render, to_json_dict
from steno_inference.jobs.rendering import (
    TranscriptJsonError,
    render_outputs,
    transcript_from_json_dict,
)
from steno_inference.options import OUTPUT_FORMATS
from steno_inference.transcript import Segment, Transcript, Word

pytestmark = pytest.mark.unit


def _transcript(speakers: bool) -> Transcript:
    who = ("SPEAKER_00", "SPEAKER_01") if speakers else (None, None)
    return Transcript(
        text="Hello there. General <Kenobi> & co --> yes",
        segments=(
            Segment(0.0, 1.2345, " Hello there.", tokens=(1, 2), avg_logprob=-0.25,
                    no_speech_prob=0.01,
                    words=(Word(0.0, 0.5, " Hello", 0.9, who[0]),
                           Word(0.5, 1.2345, " there.", math.nan, who[0])),
                    speaker=who[0]),
            Segment(59.9995, 61.0, " General\n<Kenobi> & co --> yes", avg_logprob=math.nan,
                    no_speech_prob=0.5, speaker=who[1]),
            Segment(62.0, 62.5, "   ", speaker=who[1]),
        ),
        language="en",
        duration_s=62.70051,
        speakers=tuple(s for s in who if s is not None),
        model="tiny.en",
        source="s3://bucket/x.wav",
        extra={"note": "kept"},
    )


@pytest.mark.parametrize("speakers", [False, True])
def test_every_format_renders_the_same_from_the_json(speakers: bool) -> None:
    live = _transcript(speakers)
    data = to_json_dict(live)
    rebuilt = transcript_from_json_dict(data)
    assert to_json_dict(rebuilt) == data
    for fmt, rendered in render_outputs(data, OUTPUT_FORMATS):
        assert rendered == render(live, fmt).encode("utf-8"), fmt


def test_formats_are_rendered_once_each_in_order() -> None:
    data = to_json_dict(_transcript(False))
    assert [fmt for fmt, _ in render_outputs(data, ["srt", "json", "srt"])] == ["srt", "json"]


def test_malformed_transcripts_are_refused() -> None:
    data = to_json_dict(_transcript(False))
    with pytest.raises(TranscriptJsonError):
        transcript_from_json_dict([])
    with pytest.raises(TranscriptJsonError, match=r"segments\[0\].start"):
        transcript_from_json_dict({**data, "segments": [{**data["segments"][0], "start": "0"}]})
    with pytest.raises(TranscriptJsonError, match="text"):
        transcript_from_json_dict({**data, "text": 5})
