"""Planning a job: list its inputs, split them into shards, write the plan object once.

The plan is the contract between the operator and the job's pods: each pod
reads it and works through shard ``$JOB_COMPLETION_INDEX``. Its format is
the worker's (``steno_inference.jobs.plan``, schema ``steno.dev/plan/v1``;
see ``docs/jobs.md``), which the operator must not import, so this module
builds the same document from the same rules:

* inputs sorted (a prefix listing by key, without folder markers, filtered
  by suffix, without anything under the output prefix; named URIs by
  bucket and key, each read with HEAD, a missing one kept with a problem);
* output stems: the key relative to the input folder, without extension,
  made unique per folder (``a.wav`` and ``a.mp3`` → ``a`` and ``a-1``);
* ``min(parallelism, inputs)`` shards (at least one), balanced by size plus
  a per-file overhead, heaviest input first onto the lightest shard;
* canonical JSON (sorted keys, no spaces, UTF-8, a final newline), so the
  plan's SHA-256 is what the worker computes and writes into each shard
  manifest (``planSha256``) — the check that ties results to this plan.

``tests/unit/test_operator_planning.py`` builds plans here and with the
worker's module from the same listings and requires identical bytes.

The plan is written create-only at ``<output>/_steno/plan.json``. A plan
already there (the operator restarted after writing it, or another planner
won the race) is adopted when it names this job's UID; a plan of another
job means the output prefix is taken, which fails the job (one output
prefix, one job).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from steno_operator.manifests import RESERVED_DIR, normalized_prefix, plan_uri
from steno_operator.spec import TranscriptionJobSpec
from steno_operator.storage import ObjectInfo, ObjectStore, split_uri

PLAN_SCHEMA = "steno.dev/plan/v1"
MAX_INPUTS = 100_000  # per job (the worker's cap): the plan stays a few tens of MB
MAX_PLAN_BYTES = 64 * 1024 * 1024
FILE_OVERHEAD_BYTES = 1024 * 1024  # a file's fixed cost, in bytes of input, for balancing
MAX_KEY_BYTES = 1024  # S3's limit on a key
FALLBACK_STEM = "audio"  # for an input whose name yields no usable stem
REASON_MISSING = "missing"
REASON_INVALID_KEY = "invalid_output_key"
MISSING_PROBLEM = "no such object (it was named in the job but is not in the bucket)"
_WHITESPACE_RUN = re.compile(r"\s+")


class PlanningError(RuntimeError):
    """The job cannot be planned; retrying will not help (the job fails)."""


class TooManyInputsError(PlanningError):
    pass


class PlanConflictError(PlanningError):
    """The output prefix holds the plan of another job."""


class InvalidPlanError(PlanningError):
    """The object where the plan belongs is not a plan."""


@dataclass(frozen=True)
class Listed:
    """An input as listed: ``info`` None when a named object does not exist."""

    uri: str
    info: ObjectInfo | None


@dataclass(frozen=True)
class PlannedInput:
    index: int
    uri: str
    shard: int
    stem: str | None
    problem: str | None


@dataclass(frozen=True)
class PlanInfo:
    """A stored plan, as the operator needs it."""

    uri: str
    sha256: str  # of the stored bytes: what shard manifests must name
    job_id: str
    output: str  # the normalized output prefix
    formats: tuple[str, ...]
    shards: int
    inputs: tuple[PlannedInput, ...]

    @property
    def files(self) -> int:
        return len(self.inputs)

    def shard_inputs(self, shard: int) -> tuple[PlannedInput, ...]:
        return tuple(item for item in self.inputs if item.shard == shard)


# --- the worker's rules, restated -----------------------------------------------


def canonical_json(data: Any) -> bytes:
    """The plan's bytes: the same document is always the same bytes."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    return (text + "\n").encode("utf-8")


def normalized_uri(uri: str) -> str:
    """``s3://bucket`` → ``s3://bucket/``; otherwise unchanged (how the worker prints URIs)."""
    bucket, key = split_uri(uri)
    return f"s3://{bucket}/{key}"


def base_stem(name: str) -> str:
    """``talk.wav`` → ``talk``; hidden or empty names fall back to :data:`FALLBACK_STEM`."""
    base = PurePosixPath(name.replace("\\", "/")).name
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _WHITESPACE_RUN.sub(" ", stem).strip().lstrip(".")
    return stem or FALLBACK_STEM


