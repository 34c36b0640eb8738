"""Planning: output stems, balance by size, problems kept in the plan, canonical JSON."""

from __future__ import annotations

import random

import pytest
from steno_inference.jobs import layout
from steno_inference.jobs.plan import (
    FILE_OVERHEAD_BYTES,
    REASON_INVALID_KEY,
    REASON_MISSING,
    PlanError,
    ShardIndexError,
    balance,
    build_plan,
    output_stems,
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


def test_stems_keep_folders_and_drop_extensions() -> None:
    keys = ["day1/keynote.wav", "day1/keynote.mp3", "day2/keynote.wav", "b.wav", ".hidden.wav",
            "noext", "day1/keynote-1.wav"]
    # Repeats get suffixes in sorted order of the names: keynote.mp3 < keynote.wav.
    assert output_stems(keys) == [
        "day1/keynote-2", "day1/keynote", "day2/keynote", "b", "hidden", "noext",
        "day1/keynote-1",
    ]
    # The same inputs in another order get the same stems.
    shuffled = list(reversed(keys))
    assert output_stems(shuffled) == list(reversed(output_stems(keys)))


def test_balance_is_deterministic_and_within_one_item_of_even() -> None:
    rng = random.Random(5)
    for _ in range(50):
        weights = [rng.randint(1, 10_000_000) for _ in range(rng.randint(1, 60))]
        shards = rng.randint(1, 8)
        assigned = balance(weights, shards)
        assert assigned == balance(weights, shards)
        loads = [0] * shards
        for weight, shard in zip(weights, assigned, strict=True):
            loads[shard] += weight
        used = [load for load in loads if load]
        # LPT: the heaviest shard exceeds the lightest by at most one item.
        assert max(loads) - min(loads) <= max(weights)
        assert len(used) == min(shards, len(weights))


def test_balance_spreads_equal_items_and_breaks_ties_by_index() -> None:
    assert balance([5, 5, 5, 5], 2) == [0, 1, 0, 1]
    assert balance([1, 100, 1, 1], 2) == [1, 0, 1, 1]
    with pytest.raises(ValueError):
        balance([1], 0)


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
