"""s3:// URIs and the rules for keys steno writes."""

from __future__ import annotations

import pytest
from steno_inference.storage.uri import (
    MAX_KEY_BYTES,
    InvalidUriError,
    S3Uri,
    join_key,
    parse_prefix,
    parse_uri,
    validate_output_key,
)

pytestmark = pytest.mark.unit


def test_parse_uri_splits_bucket_and_key() -> None:
    assert parse_uri("s3://audio-in/talks/day 1/a.wav") == S3Uri("audio-in", "talks/day 1/a.wav")
    assert parse_uri("S3://bucket") == S3Uri("bucket", "")
    assert str(S3Uri("bucket", "a/b.wav")) == "s3://bucket/a/b.wav"
    assert S3Uri("bucket", "a/b.wav").name == "b.wav"


@pytest.mark.parametrize("text", [
    "http://bucket/key", "bucket/key", "s3:/bucket/key", "s3://", "s3://ab/key",
    "s3://Upper/key", "s3://-bucket/key", "s3://bucket-/key", "s3://bu..cket/key",
    "s3://under_score/key", "s3://" + "b" * 64 + "/key",
])
def test_malformed_uris_are_refused(text: str) -> None:
    with pytest.raises(InvalidUriError):
        parse_uri(text)


def test_input_keys_may_be_anything_up_to_the_length_limit() -> None:
    # Keys we only read are whatever the bucket holds (S3 allows "..", "//", spaces).
    assert parse_uri("s3://bucket/a/../b//c.wav").key == "a/../b//c.wav"
    with pytest.raises(InvalidUriError, match="1025 bytes"):
        parse_uri("s3://bucket/" + "k" * (MAX_KEY_BYTES + 1))


def test_prefix_is_normalized_to_a_folder() -> None:
    assert parse_prefix("s3://out-bucket/jobs/42") == S3Uri("out-bucket", "jobs/42/")
    assert parse_prefix("s3://out-bucket/jobs/42/") == S3Uri("out-bucket", "jobs/42/")
    assert parse_prefix("s3://out-bucket") == S3Uri("out-bucket", "")
    with pytest.raises(InvalidUriError, match=r"'\.\.'"):
        parse_prefix("s3://out-bucket/jobs/../x")
    with pytest.raises(InvalidUriError, match="empty segment"):
        parse_prefix("s3://out-bucket/a//b/")


@pytest.mark.parametrize(("key", "problem"), [
    ("", "empty"),
    ("/abs/x.json", "absolute"),
    ("a/../x.json", r"'\.\.'"),
    ("../x.json", r"'\.\.'"),
    ("a/./x.json", r"'\.'"),
    ("a//x.json", "empty segment"),
    ("a/x/", "empty segment"),
    ("a\\x.json", "backslash"),
    ("a/x\n.json", "control character"),
    ("a/x\x00.json", "control character"),
    ("a/x\x7f.json", "control character"),
])
def test_output_key_rules(key: str, problem: str) -> None:
    with pytest.raises(InvalidUriError, match=problem):
        validate_output_key(key)


def test_output_key_length_counts_utf8_bytes() -> None:
    three_byte = "語"  # 3 bytes of UTF-8
    fits = three_byte * (MAX_KEY_BYTES // 3)  # 1023 bytes
    assert validate_output_key(fits) == fits
    with pytest.raises(InvalidUriError, match="1026 bytes"):
        validate_output_key(fits + three_byte)
    with pytest.raises(InvalidUriError, match="not valid UTF-8"):
        validate_output_key("a\udc80b")  # a lone surrogate cannot be encoded


def test_child_validates_the_joined_key() -> None:
    out = parse_prefix("s3://out-bucket/job")
    assert out.child("talks/a.json") == S3Uri("out-bucket", "job/talks/a.json")
    with pytest.raises(InvalidUriError):
        out.child("../escape.json")
    assert join_key("", "a.json") == "a.json"
    assert join_key("p", "a.json") == "p/a.json"
    assert join_key("p/", "a.json") == "p/a.json"
