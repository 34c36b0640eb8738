"""The two documents of the commit protocol: per-file commit records and shard manifests.

A **commit record** (``_steno/records/<file id>.json``) is written
create-only once a file's fate is known. For a transcribed file it holds
the transcript JSON and, for each output, its key, size, SHA-256 and MD5;
for a failed file the reason (``missing``, ``changed``, ``empty``,
``not_audio``, ``corrupt``, …) and a one-line message. The first record
written wins; everyone else reads it and follows it.

A **shard manifest** (``_steno/manifests/shard-NNNNN.json``) lists every
input of the shard in plan order with its status and outputs (keys and
checksums). It is written create-only after every output it names was
written and checked: it is the commit point of the shard, and its bytes
are a function of the records alone, so two workers finishing the same
shard write the same manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from steno_inference.jobs.plan import Plan, PlannedInput, canonical_json
from steno_inference.jobs.rendering import TranscriptJsonError, transcript_from_json_dict
from steno_inference.options import OUTPUT_FORMATS, OutputFormat
from steno_inference.storage.uri import InvalidUriError, S3Uri, parse_uri

RECORD_SCHEMA = "steno.dev/file-record/v1"
MANIFEST_SCHEMA = "steno.dev/shard-manifest/v1"
MAX_RECORD_BYTES = 256 * 1024 * 1024  # a transcript of days of speech with word times fits
MAX_MANIFEST_BYTES = 64 * 1024 * 1024

Status = Literal["succeeded", "failed"]
REASON_CHANGED = "changed"  # the input's ETag no longer matches the plan's


class RecordError(ValueError):
    """A stored record or manifest is malformed or belongs to something else."""


@dataclass(frozen=True)
class OutputObject:
    """One output object and the checksums of its bytes."""

    format: OutputFormat
    uri: S3Uri
    size: int
    sha256: str  # hex
    md5: str  # hex: S3's ETag of a single-part object

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "uri": str(self.uri), "size": self.size,
                "sha256": self.sha256, "md5": self.md5}

    @classmethod
    def from_dict(cls, data: Any) -> OutputObject:
        fmt = data["format"]
        if fmt not in OUTPUT_FORMATS:
            raise RecordError(f"unknown output format {fmt!r}")
        return cls(fmt, parse_uri(str(data["uri"])), int(data["size"]), str(data["sha256"]),
                   str(data["md5"]))


@dataclass(frozen=True)
class Failure:
    reason: str  # a short code: the AudioError's reason, or missing / changed / invalid key
    message: str  # one line for people

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class FileRecord:
    """The decided result of one input in one job."""

    job_id: str
    record_id: str
    input_uri: S3Uri
    input_size: int
    input_etag: str
    status: Status
    duration_s: float  # seconds of decoded audio (0 for failures)
    outputs: tuple[OutputObject, ...] = ()
    transcript: dict[str, Any] | None = None  # formats.to_json_dict of the transcript
    failure: Failure | None = None

    def matches(self, plan: Plan, item: PlannedInput) -> bool:
        return (
            self.job_id == plan.spec.job_id
            and self.record_id == plan.record_id(item)
            and self.input_uri == item.uri
            and self.input_etag == item.etag
            and self.input_size == item.size
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "jobId": self.job_id,
            "recordId": self.record_id,
            "input": {"uri": str(self.input_uri), "size": self.input_size,
                      "etag": self.input_etag},
            "status": self.status,
            "durationS": self.duration_s,
            "outputs": [output.to_dict() for output in self.outputs],
            "failure": None if self.failure is None else self.failure.to_dict(),
            "transcript": self.transcript,
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())


def parse_record(data: bytes, where: str) -> FileRecord:
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("schema") != RECORD_SCHEMA:
            raise RecordError(f"not a record of schema {RECORD_SCHEMA}")
        status = raw["status"]
        if status not in ("succeeded", "failed"):
            raise RecordError(f"unknown status {status!r}")
        failure_raw = raw.get("failure")
        failure = None
        if failure_raw is not None:
            failure = Failure(str(failure_raw["reason"]), str(failure_raw["message"]))
        transcript = raw.get("transcript")
        if status == "succeeded":
            if not isinstance(transcript, dict):
                raise RecordError("a succeeded record has no transcript")
            transcript_from_json_dict(transcript)  # must render: checked before it is trusted
        elif failure is None:
            raise RecordError("a failed record has no failure")
        return FileRecord(
            job_id=str(raw["jobId"]),
            record_id=str(raw["recordId"]),
            input_uri=parse_uri(str(raw["input"]["uri"])),
            input_size=int(raw["input"]["size"]),
            input_etag=str(raw["input"]["etag"]),
            status=status,
            duration_s=float(raw["durationS"]),
            outputs=tuple(OutputObject.from_dict(o) for o in raw["outputs"]),
            transcript=transcript if status == "succeeded" else None,
            failure=failure,
        )
    except (KeyError, TypeError, AttributeError, ValueError, TranscriptJsonError,
            InvalidUriError) as error:
        if isinstance(error, RecordError):
            raise RecordError(f"{where}: {error}") from None
        raise RecordError(f"{where} is not a valid commit record: {error!r}") from None


@dataclass(frozen=True)
class ManifestEntry:
    index: int
    record: S3Uri
    file: FileRecord


def manifest_dict(plan: Plan, shard: int, entries: list[ManifestEntry]) -> dict[str, Any]:
    """The shard manifest: deterministic, from the plan and the records alone."""
    files: list[dict[str, Any]] = []
    audio_s = 0.0
    failed = 0
    for entry in sorted(entries, key=lambda e: e.index):
        record = entry.file
        audio_s += record.duration_s
        failed += record.status == "failed"
        files.append({
            "index": entry.index,
            "uri": str(record.input_uri),
            "size": record.input_size,
            "etag": record.input_etag,
            "status": record.status,
            "durationS": record.duration_s,
            "record": str(entry.record),
            "outputs": [output.to_dict() for output in record.outputs],
            "failure": None if record.failure is None else record.failure.to_dict(),
        })
    return {
        "schema": MANIFEST_SCHEMA,
        "jobId": plan.spec.job_id,
        "planSha256": plan.sha256,
        "shard": shard,
        "shardCount": plan.shard_count,
        "formats": list(plan.spec.formats),
        "files": files,
        "summary": {
            "files": len(files),
            "succeeded": len(files) - failed,
            "failed": failed,
            "audioS": round(audio_s, 3),
        },
    }


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """A stored manifest as JSON data, checked for its schema."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise RecordError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("schema") != MANIFEST_SCHEMA:
        raise RecordError(f"{where} is not a manifest of schema {MANIFEST_SCHEMA}")
    return raw
