"""The operator's spec model: defaults, every rule, and agreement with the worker's parser."""

from __future__ import annotations

from typing import Any

import pytest
from steno_inference.jobs.spec import parse_spec as worker_parse_spec
from steno_operator import spec as s
from steno_operator.planning import worker_spec

pytestmark = pytest.mark.unit


def _spec(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"input": {"prefix": "s3://audio/in/"}, "output": {"uri": "s3://results/out/"}}
    base.update(fields)
    return base


def test_defaults() -> None:
    parsed = s.parse_spec(_spec())
    assert parsed.model == s.DEFAULT_MODEL and parsed.task == "transcribe"
    assert parsed.language == "auto" and parsed.timestamps == "segment"
    assert parsed.output.formats == ("json",) and parsed.parallelism == 1
    assert parsed.gpus_per_pod == 1 and not parsed.suspend and not parsed.diarization.enabled
    assert parsed.int8_cross_kv is False and parsed.beam_size == 1
    assert parsed.deterministic is False
    assert parsed.input.suffixes == s.DEFAULT_SUFFIXES
    assert parsed.placement == s.PlacementSpec() and parsed.deadline_seconds is None


def test_an_empty_suffix_list_means_every_object() -> None:
    assert s.parse_spec(_spec(input={"prefix": "s3://a1b/x", "suffixes": []})).input.suffixes == ()


