"""Renderers from a ``Transcript`` to the output formats, and the atomic writer of them.

One ``Transcript`` becomes ``json``, ``srt``, ``vtt``, ``txt`` or ``tsv`` text; nothing
here knows where the transcript came from or where the text goes next.

Design points:

* **One rounding rule.** Every time in every format goes through ``milliseconds``:
  the number as Python prints it, rounded half-up to whole milliseconds. So
  ``59.9995`` becomes ``00:01:00,000`` in SRT, ``60.0`` in JSON and ``60000`` in TSV,
  and the formats never disagree by a millisecond. Negative times clamp to 0;
  non-finite times are a bug upstream and raise ``ValueError``.
* **JSON stays readable by insanely-fast-whisper users.** Its three keys keep their
  shapes: ``text``; ``chunks`` as ``[{"timestamp": [start, end], "text", "speaker"?}]``
  (one chunk per segment); and ``speakers`` as its list of speaker turns
  ``[{"speaker", "text", "timestamp": [start, end]}]`` (empty without diarization).
  steno adds ``language``, ``duration_s``, ``model``, ``speaker_labels`` (the distinct
  labels) and ``segments`` with ``words``, in the field names of openai-whisper's JSON.
* **Cue text is sanitized**: every run of whitespace, line breaks included, becomes
  one space (a blank line would end an SRT/VTT cue, a tab or newline would break a
  TSV row), ``-->`` cannot appear in SRT text, and VTT text escapes ``&``, ``<``, ``>``.
  Segments whose text is empty after that get no cue.
* **Speakers**: SRT and TXT prefix ``[SPEAKER_00] ``; VTT uses its voice span
  ``<v SPEAKER_00>``; TSV appends a ``speaker`` column after openai-whisper's three, so
  readers that pick columns by position keep working.
* **Writes are atomic**: each file is written to a temporary name in the target
  directory, flushed to disk, then renamed over ``<stem>.<ext>``; a crash leaves
  either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from steno_api import plan as plan_format

from steno_inference.options import OUTPUT_FORMATS, OutputFormat
from steno_inference.transcript import Segment, Transcript

EXTENSIONS: dict[OutputFormat, str] = {fmt: fmt for fmt in OUTPUT_FORMATS}
TIME_DECIMALS = 3  # JSON times carry whole milliseconds, like SRT/VTT/TSV
MS_PER_S = 1000
MS_PER_HOUR = 3_600_000  # 60 * 60 * MS_PER_S
MS_PER_MINUTE = 60_000  # 60 * MS_PER_S
FALLBACK_STEM = plan_format.FALLBACK_STEM  # for an input whose name yields no usable stem

_WHITESPACE_RUN = re.compile(r"\s+")
_SRT_ARROW = re.compile(r"-{2,}>")  # "-->" and longer runs would read as a timing line


def milliseconds(seconds: float) -> int:
    """Whole milliseconds of ``seconds``, rounded half-up on its printed decimal value.

    ``repr`` gives the shortest decimal that reads back as the same float, so the
    rounding acts on the number a person sees (``59.9995`` → 60000), not on its
    binary approximation (which is a hair below and would round down).
    """
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError(f"time must be a finite number of seconds, not {value!r}")
    if value <= 0.0:
        return 0
    exact = Decimal(repr(value)) * MS_PER_S
    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


def round_time_s(seconds: float) -> float:
    """``seconds`` rounded as every format rounds it (whole milliseconds)."""
    return milliseconds(seconds) / MS_PER_S


def format_timestamp(seconds: float, *, decimal_marker: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with ``decimal_marker="."``, ``HH:MM:SS.mmm`` (VTT).

    Hours always have at least two digits and grow past 99 rather than wrap.
    """
    total_ms = milliseconds(seconds)
    hours, rest_ms = divmod(total_ms, MS_PER_HOUR)
    minutes, rest_ms = divmod(rest_ms, MS_PER_MINUTE)
    secs, ms = divmod(rest_ms, MS_PER_S)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def clean_text(text: str) -> str:
    """One line of text: every whitespace run (line breaks, tabs) becomes one space."""
    return _WHITESPACE_RUN.sub(" ", text).strip()


def _srt_text(text: str) -> str:
    return _SRT_ARROW.sub("->", clean_text(text))


def _vtt_escape(text: str) -> str:
    # WebVTT parses cue text for tags and entities; escaping also rules out "-->".
    return clean_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finite_or_none(value: float) -> float | None:
    # json.dumps would write NaN/Infinity, which strict JSON readers reject.
    return value if math.isfinite(value) else None


def _speaker_turns(segments: Iterable[Segment]) -> list[dict[str, Any]]:
    """Consecutive segments of one speaker merged, as insanely-fast-whisper lists them."""
    turns: list[dict[str, Any]] = []
    current: list[Segment] = []

    def close() -> None:
        if current:
            turns.append(
                {
                    "speaker": current[0].speaker,
                    "text": "".join(seg.text for seg in current).strip(),
                    "timestamp": [
                        round_time_s(current[0].start_s),
                        round_time_s(current[-1].end_s),
                    ],
                }
            )
            current.clear()

    for segment in segments:
        if segment.speaker is None or (current and current[0].speaker != segment.speaker):
            close()
        if segment.speaker is not None:
            current.append(segment)
    close()
    return turns


