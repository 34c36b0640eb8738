"""A job's plan as the worker uses it: typed inputs, shards and record ids, read and written.

The plan's document, bytes and rules (output stems, balancing by size, bad
inputs kept with a problem, canonical JSON) live in :mod:`steno_api.plan`,
shared with the operator so the two can never disagree on a byte (the
``planSha256`` of every shard manifest depends on it). This module adds
what only the worker side has: the typed spec
(:class:`~steno_inference.jobs.spec.JobSpec`) and URIs
(:class:`~steno_inference.storage.uri.S3Uri`), listing through
:class:`~steno_inference.storage.client.ObjectStorage`, and reading and
writing the plan object. The shared names are re-exported for callers.

Whoever plans the job calls :func:`plan_job` and :func:`write_plan`; each
pod reads the plan with :func:`read_plan` and works through
``plan.shard(JOB_COMPLETION_INDEX)``. Planning is pure logic over a storage
listing: no Kubernetes, no engine.

* **Written once.** :func:`write_plan` writes create-only: when a plan is
  already there (the operator retried, or two planners raced) that plan
  wins and is returned, so every pod of the job reads the same plan. A plan
  of *another* job at the same place is refused: one output prefix, one job.
* **Never trusted.** :func:`parse_plan` parses the spec the plan carries and
  re-validates every stem as an output key of it before a pod writes there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steno_api.plan import (
    FILE_OVERHEAD_BYTES,
    MAX_INPUTS,
    MAX_PLAN_BYTES,
    PLAN_SCHEMA,
    REASON_INVALID_KEY,
    REASON_MISSING,
    ListedInput,
    PlanDocument,
    PlanEntry,
    PlanFormatError,
    balance,
    build_plan_document,
    canonical_json,
    common_folder,
    folder,
    output_stems,
    parse_plan_document,
)

from steno_inference.jobs import layout
from steno_inference.jobs.spec import JobSpec, JobSpecError, parse_spec
from steno_inference.storage.client import ObjectStorage
from steno_inference.storage.errors import PreconditionFailedError
from steno_inference.storage.lister import Listed, TooManyInputsError, list_prefix, stat_uris
from steno_inference.storage.uri import S3Uri, parse_uri

# The shared names stay importable from here for the worker's callers (mypy's strict
# mode re-exports only what __all__ lists).
__all__ = [
    "FILE_OVERHEAD_BYTES",
    "MAX_INPUTS",
    "MAX_PLAN_BYTES",
    "PLAN_CONTENT_TYPE",
    "PLAN_SCHEMA",
    "REASON_INVALID_KEY",
    "REASON_MISSING",
    "Plan",
    "PlanConflictError",
    "PlanError",
    "PlannedInput",
    "ShardIndexError",
    "balance",
    "build_plan",
    "canonical_json",
    "output_stems",
    "parse_plan",
    "plan_job",
    "read_plan",
    "write_plan",
]

PLAN_CONTENT_TYPE = "application/json"


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
        """The name of ``item``'s commit record: this job, this input, this version of it."""
        return layout.file_id(self.spec.job_id, item.uri, item.etag, item.size)

    def document(self) -> PlanDocument:
        """The plan in the shared format (:mod:`steno_api.plan`), which fixes its bytes."""
        return PlanDocument(
            spec=self.spec.to_dict(),
            shard_count=self.shard_count,
            inputs=tuple(
                PlanEntry(index=item.index, uri=str(item.uri), size=item.size, etag=item.etag,
                          shard=item.shard, stem=item.stem, problem=item.problem,
                          reason=item.reason)
                for item in self.inputs
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.document().to_dict()

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same plan is always the same bytes."""
        return self.document().to_bytes()

    @property
    def sha256(self) -> str:
        return self.document().sha256


# ------------------------------------------------------------------ planning


def plan_job(spec: JobSpec, storage: ObjectStorage) -> Plan:
    """List the job's inputs and assign them to shards (see :mod:`steno_api.plan`)."""
    try:
        if spec.input.prefix is not None:
            listed = list_prefix(storage, spec.input.prefix, spec.input.suffixes, MAX_INPUTS,
                                 exclude=spec.output)
            base = folder(spec.input.prefix.key)
        else:
            listed = stat_uris(storage, spec.input.uris, MAX_INPUTS)
            base = common_folder([item.uri.key for item in listed])
    except TooManyInputsError as error:
        raise JobSpecError(str(error)) from None
    return build_plan(spec, listed, base)


def build_plan(spec: JobSpec, listed: list[Listed], base: str) -> Plan:
    """The plan for inputs already listed (sorted); ``base`` is cut off their keys."""
    document = build_plan_document(
        spec.to_dict(),
        [ListedInput(str(item.uri), item.info.size if item.info else None,
                     item.info.etag if item.info else "")
         for item in listed],
        base,
    )
    # The listing's own S3Uri objects, rather than URIs parsed back from the document.
    inputs = tuple(
        PlannedInput(index=entry.index, uri=item.uri, size=entry.size, etag=entry.etag,
                     shard=entry.shard, stem=entry.stem, problem=entry.problem,
                     reason=entry.reason)
        for entry, item in zip(document.inputs, listed, strict=True)
    )
    return Plan(spec, inputs, document.shard_count)


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
    """The plan in ``data``: the shared format's checks, then the spec and every key re-checked."""
    try:
        document = parse_plan_document(data, where)
    except PlanFormatError as error:
        raise PlanError(str(error)) from None
    try:
        return _plan_from_document(document)
    except (KeyError, TypeError, ValueError) as error:
        raise PlanError(f"{where} is not a valid plan: {error}") from None


def _plan_from_document(document: PlanDocument) -> Plan:
    spec = parse_spec(document.spec)
    inputs: list[PlannedInput] = []
    for entry in document.inputs:
        if entry.stem is not None:
            for fmt in spec.formats:
                layout.output_uri(spec.output, entry.stem, fmt)  # re-validated: never trust a key
        inputs.append(
            PlannedInput(
                index=entry.index,
                uri=parse_uri(entry.uri),
                size=entry.size,
                etag=entry.etag,
                shard=entry.shard,
                stem=entry.stem,
                problem=entry.problem,
                reason=entry.reason,
            )
        )
    return Plan(spec, tuple(inputs), document.shard_count)
