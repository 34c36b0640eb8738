"""The operator's plans are the plans the worker reads: one format, two adapters.

The format and its rules are steno_api.plan (tested in test_plan_format.py).
What each side still does on its own is feed it: the operator turns its CRD
spec into the worker's spec JSON and its storage listing into plan inputs,
the worker does the same from its own types. These tests fail when either
adapter drifts (a field renamed, a URI printed another way, another base
folder), or when someone gives a side its own copy of a rule again.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import steno_api.plan as shared
from steno_inference import formats
from steno_inference.jobs import layout
from steno_inference.jobs import plan as worker_plan
from steno_inference.jobs.spec import parse_spec as worker_parse_spec
from steno_inference.storage import uri as worker_uri
from steno_inference.storage.client import ObjectInfo as WorkerObjectInfo
from steno_inference.storage.lister import Listed as WorkerListed
from steno_inference.storage.uri import parse_uri
from steno_operator import manifests, planning
from steno_operator.spec import parse_spec
from steno_operator.storage import ObjectInfo

pytestmark = pytest.mark.unit

JOB_ID = "0b6c3a52-5f4e-4e0c-9a57-1c2f0d3e4b5a"


class _Store:
    """Just enough of the operator's ObjectStore for list_inputs."""

    def __init__(self, objects: list[tuple[str, int | None]]) -> None:
        self.objects = {uri: size for uri, size in objects if size is not None}

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [ObjectInfo(uri.split("/", 3)[3], size, f'"{size:032x}"')
                for uri, size in sorted(self.objects.items()) if uri.startswith(prefix)]

    def head(self, uri: str) -> ObjectInfo | None:
        size = self.objects.get(uri)
        return None if size is None else ObjectInfo(uri.split("/", 3)[3], size, f'"{size:032x}"')


def _both(spec_raw: dict, objects: list[tuple[str, int | None]]) -> tuple[bytes, bytes]:
    """The plan as the operator writes it and as the worker's own planner would make it."""
    spec = parse_spec(spec_raw)
    mine_spec = planning.worker_spec(spec, JOB_ID)
    listed, base = planning.list_inputs(_Store(objects), spec)
    mine = planning.canonical_json(planning.build_plan(mine_spec, listed, base))
    theirs_spec = worker_parse_spec(mine_spec)
    theirs_listed = [
        WorkerListed(parse_uri(uri), None if size is None else WorkerObjectInfo(parse_uri(uri), size, f'"{size:032x}"'))
        for uri, size in sorted(objects)
    ]
    if theirs_spec.input.prefix is not None:
        theirs_base = shared.folder(theirs_spec.input.prefix.key)
        theirs_listed = [item for item in theirs_listed if item.info is not None]
    else:
        theirs_base = shared.common_folder([item.uri.key for item in theirs_listed])
    theirs = worker_plan.build_plan(theirs_spec, theirs_listed, theirs_base).to_bytes()
    return mine, theirs


def test_prefix_plan_matches_the_worker_byte_for_byte() -> None:
    objects = [
        ("s3://audio/in/a.wav", 5_000_000),
        ("s3://audio/in/a.mp3", 1_000),
        ("s3://audio/in/day1/keynote.flac", 90_000_000),
        ("s3://audio/in/day1/Keynote.wav", 10),
        ("s3://audio/in/x-1.wav", 3),
        ("s3://audio/in/_steno/trap.wav", 7),
        ("s3://audio/in/..weird.ogg", 12),
        ("s3://audio/in/sp ace\tname.wav", 44),
    ]
    raw = {"input": {"prefix": "s3://audio/in/"}, "output": {"uri": "s3://results/out", "formats": ["json", "srt"]},
           "model": "tiny.en", "parallelism": 3}
    mine, theirs = _both(raw, objects)
    assert mine == theirs
    # The worker parses our bytes back into the same bytes: planSha256 will match.
    assert worker_plan.parse_plan(mine).to_bytes() == mine
    assert json.loads(mine)["inputs"][0]["stem"] == "weird"  # relative to the prefix's folder


