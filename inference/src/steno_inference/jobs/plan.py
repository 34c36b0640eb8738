"""A job's plan: its inputs (sorted, with sizes and ETags), their output stems, their shards.

Whoever plans the job (the operator, before it creates the Kubernetes Job)
calls :func:`plan_job` and :func:`write_plan`; each pod reads the plan with
:func:`read_plan` and works through ``plan.shard(JOB_COMPLETION_INDEX)``.
Planning is pure logic over a storage listing: no Kubernetes, no engine.

* **Deterministic.** Inputs are sorted by URI; output stems, shard
  assignment and the plan's bytes follow from that list and the spec alone.
* **Balanced by size.** Each input weighs its size plus
  :data:`FILE_OVERHEAD_BYTES` (the fixed cost of a file: requests, decoder
  start-up, writing outputs), and the heaviest input goes to the lightest
  shard first (LPT scheduling), ties to the lowest shard. No shard exceeds
  the lightest by more than one input's weight. A job has
  ``min(parallelism, inputs)`` shards, and one (empty) shard when it has no
  inputs, so even an empty job ends with a manifest.
* **Written once.** :func:`write_plan` writes create-only: when a plan is
  already there (the operator retried, or two planners raced) that plan
  wins and is returned, so every pod of the job reads the same plan. A plan
  of *another* job at the same place is refused: one output prefix, one job.
* **Bad inputs are kept.** A named object that does not exist, or an input
  whose output key would be invalid (``..``, too long, inside ``_steno/``),
  stays in the plan with a ``problem``; the worker records it as a failed
  file in the manifest, and the other inputs go on.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from steno_inference.formats import unique_stems
from steno_inference.jobs import layout
from steno_inference.jobs.spec import JobSpec, JobSpecError, parse_spec
from steno_inference.storage.client import ObjectStorage
from steno_inference.storage.errors import PreconditionFailedError
from steno_inference.storage.lister import Listed, TooManyInputsError, list_prefix, stat_uris
from steno_inference.storage.uri import InvalidUriError, S3Uri, parse_uri

PLAN_SCHEMA = "steno.dev/plan/v1"
MAX_INPUTS = 100_000  # per job: the plan stays a few tens of MB; split larger jobs
MAX_PLAN_BYTES = 64 * 1024 * 1024  # a plan larger than this is refused when read
FILE_OVERHEAD_BYTES = 1024 * 1024  # per-file cost in bytes of input, for balancing
PLAN_CONTENT_TYPE = "application/json"

REASON_MISSING = "missing"  # a named input does not exist
REASON_INVALID_KEY = "invalid_output_key"  # its output key breaks the key rules


class PlanError(ValueError):
    """A plan cannot be made, read or used; retrying will not help."""


class PlanConflictError(PlanError):
    """Another job's plan already occupies this output prefix."""


class ShardIndexError(PlanError):
    """The shard asked for does not exist in the plan."""


@dataclass(frozen=True)
class PlannedInput:
    """One input of the job, where it goes and which shard transcribes it."""

    index: int  # position in the plan's sorted input list
    uri: S3Uri
    size: int  # bytes, as listed (0 when missing)
    etag: str  # as listed: every read of the input must match it
    shard: int
    stem: str | None  # outputs are <output>/<stem>.<ext>; None when it has a problem
    problem: str | None = None  # one line: why this input cannot be transcribed
    reason: str | None = None  # a short code for the problem (REASON_*)


