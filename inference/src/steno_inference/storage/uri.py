"""``s3://`` URIs and the object keys steno writes, parsed and validated in one place.

Two kinds of keys, two rules:

* **Keys we read** (inputs) are whatever the bucket holds: S3 allows any UTF-8
  string up to :data:`MAX_KEY_BYTES`, so an input key is only checked for that.
* **Keys we write** (outputs, commit records, manifests, plans) must be
  *plain relative paths*: not empty, at most :data:`MAX_KEY_BYTES` bytes of
  UTF-8, not starting with ``/``, no empty, ``.`` or ``..`` segment, no
  backslash and no control character. Such a key means the same object on
  every S3 implementation and, synced to a file system, stays inside its
  folder. Every key steno writes passes :func:`validate_output_key` right
  before it is used, so a key derived from a strange input name fails as
  that input's problem, never as a write somewhere unexpected.

A URI names a bucket and a key (``s3://bucket/key``) or a prefix
(``s3://bucket/some/folder/``). Bucket names follow the rules shared by
AWS S3, GCS, Ceph, MinIO and SeaweedFS (3 to 63 characters of lower-case
letters, digits, dots and hyphens, starting and ending with a letter or
digit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The key rules are part of the plan format the operator shares: the planner
# gives an input a problem exactly when writing its output here would fail.
from steno_api.plan import MAX_KEY_BYTES as MAX_KEY_BYTES
from steno_api.plan import output_key_problem

SCHEME = "s3://"
MIN_BUCKET_CHARS = 3
MAX_BUCKET_CHARS = 63
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")


class InvalidUriError(ValueError):
    """A URI or a key that steno refuses; the message says which rule it breaks."""


@dataclass(frozen=True, order=True)
class S3Uri:
    """A bucket and a key (or a key prefix) in it."""

    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    def child(self, relative_key: str) -> S3Uri:
        """The object ``relative_key`` under this prefix, validated as a key we write."""
        return S3Uri(self.bucket, validate_output_key(join_key(self.key, relative_key)))

    @property
    def name(self) -> str:
        """The last segment of the key (a file name)."""
        return self.key.rsplit("/", 1)[-1]


def parse_uri(text: str) -> S3Uri:
    """``s3://bucket/key`` → :class:`S3Uri`; anything else raises :class:`InvalidUriError`."""
    if not isinstance(text, str):
        raise InvalidUriError(f"a URI must be a string, not {type(text).__name__}")
    if not text.lower().startswith(SCHEME):
        raise InvalidUriError(f"{text!r} is not an s3:// URI")
    rest = text[len(SCHEME) :]
    bucket, _, key = rest.partition("/")
    validate_bucket(bucket, text)
    _check_key_length(key, text)
    return S3Uri(bucket, key)


def parse_prefix(text: str) -> S3Uri:
    """An output prefix ``s3://bucket[/folder[/]]``; its key part is normalized to end in ``/``.

    The prefix is a place steno writes under, so its key follows the rules of
    :func:`validate_output_key` (an empty prefix, the bucket's root, is allowed).
    """
    uri = parse_uri(text)
    key = uri.key
    if key:
        validate_output_key(key.rstrip("/") or key, what="output prefix")
        key = key if key.endswith("/") else key + "/"
    return S3Uri(uri.bucket, key)


def validate_bucket(bucket: str, uri: str = "") -> str:
    where = f" in {uri!r}" if uri else ""
    if not MIN_BUCKET_CHARS <= len(bucket) <= MAX_BUCKET_CHARS or not _BUCKET.fullmatch(bucket):
        raise InvalidUriError(
            f"bucket name {bucket!r}{where} must be {MIN_BUCKET_CHARS} to {MAX_BUCKET_CHARS} "
            "lower-case letters, digits, dots or hyphens, starting and ending with a letter "
            "or digit"
        )
    if ".." in bucket:
        raise InvalidUriError(f"bucket name {bucket!r}{where} must not contain '..'")
    return bucket


def key_bytes(key: str) -> int:
    """Length of ``key`` in bytes of UTF-8 (what S3 limits); unencodable text raises."""
    try:
        return len(key.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidUriError(f"key {key!r} is not valid UTF-8 text") from error


def _check_key_length(key: str, shown: str) -> None:
    size = key_bytes(key)
    if size > MAX_KEY_BYTES:
        raise InvalidUriError(
            f"key of {shown!r} is {size} bytes of UTF-8; S3 allows at most {MAX_KEY_BYTES}"
        )


def validate_output_key(key: str, *, what: str = "output key") -> str:
    """Return ``key`` if steno may write an object there, else raise :class:`InvalidUriError`.

    The rules are :func:`steno_api.plan.output_key_problem` (see the module docstring).
    """
    problem = output_key_problem(key, what=what)
    if problem is not None:
        raise InvalidUriError(problem)
    return key


def join_key(prefix: str, relative: str) -> str:
    """``prefix`` (``""`` or ending in ``/``, or a bare folder) joined with ``relative``."""
    if not prefix:
        return relative
    return prefix + relative if prefix.endswith("/") else f"{prefix}/{relative}"
