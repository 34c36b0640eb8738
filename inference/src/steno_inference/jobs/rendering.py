"""Outputs rendered from a commit record's transcript, never from a live ``Transcript``.

A file's commit record holds its transcript as JSON (``formats.to_json_dict``).
Every writer of that file's outputs — the worker that won the record, a
restarted worker finishing the job, a racing worker that lost — renders them
from the record through :func:`transcript_from_json_dict` and
:func:`render_outputs`, so they all write the very same bytes. That is what
makes rewriting an output safe at any time.

The JSON keeps everything the renderers use (times in whole milliseconds,
texts, speakers, words); token ids and the source's display name are not
in it and no output shows them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from steno_inference.formats import render
from steno_inference.options import OutputFormat
from steno_inference.transcript import Segment, Transcript, Word


class TranscriptJsonError(ValueError):
    """A record's transcript is not in the shape ``to_json_dict`` writes."""


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan  # written as null because it was not finite
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranscriptJsonError(f"{where} must be a number, not {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TranscriptJsonError(f"{where} must be a string, not {value!r}")
    return value


def _speaker(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def transcript_from_json_dict(data: Any) -> Transcript:
    """The inverse of ``formats.to_json_dict`` for everything the renderers read."""
    if not isinstance(data, dict):
        raise TranscriptJsonError("a transcript must be a JSON object")
    segments: list[Segment] = []
    for i, seg in enumerate(data.get("segments", [])):
        where = f"segments[{i}]"
        words = tuple(
            Word(
                start_s=_number(word.get("start"), f"{where}.words[{j}].start"),
                end_s=_number(word.get("end"), f"{where}.words[{j}].end"),
                text=_text(word.get("word"), f"{where}.words[{j}].word"),
                probability=_number(word.get("probability"), f"{where}.words[{j}].probability"),
                speaker=_speaker(word.get("speaker"), f"{where}.words[{j}].speaker"),
            )
            for j, word in enumerate(seg.get("words", []))
        )
        segments.append(
            Segment(
                start_s=_number(seg.get("start"), f"{where}.start"),
                end_s=_number(seg.get("end"), f"{where}.end"),
                text=_text(seg.get("text"), f"{where}.text"),
                avg_logprob=_number(seg.get("avg_logprob"), f"{where}.avg_logprob"),
                no_speech_prob=_number(seg.get("no_speech_prob"), f"{where}.no_speech_prob"),
                words=words,
                speaker=_speaker(seg.get("speaker"), f"{where}.speaker"),
            )
        )
    labels = data.get("speaker_labels", [])
    extra = data.get("extra", {})
    if not isinstance(labels, list) or not isinstance(extra, dict):
        raise TranscriptJsonError("speaker_labels must be a list and extra an object")
    return Transcript(
        text=_text(data.get("text"), "text"),
        segments=tuple(segments),
        language=_text(data.get("language"), "language"),
        duration_s=_number(data.get("duration_s"), "duration_s"),
        speakers=tuple(_text(label, "speaker_labels[]") for label in labels),
        model=_text(data.get("model", ""), "model"),
        extra={str(k): str(v) for k, v in extra.items()},
    )


def render_outputs(
    transcript_json: dict[str, Any], formats: Sequence[OutputFormat]
) -> list[tuple[OutputFormat, bytes]]:
    """Each requested format's bytes (UTF-8), rendered from the record's transcript."""
    transcript = transcript_from_json_dict(transcript_json)
    return [(fmt, render(transcript, fmt).encode("utf-8")) for fmt in dict.fromkeys(formats)]
