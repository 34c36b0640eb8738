"""Where a job's objects live under its output prefix; every key derives from the job.

::

    <output>/<stem>.<ext>                        the transcripts users read
    <output>/_steno/plan.json                    the plan (inputs, sizes, shards)
    <output>/_steno/records/<file id>.json       one commit record per input
    <output>/_steno/manifests/shard-<NNNNN>.json one manifest per shard

``<stem>`` is the input's key relative to the job's input prefix, without its
extension (``talks/day1/keynote.wav`` → ``talks/day1/keynote``), made unique
by the plan; ``<file id>`` hashes the job's UID with the input's URI, ETag and
size, so a changed input (or another job) never matches an old record.
``_steno/`` is reserved: an input whose stem would fall in it is refused.
"""

from __future__ import annotations

import hashlib

from steno_api.plan import PLAN_KEY
from steno_api.plan import RESERVED_DIR as RESERVED_DIR
from steno_api.plan import is_reserved as is_reserved

from steno_inference.options import OutputFormat
from steno_inference.storage.uri import S3Uri

# The reserved folder and the plan's place are part of the plan format the operator
# shares (steno_api.plan); the records and manifests below are the worker's own.
PLAN_NAME = PLAN_KEY
RECORDS_DIR = f"{RESERVED_DIR}/records"
MANIFESTS_DIR = f"{RESERVED_DIR}/manifests"
FILE_ID_HEX_CHARS = 40  # 160 bits of SHA-256: no collision among any job's inputs
SHARD_DIGITS = 5  # shard-00000 … shard-99999 sort in order


def plan_uri(output: S3Uri) -> S3Uri:
    """The default home of a job's plan."""
    return output.child(PLAN_NAME)


def file_id(job_id: str, input_uri: S3Uri, etag: str, size: int) -> str:
    """A stable name for "this input, this version, in this job"."""
    text = "\n".join((job_id, str(input_uri), etag, str(size)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FILE_ID_HEX_CHARS]


def records_prefix(output: S3Uri) -> S3Uri:
    return S3Uri(output.bucket, f"{output.key}{RECORDS_DIR}/")


def record_uri(output: S3Uri, record_id: str) -> S3Uri:
    return output.child(f"{RECORDS_DIR}/{record_id}.json")


def manifest_uri(output: S3Uri, shard: int) -> S3Uri:
    return output.child(f"{MANIFESTS_DIR}/shard-{shard:0{SHARD_DIGITS}d}.json")


def output_uri(output: S3Uri, stem: str, fmt: OutputFormat) -> S3Uri:
    """The object ``<output>/<stem>.<fmt>``, validated as a key steno may write."""
    return output.child(f"{stem}.{fmt}")
