"""The shared plan format (steno_api.plan): its bytes, its rules, and its parser.

The operator writes plans with this module and the worker reads them with it,
so these tests pin the format itself: a plan's bytes are what every shard
manifest's ``planSha256`` is checked against, and a change to them would
break every plan already stored.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from steno_api.plan import (
    FILE_OVERHEAD_BYTES,
    MAX_KEY_BYTES,
    MISSING_PROBLEM,
    REASON_INVALID_KEY,
    REASON_MISSING,
    ListedInput,
    PlanFormatError,
    balance,
    base_stem,
    build_plan_document,
    canonical_json,
    common_folder,
    folder,
    output_key_problem,
    output_stems,
    parse_plan_document,
    unique_stems,
    uri_key,
)

pytestmark = pytest.mark.unit

SPEC = {
    "jobId": "job-7",
    "input": {"uris": ["s3://audio/calls/2024/a.wav", "s3://audio/calls/2024/gone.wav",
                       "s3://audio/calls/2025/Ünï cöde.flac", "s3://audio/calls/_steno.wav"]},
    "output": {"uri": "s3://results/out/", "formats": ["json", "srt"]},
    "model": "tiny.en",
    "parallelism": 2,
}
LISTED = [
    ListedInput("s3://audio/calls/2024/a.wav", 3_000_000, '"aa"'),
    ListedInput("s3://audio/calls/2024/gone.wav", None),
    ListedInput("s3://audio/calls/2025/Ünï cöde.flac", 10, '"bb"'),
    ListedInput("s3://audio/calls/_steno.wav", 5, '"cc"'),
]
# Written by the planner before the format moved here (steno_operator.planning at
# 4195589), byte for byte: plans already in buckets must keep their SHA-256.
GOLDEN = (
    '{"inputs":[{"etag":"\\"aa\\"","problem":null,"reason":null,"shard":0,"size":3000000,'
    '"stem":"2024/a","uri":"s3://audio/calls/2024/a.wav"},{"etag":"","problem":"no such object '
    '(it was named in the job but is not in the bucket)","reason":"missing","shard":1,"size":0,'
    '"stem":null,"uri":"s3://audio/calls/2024/gone.wav"},{"etag":"\\"bb\\"","problem":null,'
    '"reason":null,"shard":1,"size":10,"stem":"2025/Ünï cöde","uri":"s3://audio/calls/2025/Ünï '
    'cöde.flac"},{"etag":"\\"cc\\"","problem":"its output name \'_steno\' falls in steno\'s '
    'reserved folder","reason":"invalid_output_key","shard":1,"size":5,"stem":null,'
    '"uri":"s3://audio/calls/_steno.wav"}],"schema":"steno.dev/plan/v1","shardCount":2,'
    '"spec":{"input":{"uris":["s3://audio/calls/2024/a.wav","s3://audio/calls/2024/gone.wav",'
    '"s3://audio/calls/2025/Ünï cöde.flac","s3://audio/calls/_steno.wav"]},"jobId":"job-7",'
    '"model":"tiny.en","output":{"formats":["json","srt"],"uri":"s3://results/out/"},'
    '"parallelism":2}}\n'
).encode()


# --- bytes ---------------------------------------------------------------------------


def test_a_plan_is_byte_for_byte_the_format_already_in_buckets() -> None:
    document = build_plan_document(SPEC, LISTED, "calls/")
    assert document.to_bytes() == GOLDEN
    assert document.sha256 == hashlib.sha256(GOLDEN).hexdigest()


def test_canonical_json_sorts_keys_keeps_unicode_and_ends_with_a_newline() -> None:
    assert canonical_json({"b": [1, {"d": None, "c": "é"}], "a": True}) == (
        '{"a":true,"b":[1,{"c":"é","d":null}]}\n'.encode()
    )
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})  # not JSON: would not read back the same


def test_parse_round_trips_to_the_same_bytes() -> None:
    document = parse_plan_document(GOLDEN)
    assert document.to_bytes() == GOLDEN
    assert document == build_plan_document(SPEC, LISTED, "calls/")
    assert [item.index for item in document.inputs] == [0, 1, 2, 3]
    assert [item.uri for item in document.shard(1)] == [LISTED[1].uri, LISTED[2].uri,
                                                        LISTED[3].uri]


@pytest.mark.parametrize(("bad", "message"), [
    (b"{", "is not valid JSON"),
    (b"\xff", "is not valid JSON"),
    (b"[]", "not a plan of schema steno.dev/plan/v1"),
    (GOLDEN.replace(b"steno.dev/plan/v1", b"other/v9"), "not a plan of schema"),
    (GOLDEN.replace(b'"shardCount":2', b'"shardCount":0'), "shardCount must be a positive"),
    (GOLDEN.replace(b'"shardCount":2', b'"shardCount":true'), "shardCount must be a positive"),
    (GOLDEN.replace(b'"shard":0', b'"shard":2'), "input 0 is assigned to shard 2 of 2"),
    (GOLDEN.replace(b'"stem":"2024/a"', b'"stem":null'), "input 0 has neither a stem nor"),
    (GOLDEN.replace(b'"size":10,', b""), "'size'"),
    (GOLDEN.replace(b'"spec":{', b'"spec":[],"x":{'), "spec must be an object"),
])
def test_malformed_plans_are_refused_with_where_and_why(bad: bytes, message: str) -> None:
    with pytest.raises(PlanFormatError, match=r"^s3://r/_steno/plan\.json is not") as caught:
        parse_plan_document(bad, "s3://r/_steno/plan.json")
    assert message in str(caught.value)


# --- building --------------------------------------------------------------------------


def test_inputs_keep_their_order_and_problems() -> None:
    document = build_plan_document(SPEC, LISTED, "calls/")
    assert document.shard_count == 2
    a, gone, code, reserved = document.inputs
    assert (a.stem, a.problem, a.reason, a.size, a.etag) == ("2024/a", None, None, 3_000_000, '"aa"')
    assert (gone.stem, gone.problem, gone.reason, gone.size, gone.etag) == (
        None, MISSING_PROBLEM, REASON_MISSING, 0, "")
    assert code.stem == "2025/Ünï cöde"
    assert reserved.stem is None and reserved.reason == REASON_INVALID_KEY
    # The heaviest input alone on one shard, the light ones together on the other.
    assert a.shard != code.shard and code.shard == gone.shard == reserved.shard


def test_an_output_key_that_cannot_be_written_is_the_inputs_problem() -> None:
    out = "o" * 20 + "/"
    spec = {**SPEC, "output": {"uri": f"s3://results/{out}", "formats": ["json"]}}
    stem = "x" * (MAX_KEY_BYTES - len(out) - len(".json"))  # its output key: exactly 1024 bytes
    listed = [ListedInput(f"s3://audio/calls/ok/{stem}.wav", 1, '"e"'),
              ListedInput(f"s3://audio/calls/{stem}.wav", 1, '"e"'),
              ListedInput("s3://audio/calls/e/./y.wav", 1, '"e"')]
    too_long, fits, dot = build_plan_document(spec, listed, "calls/").inputs
    assert too_long.reason == REASON_INVALID_KEY and too_long.stem is None
    assert "is 1027 bytes of UTF-8; S3 allows at most 1024" in (too_long.problem or "")
    assert fits.problem is None and fits.stem == stem
    assert dot.problem == (
        f"cannot name its output: output key '{out}e/./y.json' contains a '.' segment")


def test_shards_are_at_most_the_parallelism_and_at_least_one() -> None:
    many = [ListedInput(f"s3://audio/calls/{i}.wav", i, '"e"') for i in range(5)]
    assert build_plan_document({**SPEC, "parallelism": 3}, many, "calls/").shard_count == 3
    assert build_plan_document({**SPEC, "parallelism": 9}, many, "calls/").shard_count == 5
    empty = build_plan_document(SPEC, [], "calls/")
    assert empty.shard_count == 1 and empty.inputs == () and empty.shard(0) == ()


def test_the_spec_is_carried_as_given() -> None:
    data = build_plan_document(SPEC, LISTED, "calls/").to_bytes()
    assert json.loads(data)["spec"] == SPEC


# --- the rules -----------------------------------------------------------------------


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
        # LPT: the heaviest shard exceeds the lightest by at most one item.
        assert max(loads) - min(loads) <= max(weights)
        assert len([load for load in loads if load]) == min(shards, len(weights))


def test_balance_spreads_equal_items_and_breaks_ties_by_index() -> None:
    assert balance([5, 5, 5, 5], 2) == [0, 1, 0, 1]
    assert balance([1, 100, 1, 1], 2) == [1, 0, 1, 1]
    assert balance([], 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        balance([1], 0)


def test_each_file_costs_the_overhead_so_many_small_files_spread() -> None:
    # Without the overhead, one 2 MB file would weigh as much as all the empty ones.
    listed = [ListedInput("s3://audio/calls/big.wav", 2 * FILE_OVERHEAD_BYTES, '"e"')] + [
        ListedInput(f"s3://audio/calls/{i}.wav", 0, '"e"') for i in range(4)]
    shards = [item.shard for item in build_plan_document(SPEC, listed, "calls/").inputs]
    assert shards.count(0) == 2 and shards.count(1) == 3


def test_stems_keep_folders_and_drop_extensions() -> None:
    keys = ["day1/keynote.wav", "day1/keynote.mp3", "day2/keynote.wav", "b.wav", ".hidden.wav",
            "noext", "day1/keynote-1.wav"]
    # Repeats get suffixes in sorted order of the names: keynote.mp3 < keynote.wav.
    assert output_stems(keys) == [
        "day1/keynote-2", "day1/keynote", "day2/keynote", "b", "hidden", "noext",
        "day1/keynote-1",
    ]
    # The same inputs in another order get the same stems.
    assert output_stems(list(reversed(keys))) == list(reversed(output_stems(keys)))


def test_unique_stems_compare_case_insensitively_and_keep_bare_names() -> None:
    assert unique_stems(["a/x.wav", "b/x.wav", "c/x-1.wav"]) == ["x", "x-2", "x-1"]
    assert unique_stems(["a/Talk.wav", "b/talk.wav"]) == ["Talk", "talk-1"]
    assert unique_stems([]) == []


@pytest.mark.parametrize(("name", "stem"), [
    ("talk.wav", "talk"), ("s3://bucket/dir/talk.mp3", "talk"), ("talk.tar.gz", "talk.tar"),
    (".hidden", "hidden"), ("..w.ogg", "w"), ("sp ace\tname.wav", "sp ace name"),
    ("a\\b.wav", "b"), ("  .wav", "audio"), ("/", "audio"), ("noext", "noext"),
])
def test_base_stem(name: str, stem: str) -> None:
    assert base_stem(name) == stem


def test_folders() -> None:
    assert folder("a/b/c.wav") == "a/b/" and folder("c.wav") == ""
    assert common_folder(["calls/2024/a.wav", "calls/2025/b.wav"]) == "calls/"
    # Whole segments only: "calls/20" is not a folder of both.
    assert common_folder(["calls/2024/a.wav", "calls/2025/b.wav", "calls/20.wav"]) == "calls/"
    assert common_folder(["ab/x.wav", "ac/y.wav"]) == ""
    assert common_folder(["a/b/c.wav"]) == "a/b/"
    assert common_folder([]) == ""
    assert uri_key("s3://bucket/a/b.wav") == "a/b.wav"
    assert uri_key("s3://bucket") == uri_key("s3://bucket/") == ""


@pytest.mark.parametrize(("key", "problem"), [
    ("a/b.json", None),
    ("", "output key is empty"),
    ("/a.json", "output key '/a.json' is absolute (starts with '/')"),
    ("a\\b.json", "output key 'a\\\\b.json' contains a backslash"),
    ("a\x01.json", "output key 'a\\x01.json' contains a control character"),
    ("a//b.json", "output key 'a//b.json' has an empty segment ('//' or a trailing '/')"),
    ("a/", "output key 'a/' has an empty segment ('//' or a trailing '/')"),
    ("a/../b.json", "output key 'a/../b.json' contains a '..' segment"),
    ("./b.json", "output key './b.json' contains a '.' segment"),
    ("a\udc80b", "key 'a\\udc80b' is not valid UTF-8 text"),
])
def test_output_key_problems(key: str, problem: str | None) -> None:
    assert output_key_problem(key) == problem


def test_output_key_length_counts_utf8_bytes() -> None:
    three_byte = "€"
    fits = three_byte * (MAX_KEY_BYTES // 3)  # 1023 bytes
    assert output_key_problem(fits) is None
    assert output_key_problem(fits + three_byte) == (
        f"key of {(fits[:80] + '…')!r} is 1026 bytes of UTF-8; S3 allows at most 1024")
    assert output_key_problem("", what="output prefix") == "output prefix is empty"
