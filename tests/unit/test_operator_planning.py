"""The operator's plans are byte for byte the plans the worker's own planner makes."""

from __future__ import annotations

import hashlib
import json

import pytest
from steno_inference.jobs import plan as worker_plan
from steno_inference.jobs.spec import parse_spec as worker_parse_spec
from steno_inference.storage.client import ObjectInfo as WorkerObjectInfo
from steno_inference.storage.lister import Listed as WorkerListed
from steno_inference.storage.uri import parse_uri
from steno_operator import planning
from steno_operator.spec import parse_spec
from steno_operator.storage import ObjectInfo

pytestmark = pytest.mark.unit

JOB_ID = "0b6c3a52-5f4e-4e0c-9a57-1c2f0d3e4b5a"


def _both(spec_raw: dict, objects: list[tuple[str, int | None]], base: str) -> tuple[bytes, bytes]:
    spec = parse_spec(spec_raw)
    mine_spec = planning.worker_spec(spec, JOB_ID)
    listed = [
        planning.Listed(uri, None if size is None else ObjectInfo(uri.split("/", 3)[3], size, f'"{size:032x}"'))
        for uri, size in objects
    ]
    mine = planning.canonical_json(planning.build_plan(mine_spec, listed, base))
    theirs_spec = worker_parse_spec(mine_spec)
    theirs_listed = [
        WorkerListed(parse_uri(uri), None if size is None else WorkerObjectInfo(parse_uri(uri), size, f'"{size:032x}"'))
        for uri, size in objects
    ]
    theirs = worker_plan.build_plan(theirs_spec, theirs_listed, base).to_bytes()
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
    objects.sort()
    raw = {"input": {"prefix": "s3://audio/in/"}, "output": {"uri": "s3://results/out", "formats": ["json", "srt"]},
           "model": "tiny.en", "parallelism": 3}
    mine, theirs = _both(raw, objects, "in/")
    assert mine == theirs
    # The worker parses our bytes back into the same bytes: planSha256 will match.
    assert worker_plan.parse_plan(mine).to_bytes() == mine


def test_named_inputs_with_missing_objects_and_bad_names_match_the_worker() -> None:
    objects = [
        ("s3://audio/calls/2024/a.wav", 100),
        ("s3://audio/calls/2024/missing.wav", None),
        ("s3://audio/calls/2025/b.wav", 2_000_000),
        ("s3://other/c.wav", 3),
    ]
    raw = {"input": {"uris": [uri for uri, _ in reversed(objects)]},
           "output": {"uri": "s3://results/", "formats": ["txt"]},
           "model": "base", "language": "de", "diarization": {"enabled": True, "numSpeakers": 2},
           "parallelism": 10}
    mine, theirs = _both(raw, objects, "")
    assert mine == theirs
    document = json.loads(mine)
    assert document["shardCount"] == 4
    missing = [item for item in document["inputs"] if item["reason"] == "missing"]
    assert [item["uri"] for item in missing] == ["s3://audio/calls/2024/missing.wav"]


def test_read_plan_hashes_the_stored_bytes_and_lists_shards() -> None:
    spec = parse_spec({"input": {"prefix": "s3://audio"}, "output": {"uri": "s3://results/o/"},
                       "model": "tiny.en", "parallelism": 2})
    listed = [planning.Listed(f"s3://audio/{n}.wav", ObjectInfo(f"{n}.wav", 10, '"e"')) for n in "abc"]
    data = planning.canonical_json(planning.build_plan(planning.worker_spec(spec, JOB_ID), listed, ""))
    info = planning.read_plan(data, "s3://results/o/_steno/plan.json")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.shards == 2 and info.files == 3 and info.job_id == JOB_ID
    assert sorted(i.index for s in range(2) for i in info.shard_inputs(s)) == [0, 1, 2]
    # The input prefix is written as the worker prints it.
    assert json.loads(data)["spec"]["input"]["prefix"] == "s3://audio/"
