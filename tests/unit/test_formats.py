"""Renderers and writers of steno_inference.formats, checked against exact expected text."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from steno_inference.formats import (
    format_timestamp,
    milliseconds,
    render,
    to_json_dict,
    unique_stems,
    write_outputs,
)
from steno_inference.options import OUTPUT_FORMATS
from steno_inference.transcript import Segment, Transcript, Word, join_segment_text

pytestmark = pytest.mark.unit


def _transcript(segments: list[Segment], speakers: tuple[str, ...] = ()) -> Transcript:
    return Transcript(
        text=join_segment_text(segments),
        segments=tuple(segments),
        language="en",
        duration_s=3725.25,
        speakers=speakers,
        model="tiny.en",
        source="talk.wav",
    )


@pytest.fixture
def plain() -> Transcript:
    return _transcript(
        [
            Segment(0.0, 2.5, " Hello there.", avg_logprob=-0.25, no_speech_prob=0.01),
            Segment(59.9995, 61.0, " General Kenobi.", avg_logprob=-0.5, no_speech_prob=0.02),
            Segment(3661.5, 3725.25, " Ünïcode — fine.", avg_logprob=-0.1),
        ]
    )


@pytest.fixture
def diarized() -> Transcript:
    w1 = Word(0.0, 0.4, " Hi", 0.9, speaker="SPEAKER_00")
    w2 = Word(0.4, 1.0, " Bob.", 0.8, speaker="SPEAKER_00")
    return _transcript(
        [
            Segment(0.0, 1.0, " Hi Bob.", words=(w1, w2), speaker="SPEAKER_00"),
            Segment(1.0, 2.0, " How are", speaker="SPEAKER_00"),
            Segment(2.0, 3.0, " you?", speaker="SPEAKER_01"),
            Segment(3.5, 4.0, " Fine.", speaker="SPEAKER_00"),
        ],
        speakers=("SPEAKER_00", "SPEAKER_01"),
    )


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("seconds", "srt"),
    [
        (0.0, "00:00:00,000"),
        (0.0004, "00:00:00,000"),
        (0.0005, "00:00:00,001"),  # half-up, not banker's rounding
        (1.0005, "00:00:01,001"),  # 1.0005 * 1000 is 1000.4999... in binary
        (59.9994, "00:00:59,999"),
        (59.9995, "00:01:00,000"),  # the carry runs through seconds into minutes
        (3599.9995, "01:00:00,000"),  # ...and through minutes into hours
        (3661.5, "01:01:01,500"),
        (360000.0, "100:00:00,000"),  # hours grow past two digits, never wrap
        (-0.3, "00:00:00,000"),  # negative times clamp to zero
    ],
)
def test_format_timestamp(seconds: float, srt: str) -> None:
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, decimal_marker=".") == srt.replace(",", ".")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_times_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        milliseconds(bad)


def test_json_and_tsv_round_like_srt(plain: Transcript) -> None:
    data = to_json_dict(plain)
    assert data["segments"][1]["start"] == 60.0
    assert data["chunks"][1]["timestamp"] == [60.0, 61.0]
    tsv_rows = render(plain, "tsv").splitlines()
    assert tsv_rows[2].split("\t")[:2] == ["60000", "61000"]


# ---------------------------------------------------------------- SRT / VTT / TXT / TSV


def test_srt_exact(plain: Transcript) -> None:
    assert render(plain, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n"
        "\n"
        "2\n00:01:00,000 --> 00:01:01,000\nGeneral Kenobi.\n"
        "\n"
        "3\n01:01:01,500 --> 01:02:05,250\nÜnïcode — fine.\n"
    )


def test_vtt_exact(plain: Transcript) -> None:
    assert render(plain, "vtt") == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n"
        "\n"
        "00:01:00.000 --> 00:01:01.000\nGeneral Kenobi.\n"
        "\n"
        "01:01:01.500 --> 01:02:05.250\nÜnïcode — fine.\n"
    )


def test_txt_and_tsv_exact(plain: Transcript) -> None:
    assert render(plain, "txt") == "Hello there.\nGeneral Kenobi.\nÜnïcode — fine.\n"
    assert render(plain, "tsv") == (
        "start\tend\ttext\n"
        "0\t2500\tHello there.\n"
        "60000\t61000\tGeneral Kenobi.\n"
        "3661500\t3725250\tÜnïcode — fine.\n"
    )


def test_speaker_labels(diarized: Transcript) -> None:
    srt = render(diarized, "srt")
    assert "1\n00:00:00,000 --> 00:00:01,000\n[SPEAKER_00] Hi Bob.\n" in srt
    assert "3\n00:00:02,000 --> 00:00:03,000\n[SPEAKER_01] you?\n" in srt
    assert "00:00:02.000 --> 00:00:03.000\n<v SPEAKER_01>you?</v>\n" in render(diarized, "vtt")
    assert render(diarized, "txt").splitlines() == [
        "[SPEAKER_00] Hi Bob.",
        "[SPEAKER_00] How are",
        "[SPEAKER_01] you?",
        "[SPEAKER_00] Fine.",
    ]
    tsv = render(diarized, "tsv").splitlines()
    assert tsv[0] == "start\tend\ttext\tspeaker"
    assert tsv[3] == "2000\t3000\tyou?\tSPEAKER_01"


def test_tsv_speaker_column_blank_for_unlabelled_segment() -> None:
    t = _transcript([Segment(0, 1, " a", speaker="SPEAKER_00"), Segment(1, 2, " b")])
    assert render(t, "tsv").splitlines()[1:] == ["0\t1000\ta\tSPEAKER_00", "1000\t2000\tb\t"]
    assert render(t, "srt").endswith("2\n00:00:01,000 --> 00:00:02,000\nb\n")


def _srt_cues(text: str) -> list[list[str]]:
    return [block.split("\n") for block in text.rstrip("\n").split("\n\n")]


def test_cue_text_is_sanitized() -> None:
    nasty = " one --> two\n\nthree\r\n\tfour ---> five  "
    t = _transcript(
        [Segment(0, 1, nasty, speaker="A\nB"), Segment(1, 2, " <b>&amp</b>")],
    )
    srt = render(t, "srt")
    cues = _srt_cues(srt)
    assert len(cues) == 2  # no blank line inside a cue split it
    assert cues[0] == ["1", "00:00:00,000 --> 00:00:01,000", "[A B] one -> two three four -> five"]
    assert srt.count("-->") == 2  # only the two timing lines

    vtt = render(t, "vtt")
    body = vtt.split("\n\n")
    assert body[0] == "WEBVTT"
    assert body[1] == (
        "00:00:00.000 --> 00:00:01.000\n<v A B>one --&gt; two three four ---&gt; five</v>"
    )
    assert body[2] == "00:00:01.000 --> 00:00:02.000\n&lt;b&gt;&amp;amp&lt;/b&gt;\n"
    assert vtt.count("-->") == 2

    tsv_rows = render(t, "tsv").splitlines()
    assert len(tsv_rows) == 3
    assert all(row.count("\t") == 3 for row in tsv_rows)
    assert render(t, "txt").count("\n") == 2


def test_empty_segments_get_no_cue_and_numbering_stays_consecutive() -> None:
    t = _transcript(
        [Segment(0, 1, " first"), Segment(1, 2, "  \n "), Segment(2, 3, " third")],
    )
    cues = _srt_cues(render(t, "srt"))
    assert [cue[0] for cue in cues] == ["1", "2"]
    assert cues[1][2] == "third"
    assert render(t, "txt") == "first\nthird\n"
    assert len(render(t, "tsv").splitlines()) == 3


def test_no_segments() -> None:
    t = _transcript([])
    assert render(t, "srt") == ""
    assert render(t, "vtt") == "WEBVTT\n"
    assert render(t, "txt") == ""
    assert render(t, "tsv") == "start\tend\ttext\n"
    assert json.loads(render(t, "json"))["chunks"] == []


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        render(_transcript([]), "docx")  # type: ignore[arg-type]


# ---------------------------------------------------------------- JSON


def test_json_shape_for_insanely_fast_whisper_readers(diarized: Transcript) -> None:
    data = json.loads(render(diarized, "json"))
    # The three keys insanely-fast-whisper writes, with its shapes.
    assert data["text"] == "Hi Bob. How are you? Fine."
    assert data["chunks"][0] == {
        "timestamp": [0.0, 1.0],
        "text": " Hi Bob.",
        "speaker": "SPEAKER_00",
    }
    assert len(data["chunks"]) == len(diarized.segments)
    assert data["speakers"] == [
        {"speaker": "SPEAKER_00", "text": "Hi Bob. How are", "timestamp": [0.0, 2.0]},
        {"speaker": "SPEAKER_01", "text": "you?", "timestamp": [2.0, 3.0]},
        {"speaker": "SPEAKER_00", "text": "Fine.", "timestamp": [3.5, 4.0]},
    ]
    # steno's additions.
    assert data["language"] == "en"
    assert data["duration_s"] == 3725.25
    assert data["model"] == "tiny.en"
    assert data["speaker_labels"] == ["SPEAKER_00", "SPEAKER_01"]
    first = data["segments"][0]
    assert set(first) == {
        "id",
        "start",
        "end",
        "text",
        "avg_logprob",
        "no_speech_prob",
        "speaker",
        "words",
    }
    assert first["words"] == [
        {"start": 0.0, "end": 0.4, "word": " Hi", "probability": 0.9, "speaker": "SPEAKER_00"},
        {"start": 0.4, "end": 1.0, "word": " Bob.", "probability": 0.8, "speaker": "SPEAKER_00"},
    ]
    assert [s["id"] for s in data["segments"]] == [0, 1, 2, 3]
    assert "source" not in data  # a display name, possibly a local path: not published


def test_json_without_diarization(plain: Transcript) -> None:
    data = to_json_dict(plain)
    assert data["speakers"] == []
    assert data["speaker_labels"] == []
    assert all("speaker" not in chunk for chunk in data["chunks"])
    assert all("speaker" not in seg and seg["words"] == [] for seg in data["segments"])
    assert data["segments"][2]["end"] == 3725.25


def test_json_text_is_utf8_indented_and_strict() -> None:
    t = _transcript(
        [Segment(0.12345, 1.0, " Grüße", avg_logprob=-math.inf, no_speech_prob=math.nan)]
    )
    text = render(t, "json")
    assert "Grüße" in text  # ensure_ascii=False
    assert '\n  "text": "Grüße",' in text  # indent=2
    data = json.loads(text)  # strict: no NaN/Infinity tokens
    assert data["segments"][0]["avg_logprob"] is None
    assert data["segments"][0]["no_speech_prob"] is None
    assert data["segments"][0]["start"] == 0.123


# ---------------------------------------------------------------- writing


def test_write_outputs_all_formats(tmp_path: Path, diarized: Transcript) -> None:
    out = tmp_path / "new" / "dir"
    paths = write_outputs(diarized, OUTPUT_FORMATS, out, "talk")
    assert [p.name for p in paths] == [f"talk.{fmt}" for fmt in OUTPUT_FORMATS]
    for path, fmt in zip(paths, OUTPUT_FORMATS, strict=True):
        assert path.read_bytes() == render(diarized, fmt).encode("utf-8")
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)  # no temp files left


def test_write_outputs_deduplicates_formats(tmp_path: Path, plain: Transcript) -> None:
    assert [p.name for p in write_outputs(plain, ["srt", "srt"], tmp_path, "x")] == ["x.srt"]


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, plain: Transcript, diarized: Transcript, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_outputs(plain, ["srt", "json"], tmp_path, "talk")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    calls = 0

    def crash_on_second_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash_on_second_fsync)  # as formats sees it
    with pytest.raises(OSError, match="disk full"):
        write_outputs(diarized, ["srt", "json"], tmp_path, "talk")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(after) == {"talk.srt", "talk.json"}  # no ".talk.json.*.tmp" left behind
    assert after["talk.srt"] == render(diarized, "srt").encode()  # the first one completed
    assert after["talk.json"] == before["talk.json"]  # the second one is old and whole


def test_render_error_writes_nothing(tmp_path: Path) -> None:
    bad = _transcript([Segment(0.0, math.nan, " x")])
    with pytest.raises(ValueError, match="finite"):
        write_outputs(bad, ["txt", "srt"], tmp_path, "talk")  # txt renders; srt does not
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stem", ["", ".", "..", "a/b", "..\\x", "a\0b"])
def test_write_outputs_refuses_path_like_stems(
    tmp_path: Path, plain: Transcript, stem: str
) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        write_outputs(plain, ["txt"], tmp_path, stem)


# ---------------------------------------------------------------- stems


def test_unique_stems_same_basename() -> None:
    assert unique_stems(["a/x.wav", "b/x.wav"]) == ["x", "x-1"]
    assert unique_stems(["b/x.wav", "a/x.wav"]) == ["x-1", "x"]  # by path, not by list order
    assert unique_stems([Path("a/x.wav"), "b/x.mp3", "c/x.flac"]) == ["x", "x-1", "x-2"]


def test_unique_stems_respects_existing_suffix_and_case() -> None:
    assert unique_stems(["a/x.wav", "b/x.wav", "c/x-1.wav"]) == ["x", "x-2", "x-1"]
    assert unique_stems(["a/Talk.wav", "b/talk.wav"]) == ["Talk", "talk-1"]


def test_unique_stems_odd_names() -> None:
    assert unique_stems(["s3://bucket/dir/talk.mp3", "/data/talk.tar.gz", ".hidden", "dir/"]) == [
        "talk",
        "talk.tar",
        "hidden",
        "dir",
    ]
    assert unique_stems(["/"]) == ["audio"]
    assert unique_stems([]) == []