@pytest.mark.parametrize(("fields", "where"), [
    ({"input": {"prefix": "s3://audio/", "uris": ["s3://audio/a.wav"]}}, "input"),
    ({"input": {}}, "input"),
    ({"input": {"uris": []}}, "input.uris"),
    ({"input": {"uris": ["s3://audio/a.wav", "s3://audio/a.wav"]}}, "input.uris"),
    ({"input": {"uris": ["s3://audio/folder/"]}}, "input.uris[0]"),
    ({"input": {"uris": ["https://audio/a.wav"]}}, "input.uris[0]"),
    ({"input": {"uris": ["s3://audio/a.wav"], "suffixes": [".wav"]}}, "input.suffixes"),
    ({"input": {"prefix": "s3://a..b/x/"}}, "input.prefix"),
    ({"input": {"prefix": "s3://results/out/more/"}}, "input.prefix"),
    ({"output": {"uri": "s3://results/../x/"}}, "output.uri"),
    ({"output": {"uri": "s3://results/x/", "formats": ["json", "json"]}}, "output.formats"),
    ({"output": {"uri": "s3://results/x/", "formats": ["docx"]}}, "output.formats[0]"),
    ({"task": "dance"}, "task"),
    ({"model": "tiny.en", "task": "translate"}, "task"),
    ({"model": "tiny.en", "language": "de"}, "language"),
    ({"language": "english"}, "language"),
    ({"model": "bad model"}, "model"),
    ({"timestamps": "char"}, "timestamps"),
    ({"diarization": {"numSpeakers": 2}}, "diarization.numSpeakers"),
    ({"diarization": {"enabled": True, "numSpeakers": 0}}, "diarization.numSpeakers"),
    ({"diarization": {"enabled": True, "numSpeakers": 33}}, "diarization.numSpeakers"),
    ({"diarization": {"enabled": True, "numSpeakers": 2, "maxSpeakers": 3}}, "diarization.numSpeakers"),
    ({"diarization": {"enabled": True, "minSpeakers": 4, "maxSpeakers": 3}}, "diarization.minSpeakers"),
    ({"parallelism": 0}, "parallelism"),
    ({"parallelism": True}, "parallelism"),
    ({"gpusPerPod": 17}, "gpusPerPod"),
    ({"int8CrossKV": "true"}, "int8CrossKV"),
    ({"int8CrossKV": 1}, "int8CrossKV"),
    ({"deterministic": "yes"}, "deterministic"),
    ({"beamSize": 0}, "beamSize"),
    ({"beamSize": 17}, "beamSize"),
    ({"beamSize": "x"}, "beamSize"),
    ({"beamSize": True}, "beamSize"),
    ({"beamSize": 2.0}, "beamSize"),
    ({"deadlineSeconds": 0}, "deadlineSeconds"),
    ({"placement": {"tolerations": [{"operator": "Equal", "value": "x"}]}}, "placement.tolerations[0].operator"),
    ({"placement": {"tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]}}, "placement.tolerations[0].value"),
    ({"placement": {"priorityClassName": "Not_A_Name"}}, "placement.priorityClassName"),
    ({"storageSecretRef": {}}, "storageSecretRef.name"),
    ({"surprise": 1}, "spec"),
])
def test_bad_specs_name_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(s.SpecError) as caught:
        s.parse_spec(_spec(**fields))
    assert caught.value.field == where


def test_placement_overrides_are_kept_field_by_field() -> None:
    parsed = s.parse_spec(_spec(placement={
        "nodeSelector": {"pool": "h100", "zone": "a"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "asr", "effect": "NoSchedule"}],
        "runtimeClassName": "nvidia",
    }))
    assert parsed.placement.node_selector == (("pool", "h100"), ("zone", "a"))
    assert parsed.placement.tolerations == (s.Toleration("dedicated", "Equal", "asr", "NoSchedule"),)
    assert parsed.placement.runtime_class_name == "nvidia"
    assert parsed.placement.priority_class_name is None


def test_fingerprint_ignores_suspend_only() -> None:
    raw = _spec(model="base")
    assert s.spec_fingerprint(raw) == s.spec_fingerprint({**raw, "suspend": True})
    assert s.spec_fingerprint(raw) != s.spec_fingerprint({**raw, "model": "small"})
    assert s.spec_fingerprint(raw) != s.spec_fingerprint({**raw, "int8CrossKV": True})
    assert s.spec_fingerprint(raw) != s.spec_fingerprint({**raw, "beamSize": 4})
    assert s.spec_fingerprint(raw) != s.spec_fingerprint({**raw, "deterministic": True})


@pytest.mark.parametrize("fields", [
    {},
    {"input": {"uris": ["s3://audio/b.wav", "s3://audio/a.flac"]}, "output": {"uri": "s3://results", "formats": ["srt", "json"]}},
    {"input": {"prefix": "s3://audio", "suffixes": [".WAV"]}, "model": "base", "task": "translate", "language": "de",
     "timestamps": "word", "diarization": {"enabled": True, "minSpeakers": 2, "maxSpeakers": 5}, "parallelism": 7},
    {"int8CrossKV": True},  # an engine flag of the pods: not in the plan's spec
    {"beamSize": 4},  # likewise
    {"deterministic": True},  # likewise
])
def test_the_worker_accepts_what_the_operator_accepts(fields: dict[str, Any]) -> None:
    parsed = s.parse_spec(_spec(**fields))
    document = worker_spec(parsed, "uid-1")
    # The worker parses it and prints it back unchanged: the plan's bytes are stable.
    assert worker_parse_spec(document).to_dict() == document
    assert not {"int8CrossKV", "beamSize", "deterministic"} & set(document)


def test_int8_cross_kv_leaves_the_plan_unchanged() -> None:
    plain, int8 = s.parse_spec(_spec()), s.parse_spec(_spec(int8CrossKV=True))
    assert int8.int8_cross_kv is True
    assert worker_spec(int8, "uid-1") == worker_spec(plain, "uid-1")


def test_deterministic_is_kept_and_leaves_the_plan_unchanged() -> None:
    plain, repeatable = s.parse_spec(_spec()), s.parse_spec(_spec(deterministic=True))
    assert repeatable.deterministic is True
    assert worker_spec(repeatable, "uid-1") == worker_spec(plain, "uid-1")


@pytest.mark.parametrize("value", [0, 17, "x"])
def test_a_bad_beam_size_names_the_field_and_the_limit(value: Any) -> None:
    with pytest.raises(s.SpecError, match=r"^spec\.beamSize: must be (an integer )?from 1 to 16, not "):
        s.parse_spec(_spec(beamSize=value))


def test_beam_size_is_kept_and_leaves_the_plan_unchanged() -> None:
    assert [s.parse_spec(_spec(beamSize=n)).beam_size for n in (1, 4, 16)] == [1, 4, 16]
    plain, beams = s.parse_spec(_spec()), s.parse_spec(_spec(beamSize=4))
    assert worker_spec(beams, "uid-1") == worker_spec(plain, "uid-1")


def test_the_beam_size_limit_is_the_engines() -> None:
    from steno_inference.beam_state import MAX_BEAM_SIZE

    assert s.MAX_BEAM_SIZE == MAX_BEAM_SIZE
