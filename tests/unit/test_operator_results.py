"""Shard manifests as the worker writes them are verified against the plan; the result manifest."""

from __future__ import annotations

import hashlib
import json

import pytest
from steno_inference.jobs import layout
from steno_inference.jobs.plan import parse_plan
from steno_inference.jobs.records import (
    Failure,
    FileRecord,
    ManifestEntry,
    OutputObject,
    manifest_dict,
)
from steno_inference.storage.uri import parse_uri
from steno_operator import planning, results
from steno_operator.manifests import JobIdentity
from steno_operator.spec import parse_spec
from steno_operator.storage import ObjectInfo

pytestmark = pytest.mark.unit

IDENTITY = JobIdentity("media", "calls", "9d3e0c55-0f43-4a0e-8f0b-7a4c1e2d3b6f")


@pytest.fixture(scope="module")
def plan_bytes() -> bytes:
    spec = parse_spec({"input": {"uris": ["s3://audio/a.wav", "s3://audio/b.wav", "s3://audio/gone.wav"]},
                       "output": {"uri": "s3://results/calls/", "formats": ["json", "txt"]},
                       "model": "tiny.en", "parallelism": 2})
    listed = [planning.Listed("s3://audio/a.wav", ObjectInfo("a.wav", 100, '"aa"')),
              planning.Listed("s3://audio/b.wav", ObjectInfo("b.wav", 200, '"bb"')),
              planning.Listed("s3://audio/gone.wav", None)]
    return planning.canonical_json(planning.build_plan(planning.worker_spec(spec, IDENTITY.uid), listed, ""))


def _worker_manifest(plan_bytes: bytes, shard: int) -> bytes:
    """What the worker commits for ``shard``, built with the worker's own code."""
    plan = parse_plan(plan_bytes)
    entries = []
    for item in plan.shard(shard):
        if item.problem is not None:
            record = FileRecord(plan.spec.job_id, plan.record_id(item), item.uri, item.size, item.etag, "failed",
                                0.0, failure=Failure(item.reason or "missing", item.problem))
        else:
            outputs = tuple(
                OutputObject(fmt, layout.output_uri(plan.spec.output, item.stem or "", fmt), 10 + i,
                             hashlib.sha256(f"{item.uri}{fmt}".encode()).hexdigest(),
                             hashlib.md5(f"{item.uri}{fmt}".encode()).hexdigest())
                for i, fmt in enumerate(plan.spec.formats))
            record = FileRecord(plan.spec.job_id, plan.record_id(item), item.uri, item.size, item.etag, "succeeded",
                                1.5, outputs=outputs, transcript={"text": "x"})
        entries.append(ManifestEntry(item.index, layout.record_uri(plan.spec.output, plan.record_id(item)), record))
    return (json.dumps(manifest_dict(plan, shard, entries), sort_keys=True) + "\n").encode()


def _info(plan_bytes: bytes) -> planning.PlanInfo:
    return planning.read_plan(plan_bytes, "s3://results/calls/_steno/plan.json")


def test_worker_manifests_verify(plan_bytes: bytes) -> None:
    info = _info(plan_bytes)
    assert info.shards == 2
    verified = [results.verify_shard_manifest(_worker_manifest(plan_bytes, s), f"m{s}", info, s)
                for s in range(info.shards)]
    files = sorted((f for v in verified for f in v.files), key=lambda f: f.index)
    assert [f.uri for f in files] == ["s3://audio/a.wav", "s3://audio/b.wav", "s3://audio/gone.wav"]
    assert [f.status for f in files] == ["succeeded", "succeeded", "failed"]
    assert files[2].failure_reason == "missing"
    assert files[0].outputs[0].uri == "s3://results/calls/a.json"
    document = results.result_manifest(IDENTITY, info, verified)
    assert document["summary"] == {"files": 3, "succeeded": 2, "failed": 1, "audioS": 3.0}
    assert document["plan"]["sha256"] == info.sha256
    # Deterministic: a restarted operator writes the very same bytes.
    again = results.result_manifest(IDENTITY, info, list(reversed(verified)))
    assert planning.canonical_json(again) == planning.canonical_json(document)


def _tampered(plan_bytes: bytes, change) -> bytes:
    raw = json.loads(_worker_manifest(plan_bytes, 0))
    change(raw)
    return json.dumps(raw).encode()


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(jobId="other"), "belongs to job"),
    (lambda r: r.update(planSha256="0" * 64), "another plan"),
    (lambda r: r.update(shard=1), "is shard 1"),
    (lambda r: r["files"].pop(), "files"),
    (lambda r: r["files"][0].update(uri="s3://audio/z.wav"), "the plan says"),
    (lambda r: r["files"][0]["outputs"].pop(), "one output per format"),
    (lambda r: r["files"][0]["outputs"][0].update(uri="s3://elsewhere/x.json"), "names output"),
    (lambda r: r["files"][0].update(status="maybe"), "status"),
    (lambda r: r["summary"].update(failed=5), "does not add up"),
    (lambda r: r.update(schema="nope"), "schema"),
])
def test_tampered_manifests_are_refused(plan_bytes: bytes, change, message: str) -> None:
    with pytest.raises(results.ManifestInvalidError, match=message):
        results.verify_shard_manifest(_tampered(plan_bytes, change), "m0", _info(plan_bytes), 0)


def test_a_manifest_of_another_plan_version_is_refused(plan_bytes: bytes) -> None:
    other = plan_bytes.replace(b'"parallelism":2', b'"parallelism":3')
    assert other != plan_bytes
    with pytest.raises(results.ManifestInvalidError, match="another plan"):
        results.verify_shard_manifest(_worker_manifest(plan_bytes, 0), "m0", _info(other), 0)


def test_output_checks() -> None:
    output = results.OutputRef("json", "s3://r/a.json", 12, "0" * 64, "ab" * 16)
    assert results.output_problem(output, 12, '"' + "ab" * 16 + '"') is None
    assert results.output_problem(output, 12, '"deadbeef-3"') is None  # multipart: size only
    assert "missing" in results.output_problem(output, None, None)
    assert "13 bytes" in results.output_problem(output, 13, '"x"')
    assert "MD5" in results.output_problem(output, 12, '"' + "cd" * 16 + '"')


def test_record_ids_are_the_workers(plan_bytes: bytes) -> None:
    # The plan names inputs the way the worker's records are keyed (job UID + URI + ETag + size).
    plan = parse_plan(plan_bytes)
    item = plan.inputs[0]
    assert plan.record_id(item) == layout.file_id(IDENTITY.uid, parse_uri("s3://audio/a.wav"), '"aa"', 100)
