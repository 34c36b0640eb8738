"""`steno transcribe` as a user runs it: many files, every format, clear per-file errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from support.speech import librivox_utterances, normalize_text, read_wav

pytestmark = pytest.mark.integration


def _steno(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steno_inference.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )


def _to_mp3(wav: Path, out: Path) -> None:
    audio = (read_wav(wav) * 32767).astype(np.int16)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("mp3", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_many_files_with_bad_ones(tmp_path: Path, speech_data) -> None:
    good = librivox_utterances()[0]
    mp3 = tmp_path / "clip.mp3"
    _to_mp3(good.path, mp3)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio at all\n")
    run = _steno(
        "transcribe", str(good.path), "missing.wav", "empty.wav", "notes.wav", "clip.mp3",
        "--format", "json,srt,vtt,txt,tsv", "--timestamps", "word", "--device", "cpu",
        "--output-dir", "out", cwd=tmp_path,
    )
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("steno: error:")]
    assert len(errors) == 3, run.stderr
    assert any("missing.wav" in e and "not found" in e for e in errors)
    assert any("empty.wav" in e and "empty" in e for e in errors)
    assert any("notes.wav" in e for e in errors)
    out = tmp_path / "out"
    stem = good.path.stem
    for name in (stem, "clip"):
        for ext in ("json", "srt", "vtt", "txt", "tsv"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    data = json.loads((out / f"{stem}.json").read_text())
    assert normalize_text(data["text"]).startswith("and mister john dashwood")
    assert data["chunks"][0]["timestamp"][0] < data["chunks"][-1]["timestamp"][1]
    assert data["segments"][0]["words"], "word timestamps requested"
    assert (out / f"{stem}.srt").read_text().startswith("1\n00:00:0")
    assert (out / f"{stem}.vtt").read_text().startswith("WEBVTT")
    assert not list(out.glob("missing*")) and not list(out.glob("empty*"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "no-such-model"], "no-such-model"),
        (["--language", "xx"], "unknown language 'xx'"),
        (["--task", "translate"], "English-only"),
        (["--format", "json,docx"], "unknown output format 'docx'"),
        (["--batch-size", "0"], "at least 1"),
        (["--device", "cuda:0"], "no CUDA device"),
        (["--device", "cpu", "--int8-cross-kv"], "need a CUDA device, not cpu"),
    ],
)
def test_bad_options_exit_2_with_one_clear_line(tmp_path: Path, args, needle, speech_data):
    good = librivox_utterances()[0]
    run = _steno("transcribe", str(good.path), *args, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert needle in run.stderr
    assert "Traceback" not in run.stderr