def test_named_inputs_with_missing_objects_and_bad_names_match_the_worker() -> None:
    objects = [
        ("s3://audio/calls/2024/a.wav", 100),
        ("s3://audio/calls/2024/missing.wav", None),
        ("s3://audio/calls/2025/b.wav", 2_000_000),
        ("s3://audio/calls/2025/e/./y.wav", 5),
    ]
    raw = {"input": {"uris": [uri for uri, _ in reversed(objects)]},
           "output": {"uri": "s3://results/", "formats": ["txt"]},
           "model": "base", "language": "de", "diarization": {"enabled": True, "numSpeakers": 2},
           "parallelism": 10}
    mine, theirs = _both(raw, objects)
    assert mine == theirs
    document = json.loads(mine)
    assert document["shardCount"] == 4
    assert [item["stem"] for item in document["inputs"]] == ["2024/a", None, "2025/b", None]
    assert [item["reason"] for item in document["inputs"]] == [
        None, shared.REASON_MISSING, None, shared.REASON_INVALID_KEY]


def test_both_sides_use_the_one_implementation() -> None:
    # Each side re-exports the shared names; a copy of its own would drift silently.
    for name in ("canonical_json", "balance", "output_stems", "PLAN_SCHEMA", "MAX_INPUTS",
                 "MAX_PLAN_BYTES", "FILE_OVERHEAD_BYTES", "REASON_MISSING", "REASON_INVALID_KEY"):
        assert getattr(worker_plan, name) is getattr(shared, name), name
        assert getattr(planning, name) is getattr(shared, name), name
    for name in ("unique_stems", "base_stem", "folder", "output_key_problem"):
        assert getattr(planning, name) is getattr(shared, name), name
    assert planning.PlannedInput is shared.PlanEntry
    assert layout.RESERVED_DIR == manifests.RESERVED_DIR == shared.RESERVED_DIR
    assert layout.PLAN_NAME == manifests.PLAN_KEY == shared.PLAN_KEY
    assert worker_uri.MAX_KEY_BYTES == shared.MAX_KEY_BYTES
    assert formats.unique_stems(["a/x.wav", "b/x.wav"]) == shared.unique_stems(["a/x.wav", "b/x.wav"])


def test_read_plan_hashes_the_stored_bytes_and_lists_shards() -> None:
    spec = parse_spec({"input": {"prefix": "s3://audio"}, "output": {"uri": "s3://results/o/"},
                       "model": "tiny.en", "parallelism": 2})
    listed = [planning.Listed(f"s3://audio/{n}.wav", ObjectInfo(f"{n}.wav", 10, '"e"')) for n in "abc"]
    data = planning.canonical_json(planning.build_plan(planning.worker_spec(spec, JOB_ID), listed, ""))
    info = planning.read_plan(data, "s3://results/o/_steno/plan.json")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.shards == 2 and info.files == 3 and info.job_id == JOB_ID
    assert info.output == "s3://results/o/" and info.formats == ("json",)
    assert sorted(i.index for s in range(2) for i in info.shard_inputs(s)) == [0, 1, 2]
    # The input prefix is written as the worker prints it.
    assert json.loads(data)["spec"]["input"]["prefix"] == "s3://audio/"


def test_read_plan_refuses_what_the_worker_would_refuse() -> None:
    spec = parse_spec({"input": {"prefix": "s3://audio"}, "output": {"uri": "s3://results/o/"},
                       "model": "tiny.en"})
    listed = [planning.Listed("s3://audio/a.wav", ObjectInfo("a.wav", 10, '"e"'))]
    good = planning.canonical_json(planning.build_plan(planning.worker_spec(spec, JOB_ID), listed, ""))
    where = "s3://results/o/_steno/plan.json"
    for bad in (b"{", b"[]", good.replace(b'"shard":0', b'"shard":3'),
                good.replace(b'"jobId"', b'"jobID"')):
        with pytest.raises(planning.InvalidPlanError, match=f"^{re.escape(where)} is not"):
            planning.read_plan(bad, where)
        with pytest.raises(worker_plan.PlanError):
            worker_plan.parse_plan(bad)