def unique_stems(names: Sequence[str]) -> list[str]:
    """One stem per name, repeats suffixed ``-1``, ``-2`` … in sorted order, case-insensitive."""
    order = sorted(range(len(names)), key=lambda i: (names[i], i))
    base = {i: base_stem(names[i]) for i in order}
    taken: set[str] = set()
    stems: dict[int, str] = {}
    for i in order:  # bare stems first, so "x-1.wav" keeps its name next to two "x.*"
        if base[i].casefold() not in taken:
            taken.add(base[i].casefold())
            stems[i] = base[i]
    for i in order:
        if i in stems:
            continue
        n = 1
        while f"{base[i]}-{n}".casefold() in taken:
            n += 1
        stems[i] = f"{base[i]}-{n}"
        taken.add(stems[i].casefold())
    return [stems[i] for i in range(len(names))]


def folder(key: str) -> str:
    """The key up to and including its last ``/`` (``""`` without one)."""
    return key[: key.rfind("/") + 1]


def output_stems(relative_keys: Sequence[str]) -> list[str]:
    """``folder/name.ext`` → ``folder/name``, unique within each folder."""
    by_folder: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(relative_keys):
        by_folder[folder(key)].append(index)
    stems = [""] * len(relative_keys)
    for parent, indexes in by_folder.items():
        names = [relative_keys[i][len(parent):] for i in indexes]
        for i, stem in zip(indexes, unique_stems(names), strict=True):
            stems[i] = parent + stem
    return stems


def balance(weights: Sequence[int], shard_count: int) -> list[int]:
    """Each item's shard: heaviest first onto the lightest shard (ties: lowest index)."""
    if shard_count < 1:
        raise ValueError(f"shard count must be at least 1, not {shard_count}")
    loads = [(0, shard) for shard in range(shard_count)]
    heapq.heapify(loads)
    assigned = [0] * len(weights)
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, shard = heapq.heappop(loads)
        assigned[index] = shard
        heapq.heappush(loads, (load + weights[index], shard))
    return assigned


def output_key_problem(key: str) -> str | None:
    """Why steno may not write ``key`` (the worker's ``validate_output_key``), or None."""
    what = "output key"
    if not key:
        return f"{what} is empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return f"key {key!r} is not valid UTF-8 text"
    if size > MAX_KEY_BYTES:
        shown = key[:80] + ("…" if len(key) > 80 else "")
        return f"key of {shown!r} is {size} bytes of UTF-8; S3 allows at most {MAX_KEY_BYTES}"
    if key.startswith("/"):
        return f"{what} {key!r} is absolute (starts with '/')"
    if "\\" in key:
        return f"{what} {key!r} contains a backslash"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in key):
        return f"{what} {key!r} contains a control character"
    for segment in key.split("/"):
        if not segment:
            return f"{what} {key!r} has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"{what} {key!r} contains a {segment!r} segment"
    return None


def _problem(output: str, formats: Sequence[str], item: Listed, stem: str
             ) -> tuple[str | None, str | None]:
    if item.info is None:
        return MISSING_PROBLEM, REASON_MISSING
    if stem == RESERVED_DIR or stem.startswith(RESERVED_DIR + "/"):
        return f"its output name {stem!r} falls in steno's reserved folder", REASON_INVALID_KEY
    _, output_key = split_uri(output)
    for fmt in formats:
        problem = output_key_problem(output_key + f"{stem}.{fmt}")
        if problem is not None:
            return f"cannot name its output: {problem}", REASON_INVALID_KEY
    return None, None


def worker_spec(spec: TranscriptionJobSpec, job_id: str) -> dict[str, Any]:
    """The spec as the plan carries it, with URIs normalized as the worker prints them."""
    data = spec.worker_spec(job_id)
    data["output"]["uri"] = normalized_prefix(spec.output.uri)
    if "prefix" in data["input"]:
        data["input"]["prefix"] = normalized_uri(data["input"]["prefix"])
    return data


def build_plan(spec: dict[str, Any], listed: Sequence[Listed], base: str) -> dict[str, Any]:
    """The plan document for inputs already listed and sorted; ``base`` is cut off their keys."""
    keys = [split_uri(item.uri)[1] for item in listed]
    relative = [key[len(base):] if key.startswith(base) else key for key in keys]
    stems = output_stems(relative)
    weights = [(item.info.size if item.info else 0) + FILE_OVERHEAD_BYTES for item in listed]
    shard_count = max(1, min(int(spec["parallelism"]), len(listed)))
    shards = balance(weights, shard_count)
    output = spec["output"]["uri"]
    formats = spec["output"]["formats"]
    inputs = []
    for item, stem, shard in zip(listed, stems, shards, strict=True):
        problem, reason = _problem(output, formats, item, stem)
        inputs.append({
            "uri": item.uri,
            "size": item.info.size if item.info else 0,
            "etag": item.info.etag if item.info else "",
            "shard": shard,
            "stem": None if problem else stem,
            "problem": problem,
            "reason": reason,
        })
    return {"schema": PLAN_SCHEMA, "spec": spec, "shardCount": shard_count, "inputs": inputs}


