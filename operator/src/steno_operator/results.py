"""A job's results: each shard manifest checked against the plan, then one result manifest.

Each pod commits its shard by writing ``<output>/_steno/manifests/shard-NNNNN.json``
(create-only, after every output it names; schema
``steno.dev/shard-manifest/v1``, see ``docs/jobs.md``). When the Job is
complete, the operator verifies every shard manifest before it calls the job
Succeeded:

* it belongs to this job (``jobId``) and to this plan (``planSha256`` is the
  SHA-256 of the stored plan's bytes), and is the manifest of the shard it is
  named after;
* it lists exactly the plan's inputs of that shard, in plan order, each
  ``succeeded`` (with one output per requested format, at the key the plan's
  stem gives) or ``failed`` (with a reason);
* every output it names exists with the size it states, and, for objects
  written in one part, the store's ETag equals the stated MD5.

Then it writes the **result manifest** ``<output>/_steno/manifest.json``
create-only: every input once, with its status, outputs and checksums, plus
each shard manifest's SHA-256. Its bytes are a function of the shard
manifests alone (no timestamps), so an operator restarted half-way writes
the same document; finding it already written, it checks the document is
this job's and uses it. Nothing is ever overwritten or deleted.

Pure checks (:func:`verify_shard_manifest`, :func:`result_manifest`) are
separate from the storage calls (:func:`collect_results`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from steno_operator.manifests import JobIdentity, result_manifest_uri, shard_manifest_uri
from steno_operator.planning import PlanInfo, canonical_json
from steno_operator.storage import ObjectStore, StorageError

SHARD_MANIFEST_SCHEMA = "steno.dev/shard-manifest/v1"
RESULT_MANIFEST_SCHEMA = "steno.dev/job-manifest/v1"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # the worker's own bound
OUTPUT_CHECK_THREADS = 8  # HEADs in flight while checking outputs
AUDIO_SUM_TOLERANCE_S = 0.01  # the summary's audioS is rounded to milliseconds
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class ManifestInvalidError(ValueError):
    """A shard manifest is missing, malformed, or does not match the plan: the job fails."""


@dataclass(frozen=True)
class OutputRef:
    format: str
    uri: str
    size: int
    sha256: str
    md5: str


@dataclass(frozen=True)
class FileResult:
    index: int
    uri: str
    status: str  # succeeded | failed
    duration_s: float
    outputs: tuple[OutputRef, ...]
    failure_reason: str = ""
    failure_message: str = ""


@dataclass(frozen=True)
class ShardResult:
    """A verified shard manifest."""

    shard: int
    uri: str
    sha256: str
    files: tuple[FileResult, ...]

    @property
    def audio_s(self) -> float:
        return sum(f.duration_s for f in self.files)

    @property
    def failed(self) -> tuple[FileResult, ...]:
        return tuple(f for f in self.files if f.status == "failed")


def _expect(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ManifestInvalidError(f"{where}: {message}")


def verify_shard_manifest(data: bytes, uri: str, plan: PlanInfo, shard: int) -> ShardResult:
    """The manifest's content once it passes every check of the module docstring.

    Raises :class:`ManifestInvalidError` naming the first broken rule.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestInvalidError(f"{uri} is not valid JSON: {error}") from None
    _expect(isinstance(raw, dict) and raw.get("schema") == SHARD_MANIFEST_SCHEMA, uri,
            f"not a manifest of schema {SHARD_MANIFEST_SCHEMA}")
    _expect(raw.get("jobId") == plan.job_id, uri, f"belongs to job {raw.get('jobId')!r}")
    _expect(raw.get("planSha256") == plan.sha256, uri, "was made from another plan")
    _expect(raw.get("shard") == shard and raw.get("shardCount") == plan.shards, uri,
            f"is shard {raw.get('shard')!r} of {raw.get('shardCount')!r}, "
            f"not {shard} of {plan.shards}")
    _expect(sorted(raw.get("formats") or []) == sorted(plan.formats), uri,
            "lists other formats than the plan")
    files = raw.get("files")
    expected = plan.shard_inputs(shard)
    _expect(isinstance(files, list) and len(files) == len(expected), uri,
            f"lists {len(files) if isinstance(files, list) else 'no'} files; "
            f"the plan gives the shard {len(expected)}")
    results = []
    for item, planned in zip(files, expected, strict=True):
        where = f"{uri} file {planned.index}"
        try:
            results.append(_file_result(item, planned.index, planned.uri, planned.stem,
                                        planned.problem, plan, where))
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ManifestInvalidError):
                raise
            raise ManifestInvalidError(f"{where}: malformed entry ({error!r})") from None
    summary = raw.get("summary") or {}
    audio_s = sum(r.duration_s for r in results)
    _expect(summary.get("files") == len(results)
            and summary.get("failed") == sum(r.status == "failed" for r in results)
            and abs(float(summary.get("audioS", -1)) - audio_s) <= AUDIO_SUM_TOLERANCE_S,
            uri, "its summary does not add up")
    return ShardResult(shard, uri, hashlib.sha256(data).hexdigest(), tuple(results))


