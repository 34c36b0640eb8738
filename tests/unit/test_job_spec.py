"""The job spec: strict parsing with errors that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from steno_inference.jobs.spec import JobSpecError, load_spec, parse_spec, spec_from_env
from steno_inference.storage.uri import S3Uri

pytestmark = pytest.mark.unit


def _spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "jobId": "0b6e6a4e-1f2c-4d1e-9d61-4f0b1b1f2a3c",
        "input": {"prefix": "s3://audio-in/2024/", "suffixes": [".wav", ".MP3", ".wav"]},
        "output": {"uri": "s3://transcripts/2024", "formats": ["json", "SRT", "json"]},
        "model": "tiny.en",
        "task": "transcribe",
        "language": "en",
        "timestamps": "word",
        "diarization": {"enabled": False},
        "parallelism": 4,
    }
    spec.update(changes)
    return spec


def test_a_full_spec() -> None:
    spec = parse_spec(_spec())
    assert spec.input.prefix == S3Uri("audio-in", "2024/")
    assert spec.input.suffixes == (".wav", ".MP3")  # repeats dropped, case-insensitively
    assert spec.output == S3Uri("transcripts", "2024/")
    assert spec.formats == ("json", "srt")
    assert spec.options.timestamps == "word"
    assert spec.options.language == "en"
    assert spec.parallelism == 4
    # The JSON shape round-trips.
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec


def test_uris_and_defaults() -> None:
    spec = load_spec(json.dumps({
        "jobId": "job-1", "input": {"uris": ["s3://audio-in/a.wav", "s3://audio-in/b/c.flac"]},
        "output": {"uri": "s3://out-bucket/"},
    }))
    assert spec.input.uris == (S3Uri("audio-in", "a.wav"), S3Uri("audio-in", "b/c.flac"))
    assert spec.formats == ("json",)
    assert spec.model == "tiny.en"
    assert spec.parallelism == 1
    assert spec.options.task == "transcribe"
    assert spec_from_env({"STENO_JOB_SPEC": json.dumps(spec.to_dict())}) == spec


@pytest.mark.parametrize(("changes", "problem"), [
    ({"jobId": ""}, "jobId"),
    ({"jobId": "has space"}, "jobId"),
    ({"input": {"prefix": "s3://a-b/x", "uris": ["s3://a-b/y.wav"]}}, "exactly one of"),
    ({"input": {}}, "exactly one of"),
    ({"input": {"uris": []}}, "non-empty list"),
    ({"input": {"uris": ["s3://audio-in/folder/"]}}, "names a prefix"),
    ({"input": {"uris": ["https://x/y.wav"]}}, r"input.uris\[0\]"),
    ({"input": {"uris": ["s3://a-b/x.wav"], "suffixes": [".wav"]}}, "needs input.prefix"),
    ({"input": {"prefix": "s3://transcripts/2024/raw/"}}, "lies inside output.uri"),
    ({"input": {"prefix": "s3://audio-in/", "suffix": ".wav"}}, "unknown field"),
    ({"output": {"uri": "s3://out-bucket/a/../b"}}, "output.uri"),
    ({"output": {"uri": "s3://out-bucket/", "formats": ["docx"]}}, "unknown format 'docx'"),
    ({"output": {"uri": "s3://out-bucket/", "formats": []}}, "output.formats"),
    ({"task": "summarize"}, "task must be one of"),
    ({"timestamps": "char"}, "timestamps must be one of"),
    ({"diarization": {"enabled": "yes"}}, "diarization.enabled"),
    ({"diarization": {"enabled": True, "numSpeakers": 2, "maxSpeakers": 3}}, "excludes"),
    ({"diarization": {"enabled": True, "numSpeakers": 99}}, "between 1 and"),
    ({"parallelism": 0}, "parallelism"),
    ({"parallelism": True}, "parallelism"),
    ({"parallelism": 1001}, "parallelism"),
    ({"gpu": {"count": 1}}, "unknown field"),
])
def test_errors_name_the_field(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(JobSpecError, match=problem):
        parse_spec(_spec(**changes))


def test_not_json_or_not_set() -> None:
    with pytest.raises(JobSpecError, match="not valid JSON"):
        load_spec("{")
    with pytest.raises(JobSpecError, match="must be an object"):
        load_spec("[]")
    with pytest.raises(JobSpecError, match="STENO_JOB_SPEC is not set"):
        spec_from_env({})