# --- listing -------------------------------------------------------------------


def list_inputs(store: ObjectStore, spec: TranscriptionJobSpec) -> tuple[list[Listed], str]:
    """The job's inputs, sorted, and the folder their output names are relative to."""
    if spec.input.prefix is not None:
        prefix = normalized_uri(spec.input.prefix)
        bucket, key = split_uri(prefix)
        out_bucket, out_key = split_uri(normalized_prefix(spec.output.uri))
        suffixes = [s.lower() for s in spec.input.suffixes]
        found: list[Listed] = []
        for info in store.list(prefix):
            if bucket == out_bucket and info.key.startswith(out_key):
                continue  # the job's own outputs are never its inputs
            if suffixes and not any(info.key.lower().endswith(s) for s in suffixes):
                continue
            found.append(Listed(f"s3://{bucket}/{info.key}", info))
            if len(found) > MAX_INPUTS:
                raise TooManyInputsError(
                    f"{prefix} holds more than {MAX_INPUTS} matching objects; "
                    "split the job into several")
        return found, folder(key)
    named = sorted({split_uri(uri) for uri in spec.input.uris})
    if len(named) > MAX_INPUTS:
        raise TooManyInputsError(f"{len(named)} inputs named; a job may have {MAX_INPUTS}")
    listed = [Listed(f"s3://{bucket}/{key}", store.head(f"s3://{bucket}/{key}"))
              for bucket, key in named]
    keys = [key for _, key in named]
    # Character-wise on purpose, as the worker does: the folder is cut at the last "/".
    return listed, folder(os.path.commonprefix(keys)) if keys else ""  # noqa: RUF071


# --- the stored plan -----------------------------------------------------------


def read_plan(data: bytes, uri: str) -> PlanInfo:
    """A stored plan's summary; anything that is not a plan raises :class:`InvalidPlanError`."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("schema") != PLAN_SCHEMA:
            raise InvalidPlanError(f"{uri} is not a plan of schema {PLAN_SCHEMA}")
        spec = raw["spec"]
        shards = int(raw["shardCount"])
        inputs = tuple(
            PlannedInput(index=i, uri=str(item["uri"]), shard=int(item["shard"]),
                         stem=None if item.get("stem") is None else str(item["stem"]),
                         problem=None if item.get("problem") is None else str(item["problem"]))
            for i, item in enumerate(raw["inputs"])
        )
        return PlanInfo(
            uri=uri,
            sha256=hashlib.sha256(data).hexdigest(),
            job_id=str(spec["jobId"]),
            output=normalized_prefix(str(spec["output"]["uri"])),
            formats=tuple(str(f) for f in spec["output"]["formats"]),
            shards=shards,
            inputs=inputs,
        )
    except InvalidPlanError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidPlanError(f"{uri} is not a valid plan: {error!r}") from None


def _adopt(data: bytes, uri: str, job_id: str) -> PlanInfo:
    plan = read_plan(data, uri)
    if plan.job_id != job_id:
        raise PlanConflictError(
            f"{uri} holds the plan of job {plan.job_id}; each job needs an output prefix "
            "of its own")
    return plan


def ensure_plan(store: ObjectStore, spec: TranscriptionJobSpec, job_id: str) -> PlanInfo:
    """The job's plan: the stored one if there is one, else a new one written create-only.

    Blocking (storage calls). :class:`PlanningError` means the job cannot run;
    :class:`~steno_operator.storage.StorageError` may be retried.
    """
    uri = plan_uri(spec.output.uri)
    existing = store.get(uri, MAX_PLAN_BYTES)
    if existing is not None:
        return _adopt(existing, uri, job_id)
    listed, base = list_inputs(store, spec)
    data = canonical_json(build_plan(worker_spec(spec, job_id), listed, base))
    if len(data) > MAX_PLAN_BYTES:
        raise TooManyInputsError(f"the plan would be {len(data)} bytes; split the job")
    if store.put_create_only(uri, data):
        return read_plan(data, uri)
    # Someone wrote it between our read and our write: theirs wins.
    winner = store.get(uri, MAX_PLAN_BYTES)
    if winner is None:
        raise InvalidPlanError(f"{uri} was refused as existing but cannot be read")
    return _adopt(winner, uri, job_id)
