"""The CRD (charts/steno/crds) and the operator's spec model say the same things."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from steno_operator import spec as s

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts/steno/crds/transcriptionjobs.steno.dev.yaml"
SAMPLE_PATH = ROOT / "operator/samples/transcriptionjob.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def _walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_names_scope_and_subresources(crd: dict[str, Any], version: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{s.PLURAL}.{s.GROUP}"
    assert (crd["spec"]["group"], names["kind"], names["plural"], names["singular"]) == (
        s.GROUP, s.KIND, s.PLURAL, s.SINGULAR)
    assert names["shortNames"] == [s.SHORT_NAME]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["name"] == s.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Progress"] == ".status.progress.percent"
    assert columns["Age"] == ".metadata.creationTimestamp"
    assert columns["Scheduling"] == '.status.conditions[?(@.type=="Scheduled")].reason'


def test_every_field_is_described(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    missing = [path for path, node in _walk(root)
               if path not in ("", ".metadata") and not node.get("description")
               and not path.endswith("{}")]
    assert missing == []


def test_the_schema_is_structural(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    untyped = [path for path, node in _walk(root) if "type" not in node]
    assert untyped == []
    assert not any(node.get("x-kubernetes-preserve-unknown-fields") for _, node in _walk(root))


def test_enums_defaults_and_bounds_match_the_model(spec_schema: dict[str, Any]) -> None:
    assert spec_schema["task"]["enum"] == list(s.TASKS)
    assert spec_schema["task"]["default"] == s.DEFAULT_TASK
    assert spec_schema["timestamps"]["enum"] == list(s.TIMESTAMP_MODES)
    assert spec_schema["timestamps"]["default"] == s.DEFAULT_TIMESTAMPS
    assert spec_schema["language"]["default"] == s.DEFAULT_LANGUAGE
    assert spec_schema["model"]["default"] == s.DEFAULT_MODEL
    assert spec_schema["model"]["maxLength"] == s.MAX_MODEL_CHARS
    formats = spec_schema["output"]["properties"]["formats"]
    assert formats["items"]["enum"] == list(s.OUTPUT_FORMATS)
    assert formats["default"] == list(s.DEFAULT_FORMATS)
    assert (spec_schema["parallelism"]["minimum"], spec_schema["parallelism"]["maximum"],
            spec_schema["parallelism"]["default"]) == (1, s.MAX_PARALLELISM, s.DEFAULT_PARALLELISM)
    assert (spec_schema["gpusPerPod"]["minimum"], spec_schema["gpusPerPod"]["maximum"],
            spec_schema["gpusPerPod"]["default"]) == (1, s.MAX_GPUS_PER_POD, s.DEFAULT_GPUS_PER_POD)
    for key in ("numSpeakers", "minSpeakers", "maxSpeakers"):
        field = spec_schema["diarization"]["properties"][key]
        assert (field["minimum"], field["maximum"]) == (s.MIN_SPEAKERS, s.MAX_SPEAKERS)
    uris = spec_schema["input"]["properties"]["uris"]
    assert uris["maxItems"] == s.MAX_INPUT_URIS and uris["items"]["maxLength"] == s.MAX_URI_CHARS
    suffixes = spec_schema["input"]["properties"]["suffixes"]
    assert (suffixes["maxItems"], suffixes["items"]["maxLength"]) == (s.MAX_SUFFIXES, s.MAX_SUFFIX_CHARS)
    assert spec_schema["deadlineSeconds"]["minimum"] == s.MIN_DEADLINE_SECONDS
    tolerations = spec_schema["placement"]["properties"]["tolerations"]
    assert tolerations["maxItems"] == s.MAX_TOLERATIONS
    assert tolerations["items"]["properties"]["operator"]["enum"] == list(s.TOLERATION_OPERATORS)
    assert tolerations["items"]["properties"]["effect"]["enum"] == ["", *s.TAINT_EFFECTS]
    assert spec_schema["suspend"]["default"] is False
    # A boolean without a schema default: a default added by a CRD upgrade would be
    # applied to stored jobs too and change their specFingerprint.
    assert spec_schema["int8CrossKV"]["type"] == "boolean"
    assert "default" not in spec_schema["int8CrossKV"]
    # Likewise an integer without a schema default: left out means greedy (1).
    beam = spec_schema["beamSize"]
    assert (beam["type"], beam["minimum"], beam["maximum"]) == (
        "integer", s.MIN_BEAM_SIZE, s.MAX_BEAM_SIZE)
    assert "default" not in beam and s.DEFAULT_BEAM_SIZE == 1
    assert spec_schema["deterministic"]["type"] == "boolean"
    assert "default" not in spec_schema["deterministic"]
    assert sorted(spec_schema) == sorted(s._SPEC_FIELDS)


def test_patterns_are_the_models_patterns(spec_schema: dict[str, Any]) -> None:
    assert spec_schema["input"]["properties"]["uris"]["items"]["pattern"] == s.OBJECT_URI_PATTERN
    assert spec_schema["input"]["properties"]["prefix"]["pattern"] == s.INPUT_PREFIX_PATTERN
    assert spec_schema["input"]["properties"]["suffixes"]["items"]["pattern"] == s.SUFFIX_PATTERN
    assert spec_schema["output"]["properties"]["uri"]["pattern"] == s.OUTPUT_PREFIX_PATTERN
    assert spec_schema["language"]["pattern"] == s.LANGUAGE_PATTERN
    assert spec_schema["model"]["pattern"] == s.MODEL_PATTERN
    for key in ("priorityClassName", "runtimeClassName"):
        assert spec_schema["placement"]["properties"][key]["pattern"] == s.DNS_SUBDOMAIN_PATTERN
    assert spec_schema["storageSecretRef"]["properties"]["name"]["pattern"] == s.DNS_SUBDOMAIN_PATTERN


@pytest.mark.parametrize(("uri", "ok"), [
    ("s3://bucket/out/", True), ("s3://bucket", True), ("s3://bucket/a/b", True),
    ("s3://bucket/../x/", False), ("s3://bucket/a//b/", False), ("s3://bucket/./", False),
    ("s3://bucket/a\\b/", False), ("s3://Bucket/x/", False), ("http://bucket/x/", False),
    ("s3://bucket/..hidden/", True), ("s3://b/x/", False),
])
def test_output_prefix_pattern(uri: str, ok: bool) -> None:
    assert bool(re.fullmatch(s.OUTPUT_PREFIX_PATTERN, uri)) is ok


def test_immutability_rules_cover_every_fixed_field(version: dict[str, Any], spec_schema: dict[str, Any]) -> None:
    fixed = sorted(set(spec_schema) - s.MUTABLE_FIELDS)
    guarded = sorted(name for name, node in spec_schema.items()
                     if any(rule["rule"] == "self == oldSelf"
                            for rule in node.get("x-kubernetes-validations", [])))
    assert guarded == fixed
    spec_rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    presence = next(r["rule"] for r in spec_rules if "oldSelf" in r["rule"])
    optional = [name for name in fixed if "default" not in spec_schema[name]
                and name not in ("input", "output")]
    for name in optional:
        assert f"has(self.{name}) == has(oldSelf.{name})" in presence


def test_the_sample_is_a_valid_job() -> None:
    sample = yaml.safe_load(SAMPLE_PATH.read_text())
    assert sample["apiVersion"] == s.API_VERSION and sample["kind"] == s.KIND
    parsed = s.parse_spec(sample["spec"])
    assert parsed.diarization.enabled and parsed.parallelism == 4
    assert parsed.storage_secret_name == "steno-storage"