@dataclass(frozen=True)
class Plan:
    """The whole job as its pods see it."""

    spec: JobSpec
    inputs: tuple[PlannedInput, ...]
    shard_count: int

    def shard(self, index: int) -> tuple[PlannedInput, ...]:
        """The inputs of shard ``index`` in plan order; a bad index raises ShardIndexError."""
        if isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < self.shard_count
        ):
            raise ShardIndexError(
                f"shard {index!r} does not exist: the plan has shards 0 to {self.shard_count - 1}"
            )
        return tuple(item for item in self.inputs if item.shard == index)

    def record_id(self, item: PlannedInput) -> str:
        return layout.file_id(self.spec.job_id, item.uri, item.etag, item.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "spec": self.spec.to_dict(),
            "shardCount": self.shard_count,
            "inputs": [
                {
                    "uri": str(item.uri),
                    "size": item.size,
                    "etag": item.etag,
                    "shard": item.shard,
                    "stem": item.stem,
                    "problem": item.problem,
                    "reason": item.reason,
                }
                for item in self.inputs
            ],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same plan is always the same bytes."""
        return canonical_json(self.to_dict())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def canonical_json(data: Any) -> bytes:
    return (
        json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                   allow_nan=False)
        + "\n"
    ).encode("utf-8")


# ------------------------------------------------------------------ planning


def plan_job(spec: JobSpec, storage: ObjectStorage) -> Plan:
    """List the job's inputs and assign them to shards (see the module docstring)."""
    try:
        if spec.input.prefix is not None:
            listed = list_prefix(storage, spec.input.prefix, spec.input.suffixes, MAX_INPUTS,
                                 exclude=spec.output)
            base = _folder(spec.input.prefix.key)
        else:
            listed = stat_uris(storage, spec.input.uris, MAX_INPUTS)
            base = _common_folder([item.uri.key for item in listed])
    except TooManyInputsError as error:
        raise JobSpecError(str(error)) from None
    return build_plan(spec, listed, base)


def build_plan(spec: JobSpec, listed: list[Listed], base: str) -> Plan:
    """The plan for inputs already listed (sorted); ``base`` is cut off their keys."""
    relative = [item.uri.key[len(base):] if item.uri.key.startswith(base) else item.uri.key
                for item in listed]
    stems = output_stems(relative)
    weights = [(item.info.size if item.info else 0) + FILE_OVERHEAD_BYTES for item in listed]
    shard_count = max(1, min(spec.parallelism, len(listed)))
    shards = balance(weights, shard_count)
    inputs: list[PlannedInput] = []
    for index, (item, stem, shard) in enumerate(zip(listed, stems, shards, strict=True)):
        problem, reason = _problem(spec, item, stem)
        inputs.append(
            PlannedInput(
                index=index,
                uri=item.uri,
                size=item.info.size if item.info else 0,
                etag=item.info.etag if item.info else "",
                shard=shard,
                stem=None if problem else stem,
                problem=problem,
                reason=reason,
            )
        )
    return Plan(spec, tuple(inputs), shard_count)


def _problem(spec: JobSpec, item: Listed, stem: str) -> tuple[str | None, str | None]:
    if item.info is None:
        return "no such object (it was named in the job but is not in the bucket)", REASON_MISSING
    if layout.is_reserved(stem):
        return f"its output name {stem!r} falls in steno's reserved folder", REASON_INVALID_KEY
    try:
        for fmt in spec.formats:
            layout.output_uri(spec.output, stem, fmt)
    except InvalidUriError as error:
        return f"cannot name its output: {error}", REASON_INVALID_KEY
    return None, None


def balance(weights: list[int], shard_count: int) -> list[int]:
    """The shard of each item: heaviest first onto the lightest shard (ties: lowest index)."""
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


def output_stems(relative_keys: list[str]) -> list[str]:
    """``folder/name.ext`` → ``folder/name``, made unique within each folder.

    Uniqueness (and the suffixes ``-1``, ``-2`` … for repeated names such as
    ``a.wav`` and ``a.mp3``) follows :func:`steno_inference.formats.unique_stems`,
    which hands suffixes out in sorted order: the same inputs always get the
    same stems.
    """
    by_folder: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(relative_keys):
        by_folder[_folder(key)].append(index)
    stems = [""] * len(relative_keys)
    for folder, indexes in by_folder.items():
        names = [relative_keys[i][len(folder):] for i in indexes]
        for i, stem in zip(indexes, unique_stems(names), strict=True):
            stems[i] = folder + stem
    return stems


def _folder(key: str) -> str:
    """The key up to and including its last ``/`` (``""`` for a key without one)."""
    return key[: key.rfind("/") + 1]


def _common_folder(keys: list[str]) -> str:
    """The longest folder (whole ``/``-separated segments) that holds every key."""
    if not keys:
        return ""
    folders = [key.split("/")[:-1] for key in keys]
    common: list[str] = []
    for segments in zip(*folders, strict=False):
        if any(segment != segments[0] for segment in segments):
            break
        common.append(segments[0])
    return "".join(segment + "/" for segment in common)


# --------------------------------------------------------------- persistence


def write_plan(plan: Plan, storage: ObjectStorage, uri: S3Uri | None = None) -> Plan:
    """Store ``plan`` create-only (default: ``<output>/_steno/plan.json``); return the winner.

    If a plan of the same job is already there, that plan is returned (and
    this one dropped); a plan of another job raises :class:`PlanConflictError`.
    """
    target = uri or layout.plan_uri(plan.spec.output)
    try:
        storage.put(target, plan.to_bytes(), create_only=True, content_type=PLAN_CONTENT_TYPE)
        return plan
    except PreconditionFailedError:
        existing = read_plan(storage, target)
    if existing.spec.job_id != plan.spec.job_id:
        raise PlanConflictError(
            f"{target} already holds the plan of job {existing.spec.job_id!r}; "
            f"job {plan.spec.job_id!r} needs an output prefix of its own"
        )
    return existing


def read_plan(storage: ObjectStorage, uri: S3Uri) -> Plan:
    """The plan stored at ``uri``; a malformed plan raises :class:`PlanError`."""
    return parse_plan(storage.get_bytes(uri, MAX_PLAN_BYTES), str(uri))


def parse_plan(data: bytes, where: str = "plan") -> Plan:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise PlanError(f"{where} is not valid JSON: {error}") from None
    try:
        return _plan_from_dict(raw)
    except (KeyError, TypeError, ValueError) as error:
        raise PlanError(f"{where} is not a valid plan: {error}") from None


def _plan_from_dict(raw: Any) -> Plan:
    if not isinstance(raw, dict) or raw.get("schema") != PLAN_SCHEMA:
        raise PlanError(f"not a plan of schema {PLAN_SCHEMA}")
    spec = parse_spec(raw["spec"])
    shard_count = raw["shardCount"]
    if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
        raise PlanError(f"shardCount must be a positive integer, not {shard_count!r}")
    inputs: list[PlannedInput] = []
    for index, item in enumerate(raw["inputs"]):
        shard = int(item["shard"])
        if not 0 <= shard < shard_count:
            raise PlanError(f"input {index} is assigned to shard {shard} of {shard_count}")
        stem = item.get("stem")
        problem = item.get("problem")
        if stem is None and problem is None:
            raise PlanError(f"input {index} has neither a stem nor a problem")
        if stem is not None:
            for fmt in spec.formats:
                layout.output_uri(spec.output, str(stem), fmt)  # re-validated: never trust a key
        inputs.append(
            PlannedInput(
                index=index,
                uri=parse_uri(str(item["uri"])),
                size=int(item["size"]),
                etag=str(item["etag"]),
                shard=shard,
                stem=None if stem is None else str(stem),
                problem=None if problem is None else str(problem),
                reason=None if item.get("reason") is None else str(item["reason"]),
            )
        )
    return Plan(spec, tuple(inputs), shard_count)
