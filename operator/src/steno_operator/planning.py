"""Planning a job: list its inputs, split them into shards, write the plan object once.

The plan is the contract between the operator and the job's pods: each pod
reads it and works through shard ``$JOB_COMPLETION_INDEX``, and each shard
manifest names the SHA-256 of its bytes (``planSha256``). Its format and
rules (schema ``steno.dev/plan/v1``: output stems, shards balanced by size,
bad inputs kept with a problem, canonical JSON; see ``docs/jobs.md``) are
:mod:`steno_api.plan`, which the worker uses too: the operator may not
import inference code, and this way it need not restate it either. What
stays here is the operator's side of it:

* the spec as the plan carries it (:func:`worker_spec`: the worker's field
  names, URIs normalized as the worker prints them);
* listing the inputs with the operator's storage client (a prefix listing
  by key, without anything under the output prefix, filtered by suffix;
  named URIs by bucket and key, each read with HEAD, a missing one kept);
* writing and adopting the stored plan.

The plan is written create-only at ``<output>/_steno/plan.json``. A plan
already there (the operator restarted after writing it, or another planner
won the race) is adopted when it names this job's UID; a plan of another
job means the output prefix is taken, which fails the job (one output
prefix, one job).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steno_api.plan import (
    FALLBACK_STEM,
    FILE_OVERHEAD_BYTES,
    MAX_INPUTS,
    MAX_KEY_BYTES,
    MAX_PLAN_BYTES,
    MISSING_PROBLEM,
    PLAN_SCHEMA,
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
)
from steno_api.plan import PlanEntry as PlannedInput

from steno_operator.manifests import normalized_prefix, plan_uri
from steno_operator.spec import TranscriptionJobSpec
from steno_operator.storage import ObjectInfo, ObjectStore, split_uri

# The shared names stay importable from here for the operator's callers (mypy's strict
# mode re-exports only what __all__ lists).
__all__ = [
    "FALLBACK_STEM",
    "FILE_OVERHEAD_BYTES",
    "MAX_INPUTS",
    "MAX_KEY_BYTES",
    "MAX_PLAN_BYTES",
    "MISSING_PROBLEM",
    "PLAN_SCHEMA",
    "REASON_INVALID_KEY",
    "REASON_MISSING",
    "InvalidPlanError",
    "Listed",
    "PlanConflictError",
    "PlanInfo",
    "PlannedInput",
    "PlanningError",
    "TooManyInputsError",
    "balance",
    "base_stem",
    "build_plan",
    "canonical_json",
    "ensure_plan",
    "folder",
    "list_inputs",
    "normalized_uri",
    "output_key_problem",
    "output_stems",
    "read_plan",
    "unique_stems",
    "worker_spec",
]


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


def normalized_uri(uri: str) -> str:
    """``s3://bucket`` → ``s3://bucket/``; otherwise unchanged (how the worker prints URIs)."""
    bucket, key = split_uri(uri)
    return f"s3://{bucket}/{key}"


def worker_spec(spec: TranscriptionJobSpec, job_id: str) -> dict[str, Any]:
    """The spec as the plan carries it, with URIs normalized as the worker prints them."""
    data = spec.worker_spec(job_id)
    data["output"]["uri"] = normalized_prefix(spec.output.uri)
    if "prefix" in data["input"]:
        data["input"]["prefix"] = normalized_uri(data["input"]["prefix"])
    return data


def build_plan(spec: dict[str, Any], listed: Sequence[Listed], base: str) -> dict[str, Any]:
    """The plan document for inputs already listed and sorted; ``base`` is cut off their keys.

    A plain JSON dict (what :func:`canonical_json` turns into the stored bytes),
    built by the shared rules of :func:`steno_api.plan.build_plan_document`.
    """
    inputs = [ListedInput(item.uri, item.info.size if item.info else None,
                          item.info.etag if item.info else "")
              for item in listed]
    return build_plan_document(spec, inputs, base).to_dict()


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
    return listed, common_folder([key for _, key in named])


# --- the stored plan -----------------------------------------------------------


def read_plan(data: bytes, uri: str) -> PlanInfo:
    """A stored plan's summary; anything that is not a plan raises :class:`InvalidPlanError`.

    The document's structure is checked by the parser the worker uses too
    (:func:`steno_api.plan.parse_plan_document`), so a plan whose shards or
    inputs the pods would refuse is refused here, before a Job is created.
    """
    try:
        document = parse_plan_document(data, uri)
    except PlanFormatError as error:
        raise InvalidPlanError(str(error)) from None
    try:
        spec = document.spec
        return PlanInfo(
            uri=uri,
            sha256=hashlib.sha256(data).hexdigest(),  # of the stored bytes, as they are
            job_id=str(spec["jobId"]),
            output=normalized_prefix(str(spec["output"]["uri"])),
            formats=tuple(str(f) for f in spec["output"]["formats"]),
            shards=document.shard_count,
            inputs=document.inputs,
        )
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
