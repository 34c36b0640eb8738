"""The worker's plan: typed inputs and shards, problems kept, strict parsing, record ids.

The format's own rules (stems, balancing, canonical bytes) are tested in
test_plan_format.py, against steno_api.plan.
"""

from __future__ import annotations

import pytest
from steno_inference.jobs import layout
from steno_inference.jobs.plan import (
    FILE_OVERHEAD_BYTES,
    REASON_INVALID_KEY,
    REASON_MISSING,
    PlanError,
    ShardIndexError,
    build_plan,
    parse_plan,
)
from steno_inference.jobs.spec import parse_spec
from steno_inference.storage.client import ObjectInfo
from steno_inference.storage.lister import Listed, matches_suffix
from steno_inference.storage.uri import S3Uri

pytestmark = pytest.mark.unit


def _spec(parallelism: int = 3, formats: tuple[str, ...] = ("json", "srt")):
    return parse_spec({
        "jobId": "job-7", "input": {"prefix": "s3://audio-in/talks/"},
        "output": {"uri": "s3://out-bucket/job-7/", "formats": list(formats)},
        "parallelism": parallelism,
    })


def _listed(key: str, size: int | None, bucket: str = "audio-in") -> Listed:
    uri = S3Uri(bucket, key)
    return Listed(uri, None if size is None else ObjectInfo(uri, size, f'"{size:032x}"'))


def test_plan_assigns_shards_by_size_and_keeps_problems() -> None:
    listed = [
        _listed("talks/a.wav", 90 * FILE_OVERHEAD_BYTES),
        _listed("talks/b.wav", 10 * FILE_OVERHEAD_BYTES),
        _listed("talks/c.wav", 10 * FILE_OVERHEAD_BYTES),
        _listed("talks/_steno/records/x.wav", 1),  # would land in steno's own folder
        _listed("talks/gone.wav", None),  # named but missing
        _listed("talks/" + "x" * 1030 + ".wav", 5),  # output key over 1024 bytes
    ]
    plan = build_plan(_spec(parallelism=2), listed, "talks/")
    assert plan.shard_count == 2
    by_key = {item.uri.key: item for item in plan.inputs}
    assert by_key["talks/a.wav"].stem == "a"
    assert by_key["talks/a.wav"].shard != by_key["talks/b.wav"].shard
    assert by_key["talks/b.wav"].shard == by_key["talks/c.wav"].shard  # 90 vs 10 + 10
    reserved = by_key["talks/_steno/records/x.wav"]
    assert reserved.stem is None and reserved.reason == REASON_INVALID_KEY
    assert by_key["talks/gone.wav"].reason == REASON_MISSING
    long = by_key["talks/" + "x" * 1030 + ".wav"]
    assert long.reason == REASON_INVALID_KEY and "1024" in (long.problem or "")
    assert [item.index for item in plan.inputs] == list(range(len(listed)))
    assert sum(len(plan.shard(i)) for i in range(plan.shard_count)) == len(listed)


def test_empty_job_has_one_empty_shard() -> None:
    plan = build_plan(_spec(), [], "talks/")
    assert plan.shard_count == 1
    assert plan.shard(0) == ()


def test_plan_json_is_canonical_and_round_trips() -> None:
    listed = [_listed(f"talks/{i}.wav", 1000 * i) for i in range(7)]
    plan = build_plan(_spec(), listed, "talks/")
    again = build_plan(_spec(), list(listed), "talks/")
    assert plan.to_bytes() == again.to_bytes()
    assert plan.sha256 == again.sha256
    assert parse_plan(plan.to_bytes()) == plan


def test_shard_index_is_checked() -> None:
    plan = build_plan(_spec(parallelism=2), [_listed("talks/a.wav", 1), _listed("talks/b.wav", 1)],
                      "talks/")
    for bad in (-1, 2, True):
        with pytest.raises(ShardIndexError, match="shards 0 to 1"):
            plan.shard(bad)  # type: ignore[arg-type]


def test_malformed_plans_are_refused() -> None:
    plan = build_plan(_spec(), [_listed("talks/a.wav", 1)], "talks/")
    good = plan.to_bytes().decode()
    for bad in ("{", "[]", good.replace('"shardCount":1', '"shardCount":0'),
                good.replace('"shard":0', '"shard":5'),
                good.replace('"stem":"a"', '"stem":"../a"'),
                good.replace("steno.dev/plan/v1", "other/v9")):
        with pytest.raises(PlanError):
            parse_plan(bad.encode())


def test_record_ids_depend_on_job_and_input_version() -> None:
    uri = S3Uri("audio-in", "a.wav")
    base = layout.file_id("job-1", uri, '"e1"', 10)
    assert base == layout.file_id("job-1", uri, '"e1"', 10)
    assert len({base, layout.file_id("job-2", uri, '"e1"', 10),
                layout.file_id("job-1", uri, '"e2"', 10),
                layout.file_id("job-1", uri, '"e1"', 11)}) == 4


def test_suffix_filter_is_case_insensitive() -> None:
    assert matches_suffix("a/B.WAV", [".wav"])
    assert not matches_suffix("a/b.wav.txt", [".wav", ".mp3"])
    assert matches_suffix("anything", [])
