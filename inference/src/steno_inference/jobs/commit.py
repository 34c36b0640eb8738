"""Committing one file: decide its record create-only, then make its outputs match it.

The order is what makes a crash at any instant harmless:

1. **Decide.** Build the record (transcript JSON + each output's checksums,
   or the failure) and ``PUT`` it with ``If-None-Match: *``. Whoever writes
   it first decides the file's result for good. A writer that gets 412
   reads the existing record and follows it instead of its own — so two
   workers racing on one file can never produce two results.
2. **Roll forward.** Render every output *from the record* and ``PUT`` it
   under its deterministic key (plain overwrite, ``Content-MD5`` checked).
   Every writer renders the same bytes from the same record, so a
   restarted worker, or a racing one, may rewrite an output at any time
   without ever changing it. Before writing, the rendered bytes are checked
   against the record's SHA-256: a worker that would render differently
   (another steno version) stops instead of writing.
3. **Verify** (files decided by an earlier run): ``HEAD`` each output; a
   missing one, or one whose size or MD5 ETag differs, is written again.

Only after every file of the shard has passed 2 or 3 does the worker write
the shard manifest (the commit point users and the operator read).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from steno_inference.formats import to_json_dict
from steno_inference.jobs import layout
from steno_inference.jobs.plan import Plan, PlannedInput
from steno_inference.jobs.records import (
    MAX_RECORD_BYTES,
    Failure,
    FileRecord,
    OutputObject,
    RecordError,
    parse_record,
)
from steno_inference.jobs.rendering import render_outputs
from steno_inference.storage.client import ObjectStorage, digests
from steno_inference.storage.errors import ObjectNotFoundError, PreconditionFailedError
from steno_inference.storage.uri import S3Uri
from steno_inference.transcript import Transcript

LOG = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
TEXT_CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


class CommitError(RuntimeError):
    """A record cannot be honoured by this worker (its outputs would come out different)."""


def _ignore(_event: str, _fields: dict[str, Any]) -> None:
    return None


class Committer:
    """Commits the files of one plan; safe to use from several threads at once."""

    def __init__(self, storage: ObjectStorage, plan: Plan, on_event: EventSink = _ignore) -> None:
        self.storage = storage
        self.plan = plan
        self.on_event = on_event

    # ------------------------------------------------------------- records

    def record_uri(self, item: PlannedInput) -> S3Uri:
        return layout.record_uri(self.plan.spec.output, self.plan.record_id(item))

    def success_record(self, item: PlannedInput, transcript: Transcript) -> FileRecord:
        if item.stem is None:
            raise CommitError(f"{item.uri}: has no output name but was transcribed")
        transcript_json = to_json_dict(transcript)
        outputs = []
        for fmt, data in render_outputs(transcript_json, self.plan.spec.formats):
            sha256, md5 = digests(data)
            uri = layout.output_uri(self.plan.spec.output, item.stem, fmt)
            outputs.append(OutputObject(fmt, uri, len(data), sha256, md5))
        return self._record(item, "succeeded", transcript.duration_s, tuple(outputs),
                            transcript_json, None)

    def failure_record(self, item: PlannedInput, reason: str, message: str) -> FileRecord:
        failure = Failure(reason, " ".join(message.split()))
        return self._record(item, "failed", 0.0, (), None, failure)

    def _record(
        self,
        item: PlannedInput,
        status: str,
        duration_s: float,
        outputs: tuple[OutputObject, ...],
        transcript: dict[str, Any] | None,
        failure: Failure | None,
    ) -> FileRecord:
        return FileRecord(
            job_id=self.plan.spec.job_id,
            record_id=self.plan.record_id(item),
            input_uri=item.uri,
            input_size=item.size,
            input_etag=item.etag,
            status="succeeded" if status == "succeeded" else "failed",
            duration_s=round(duration_s, 3),
            outputs=outputs,
            transcript=transcript,
            failure=failure,
        )

    def load(self, item: PlannedInput) -> FileRecord | None:
        """The stored record of ``item``, or None; a foreign or broken one raises RecordError."""
        uri = self.record_uri(item)
        try:
            data = self.storage.get_bytes(uri, MAX_RECORD_BYTES)
        except ObjectNotFoundError:
            return None
        record = parse_record(data, str(uri))
        if not record.matches(self.plan, item):
            raise RecordError(f"{uri} belongs to another input, version or job")
        return record

    def commit(self, item: PlannedInput, record: FileRecord) -> FileRecord:
        """Decide ``record`` (or adopt the one already there), then write its outputs."""
        uri = self.record_uri(item)
        try:
            self.storage.put(uri, record.to_bytes(), create_only=True)
            decided, won = record, True
        except PreconditionFailedError:
            existing = self.load(item)
            if existing is None:  # 412 but gone: cannot happen unless someone deletes records
                raise CommitError(
                    f"{uri}: create-only write refused, yet no record is there"
                ) from None
            decided, won = existing, False
        self.on_event("committed" if won else "adopted", {
            "index": item.index, "uri": str(item.uri), "record": str(uri),
            "status": decided.status,
        })
        self.write_outputs(decided, check_existing=not won)
        return decided

    # ------------------------------------------------------------- outputs

    def write_outputs(self, record: FileRecord, *, check_existing: bool) -> int:
        """Make every output of ``record`` exist with its recorded bytes; count the writes."""
        if record.transcript is None:
            return 0
        formats = [output.format for output in record.outputs]
        rendered = dict(render_outputs(record.transcript, formats))
        written = 0
        for output in record.outputs:
            data = rendered[output.format]
            sha256, _md5 = digests(data)
            if sha256 != output.sha256 or len(data) != output.size:
                raise CommitError(
                    f"{output.uri}: this worker renders {len(data)} bytes (sha256 {sha256[:12]}…) "
                    f"where the record says {output.size} (sha256 {output.sha256[:12]}…)"
                )
            if check_existing and self.holds(output):
                continue
            self.storage.put(output.uri, data, content_type=TEXT_CONTENT_TYPES[output.format])
            written += 1
        if written:
            self.on_event("outputs_written", {"record": record.record_id, "count": written})
        return written

    def holds(self, output: OutputObject) -> bool:
        """Whether the store already has exactly ``output``'s bytes at its key."""
        info = self.storage.head(output.uri)
        if info is None or info.size != output.size:
            return False
        match = _MD5_ETAG.match(info.etag)
        if match is not None:
            return match.group(1).lower() == output.md5
        # A multipart or encrypted object's ETag is not its MD5: compare the bytes.
        try:
            data = self.storage.get_bytes(output.uri, output.size)
        except ObjectNotFoundError:
            return False
        return digests(data)[0] == output.sha256


def failure_for_plan_problem(committer: Committer, item: PlannedInput) -> FileRecord:
    """The failure record of an input the plan already knew could not be transcribed."""
    return committer.failure_record(item, item.reason or "invalid", item.problem or "unusable")