def _file_result(item: Any, index: int, planned_uri: str, stem: str | None,
                 problem: str | None, plan: PlanInfo, where: str) -> FileResult:
    _expect(isinstance(item, dict), where, "is not an object")
    _expect(item["index"] == index and item["uri"] == planned_uri, where,
            f"is {item.get('uri')!r} (index {item.get('index')!r}); the plan says {planned_uri}")
    status = item["status"]
    duration = float(item["durationS"])
    _expect(duration >= 0, where, "has a negative duration")
    if status == "failed":
        failure = item["failure"]
        _expect(isinstance(failure, dict) and bool(failure.get("reason")), where,
                "failed without a reason")
        return FileResult(index, planned_uri, status, duration, (),
                          str(failure["reason"]), str(failure.get("message", "")))
    _expect(status == "succeeded", where, f"has status {status!r}")
    _expect(problem is None and stem is not None, where,
            "succeeded although the plan gave it a problem")
    outputs = []
    for output in item["outputs"]:
        fmt = str(output["format"])
        expected_uri = f"{plan.output}{stem}.{fmt}"
        _expect(output["uri"] == expected_uri, where,
                f"names output {output['uri']!r}, not {expected_uri}")
        size = int(output["size"])
        sha256, md5 = str(output["sha256"]), str(output["md5"])
        _expect(size >= 0 and bool(_HEX64.match(sha256)) and bool(_HEX32.match(md5)), where,
                f"has malformed checksums for {fmt}")
        outputs.append(OutputRef(fmt, expected_uri, size, sha256, md5))
    _expect(sorted(o.format for o in outputs) == sorted(plan.formats), where,
            "does not have exactly one output per format")
    return FileResult(index, planned_uri, status, duration, tuple(outputs))


def output_problem(output: OutputRef, size: int | None, etag: str | None) -> str | None:
    """Why a stored output does not match its manifest entry, or None."""
    if size is None:
        return f"{output.uri} is missing"
    if size != output.size:
        return f"{output.uri} is {size} bytes; the manifest says {output.size}"
    plain = (etag or "").strip('"')
    # A multipart ETag ("<md5 of md5s>-<parts>") is not the content's MD5: size only.
    if plain and "-" not in plain and _HEX32.match(plain) and plain != output.md5:
        return f"{output.uri} has MD5 {plain}; the manifest says {output.md5}"
    return None


def result_manifest(identity: JobIdentity, plan: PlanInfo,
                    shards: Sequence[ShardResult]) -> dict[str, Any]:
    """The job's result manifest (deterministic: no clock in it)."""
    files = [f for shard in sorted(shards, key=lambda s: s.shard) for f in shard.files]
    files.sort(key=lambda f: f.index)
    failed = sum(f.status == "failed" for f in files)
    return {
        "schema": RESULT_MANIFEST_SCHEMA,
        "jobId": plan.job_id,
        "job": {"namespace": identity.namespace, "name": identity.name},
        "plan": {"uri": plan.uri, "sha256": plan.sha256},
        "formats": list(plan.formats),
        "shards": [{"shard": s.shard, "manifest": s.uri, "sha256": s.sha256}
                   for s in sorted(shards, key=lambda s: s.shard)],
        "summary": {"files": len(files), "succeeded": len(files) - failed, "failed": failed,
                    "audioS": round(sum(f.duration_s for f in files), 3)},
        "files": [
            {
                "uri": f.uri,
                "status": f.status,
                "durationS": f.duration_s,
                "outputs": [{"format": o.format, "uri": o.uri, "size": o.size,
                             "sha256": o.sha256} for o in f.outputs],
                "failure": ({"reason": f.failure_reason, "message": f.failure_message}
                            if f.status == "failed" else None),
            }
            for f in files
        ],
    }


# --- storage ---------------------------------------------------------------------


def read_shard(store: ObjectStore, plan: PlanInfo, shard: int) -> ShardResult | None:
    """The verified manifest of ``shard``, None while it is not written. Blocking."""
    uri = shard_manifest_uri(plan.output, shard)
    data = store.get(uri, MAX_MANIFEST_BYTES)
    if data is None:
        return None
    return verify_shard_manifest(data, uri, plan, shard)


def check_outputs(store: ObjectStore, shards: Sequence[ShardResult]) -> None:
    """HEAD every output the manifests name; the first mismatch raises ManifestInvalidError."""
    outputs = [o for shard in shards for f in shard.files for o in f.outputs]

    def check(output: OutputRef) -> str | None:
        info = store.head(output.uri)
        return output_problem(output, None if info is None else info.size,
                              None if info is None else info.etag)

    with ThreadPoolExecutor(OUTPUT_CHECK_THREADS, thread_name_prefix="steno-head") as pool:
        for problem in pool.map(check, outputs):
            if problem is not None:
                raise ManifestInvalidError(problem)


def commit_result(store: ObjectStore, identity: JobIdentity, plan: PlanInfo,
                  cached: dict[int, ShardResult]) -> str:
    """Verify every shard, then write (or adopt) the result manifest; returns its URI.

    ``cached`` holds shards verified earlier (progress reads them as they
    finish) and is filled in. Blocking. A missing shard manifest raises
    :class:`ManifestInvalidError` (the Job said every shard completed);
    storage trouble raises :class:`~steno_operator.storage.StorageError`.
    """
    for shard in range(plan.shards):
        if shard not in cached:
            result = read_shard(store, plan, shard)
            if result is None:
                raise ManifestInvalidError(
                    f"the Job completed but {shard_manifest_uri(plan.output, shard)} is missing")
            cached[shard] = result
    shards = [cached[s] for s in range(plan.shards)]
    check_outputs(store, shards)
    uri = result_manifest_uri(plan.output)
    data = canonical_json(result_manifest(identity, plan, shards))
    if store.put_create_only(uri, data):
        return uri
    existing = store.get(uri, MAX_MANIFEST_BYTES)
    if existing is None:
        raise StorageError(uri, "refused as existing but cannot be read", retryable=True)
    try:
        document = json.loads(existing)
    except ValueError:
        document = None
    if (not isinstance(document, dict) or document.get("jobId") != plan.job_id
            or document.get("plan", {}).get("sha256") != plan.sha256):
        raise ManifestInvalidError(f"{uri} exists and is not this job's result manifest")
    return uri