def to_json_dict(t: Transcript) -> dict[str, Any]:
    """The transcript as plain JSON-ready data (see the module docstring for the shape)."""
    chunks: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    for index, seg in enumerate(t.segments):
        start, end = round_time_s(seg.start_s), round_time_s(seg.end_s)
        chunk: dict[str, Any] = {"timestamp": [start, end], "text": seg.text}
        if seg.speaker is not None:
            chunk["speaker"] = seg.speaker
        chunks.append(chunk)

        words: list[dict[str, Any]] = []
        for word in seg.words:
            entry: dict[str, Any] = {
                "start": round_time_s(word.start_s),
                "end": round_time_s(word.end_s),
                "word": word.text,
                "probability": _finite_or_none(word.probability),
            }
            if word.speaker is not None:
                entry["speaker"] = word.speaker
            words.append(entry)
        segment: dict[str, Any] = {
            "id": index,
            "start": start,
            "end": end,
            "text": seg.text,
            "avg_logprob": _finite_or_none(seg.avg_logprob),
            "no_speech_prob": _finite_or_none(seg.no_speech_prob),
        }
        if seg.speaker is not None:
            segment["speaker"] = seg.speaker
        segment["words"] = words
        segments.append(segment)

    labels = list(t.speakers)
    for seg in t.segments:  # labels used by segments but missing from t.speakers
        if seg.speaker is not None and seg.speaker not in labels:
            labels.append(seg.speaker)

    result: dict[str, Any] = {
        "text": t.text,
        "chunks": chunks,
        "speakers": _speaker_turns(t.segments),
        "language": t.language,
        "duration_s": round_time_s(t.duration_s),
        "model": t.model,
        "speaker_labels": labels,
        "segments": segments,
    }
    if t.extra:
        result["extra"] = dict(t.extra)
    return result


def _render_json(t: Transcript) -> str:
    return json.dumps(to_json_dict(t), ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def _render_srt(t: Transcript) -> str:
    cues: list[str] = []
    for seg in t.segments:
        text = _srt_text(seg.text)
        if not text:
            continue
        if seg.speaker is not None:
            text = f"[{_srt_text(seg.speaker)}] {text}"
        timing = f"{format_timestamp(seg.start_s)} --> {format_timestamp(seg.end_s)}"
        cues.append(f"{len(cues) + 1}\n{timing}\n{text}\n")
    return "\n".join(cues)


def _render_vtt(t: Transcript) -> str:
    cues: list[str] = []
    for seg in t.segments:
        text = _vtt_escape(seg.text)
        if not text:
            continue
        if seg.speaker is not None:
            text = f"<v {_vtt_escape(seg.speaker)}>{text}</v>"
        start = format_timestamp(seg.start_s, decimal_marker=".")
        end = format_timestamp(seg.end_s, decimal_marker=".")
        cues.append(f"{start} --> {end}\n{text}\n")
    return "\n".join(["WEBVTT\n", *cues])


def _render_txt(t: Transcript) -> str:
    lines: list[str] = []
    for seg in t.segments:
        text = clean_text(seg.text)
        if not text:
            continue
        if seg.speaker is not None:
            text = f"[{clean_text(seg.speaker)}] {text}"
        lines.append(text + "\n")
    return "".join(lines)


def _render_tsv(t: Transcript) -> str:
    with_speaker = bool(t.speakers) or any(seg.speaker is not None for seg in t.segments)
    rows = ["start\tend\ttext\tspeaker\n" if with_speaker else "start\tend\ttext\n"]
    for seg in t.segments:
        text = clean_text(seg.text)
        if not text:
            continue
        row = f"{milliseconds(seg.start_s)}\t{milliseconds(seg.end_s)}\t{text}"
        if with_speaker:
            row += "\t" + clean_text(seg.speaker or "")
        rows.append(row + "\n")
    return "".join(rows)


def render(t: Transcript, fmt: OutputFormat) -> str:
    """The transcript as text in ``fmt``; an unknown format raises ``ValueError``."""
    if fmt == "json":
        return _render_json(t)
    if fmt == "srt":
        return _render_srt(t)
    if fmt == "vtt":
        return _render_vtt(t)
    if fmt == "txt":
        return _render_txt(t)
    if fmt == "tsv":
        return _render_tsv(t)
    raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}")


def _check_stem(stem: str) -> None:
    # Output names come from the job or unique_stems(), never from a path a user typed;
    # refuse anything that could step out of output_dir or hide as a dotfile.
    if not stem or stem in {".", ".."} or "/" in stem or "\\" in stem or "\0" in stem:
        raise ValueError(f"output stem must be a plain file name, not {stem!r}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not reach disk before the bytes
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_outputs(
    t: Transcript,
    formats: Sequence[OutputFormat],
    output_dir: str | os.PathLike[str],
    stem: str,
) -> list[Path]:
    """Write ``<stem>.<ext>`` for each format into ``output_dir``; return the paths in order.

    Every format is rendered before the first file is written, so a rendering error
    leaves no partial set of outputs behind.
    """
    _check_stem(stem)
    directory = Path(output_dir)
    unique: list[OutputFormat] = list(dict.fromkeys(formats))
    rendered = [(fmt, render(t, fmt).encode("utf-8")) for fmt in unique]
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fmt, data in rendered:
        path = directory / f"{stem}.{EXTENSIONS[fmt]}"
        write_atomic(path, data)
        paths.append(path)
    return paths


def unique_stems(sources: Sequence[str | os.PathLike[str]]) -> list[str]:
    """One output stem per source, distinct even when basenames repeat.

    ``["a/x.wav", "b/x.wav"]`` → ``["x", "x-1"]``; suffixes follow sorted order
    and stems compare case-insensitively. Job plans name outputs by the same
    rule, so the rule itself is :func:`steno_api.plan.unique_stems`, which
    the operator shares; here it also takes paths.
    """
    return plan_format.unique_stems([os.fspath(source) for source in sources])
