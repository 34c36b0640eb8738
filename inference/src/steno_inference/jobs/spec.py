"""The job spec the worker side understands: inputs, output, formats, model and options.

Its JSON is the TranscriptionJob's ``spec`` in the CRD's own field names,
plus the job's identity (``jobId``: the object's UID, so a recreated job of
the same name is a different job)::

    {"jobId": "3f1c…",
     "input": {"prefix": "s3://audio/2024/", "suffixes": [".wav", ".mp3"]},
              # or {"uris": ["s3://audio/a.wav", "s3://audio/b.flac"]}
     "output": {"uri": "s3://transcripts/2024/", "formats": ["json", "srt"]},
     "model": "tiny.en", "task": "transcribe", "language": "auto",
     "timestamps": "segment",
     "diarization": {"enabled": false},
     "parallelism": 4}

Parsing is strict: an unknown field, a wrong type or a value out of range
raises :class:`JobSpecError` naming the field, which the worker reports as a
bad job spec (exit code 2: retrying cannot fix it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steno_inference.options import (
    OUTPUT_FORMATS,
    OptionsError,
    OutputFormat,
    TranscribeOptions,
)
from steno_inference.storage.uri import InvalidUriError, S3Uri, parse_prefix, parse_uri

MAX_PARALLELISM = 1000  # pods of one job; the Job's completions are capped the same way
MAX_JOB_ID_CHARS = 128
MAX_SUFFIXES = 64
MAX_SUFFIX_CHARS = 32
DEFAULT_FORMATS: tuple[OutputFormat, ...] = ("json",)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOP_LEVEL = frozenset(
    {"jobId", "input", "output", "model", "task", "language", "timestamps", "diarization",
     "parallelism"}
)


class JobSpecError(ValueError):
    """The job spec cannot be used; the message names the field and the rule."""


@dataclass(frozen=True)
class InputSpec:
    """Exactly one of: named objects, or a prefix (optionally filtered by suffix)."""

    uris: tuple[S3Uri, ...] = ()
    prefix: S3Uri | None = None
    suffixes: tuple[str, ...] = ()  # case-insensitive; empty: every object under the prefix


@dataclass(frozen=True)
class JobSpec:
    """What one job transcribes and where its results go."""

    job_id: str  # the TranscriptionJob's UID: names the job's records and plan
    input: InputSpec
    output: S3Uri  # the prefix every output, record and manifest is written under
    formats: tuple[OutputFormat, ...] = DEFAULT_FORMATS
    model: str = "tiny.en"
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    parallelism: int = 1  # shards (pods) at most

    def to_dict(self) -> dict[str, Any]:
        """The spec in its JSON shape (what :func:`parse_spec` reads back)."""
        source: dict[str, Any]
        if self.input.prefix is not None:
            source = {"prefix": str(self.input.prefix), "suffixes": list(self.input.suffixes)}
        else:
            source = {"uris": [str(uri) for uri in self.input.uris]}
        options = self.options
        diarization: dict[str, Any] = {"enabled": options.diarize}
        for name, value in (("numSpeakers", options.num_speakers),
                            ("minSpeakers", options.min_speakers),
                            ("maxSpeakers", options.max_speakers)):
            if value is not None:
                diarization[name] = value
        return {
            "jobId": self.job_id,
            "input": source,
            "output": {"uri": str(self.output), "formats": list(self.formats)},
            "model": self.model,
            "task": options.task,
            "language": options.language,
            "timestamps": options.timestamps,
            "diarization": diarization,
            "parallelism": self.parallelism,
        }


def load_spec(text: str | bytes) -> JobSpec:
    """A spec from JSON text."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise JobSpecError(f"job spec is not valid JSON: {error}") from None
    return parse_spec(data)


def spec_from_env(env: Mapping[str, str], name: str = "STENO_JOB_SPEC") -> JobSpec:
    """A spec from the JSON in environment variable ``name``."""
    text = env.get(name)
    if not text:
        raise JobSpecError(f"{name} is not set: it must hold the job spec as JSON")
    return load_spec(text)


def parse_spec(data: Any) -> JobSpec:
    """A spec from parsed JSON; every problem raises :class:`JobSpecError`."""
    spec = _mapping(data, "job spec")
    unknown = sorted(set(spec) - _TOP_LEVEL)
    if unknown:
        raise JobSpecError(
            f"job spec: unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_TOP_LEVEL))}"
        )
    job_id = _string(spec.get("jobId"), "jobId")
    if len(job_id) > MAX_JOB_ID_CHARS or not _JOB_ID.fullmatch(job_id):
        raise JobSpecError(
            f"jobId {job_id!r} must be 1 to {MAX_JOB_ID_CHARS} letters, digits, '.', '_' or '-'"
        )
    output_section = _mapping(spec.get("output"), "output", {"uri", "formats"})
    output = _prefix(output_section.get("uri"), "output.uri")
    formats = _formats(output_section.get("formats", list(DEFAULT_FORMATS)))
    source = _input(spec.get("input"))
    if source.prefix is not None and source.prefix.bucket == output.bucket and (
        source.prefix.key.startswith(output.key)
    ):
        # Outputs are left out of input listings, so inputs there would all vanish.
        raise JobSpecError(
            f"input.prefix {source.prefix} lies inside output.uri {output}: "
            "keep inputs and outputs apart"
        )
    model = _string(spec.get("model", "tiny.en"), "model")
    options = _options(spec)
    parallelism = spec.get("parallelism", 1)
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or not (
        1 <= parallelism <= MAX_PARALLELISM
    ):
        raise JobSpecError(
            f"parallelism must be an integer from 1 to {MAX_PARALLELISM}, not {parallelism!r}"
        )
    return JobSpec(job_id, source, output, formats, model, options, parallelism)


def _mapping(value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JobSpecError(f"{where} must be an object, not {_kind(value)}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise JobSpecError(
                f"{where}: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(allowed))}"
            )
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JobSpecError(f"{where} must be a non-empty string, not {_kind(value)}")
    return value.strip()


def _kind(value: Any) -> str:
    if value is None:
        return "missing"
    return f"{type(value).__name__} {value!r}"[:80]


def _prefix(value: Any, where: str) -> S3Uri:
    try:
        return parse_prefix(_string(value, where))
    except InvalidUriError as error:
        raise JobSpecError(f"{where}: {error}") from None


def _input(value: Any) -> InputSpec:
    section = _mapping(value, "input", {"uris", "prefix", "suffixes"})
    has_uris, has_prefix = "uris" in section, "prefix" in section
    if has_uris == has_prefix:
        raise JobSpecError("input must have exactly one of uris or prefix")
    if has_uris:
        if "suffixes" in section:
            raise JobSpecError("input.suffixes filters a prefix listing; it needs input.prefix")
        raw = section["uris"]
        if not isinstance(raw, list) or not raw:
            raise JobSpecError("input.uris must be a non-empty list of s3:// URIs")
        uris: list[S3Uri] = []
        for i, item in enumerate(raw):
            where = f"input.uris[{i}]"
            try:
                uri = parse_uri(_string(item, where))
            except InvalidUriError as error:
                raise JobSpecError(f"{where}: {error}") from None
            if not uri.key or uri.key.endswith("/"):
                raise JobSpecError(f"{where}: {item!r} names a prefix, not an object")
            uris.append(uri)
        return InputSpec(uris=tuple(uris))
    prefix = _input_prefix(section["prefix"])
    raw_suffixes = section.get("suffixes", [])
    if not isinstance(raw_suffixes, list) or len(raw_suffixes) > MAX_SUFFIXES:
        raise JobSpecError(f"input.suffixes must be a list of at most {MAX_SUFFIXES} strings")
    suffixes: list[str] = []
    for i, item in enumerate(raw_suffixes):
        suffix = _string(item, f"input.suffixes[{i}]")
        if len(suffix) > MAX_SUFFIX_CHARS:
            raise JobSpecError(f"input.suffixes[{i}] is longer than {MAX_SUFFIX_CHARS} characters")
        if suffix.lower() not in (s.lower() for s in suffixes):
            suffixes.append(suffix)
    return InputSpec(prefix=prefix, suffixes=tuple(suffixes))


def _input_prefix(value: Any) -> S3Uri:
    # An input prefix is only read, so it may be any key prefix (even "data/talk" to
    # match "data/talk1.wav" and "data/talk2.wav"); only the URI must be well formed.
    try:
        return parse_uri(_string(value, "input.prefix"))
    except InvalidUriError as error:
        raise JobSpecError(f"input.prefix: {error}") from None


def _formats(value: Any) -> tuple[OutputFormat, ...]:
    if not isinstance(value, list) or not value:
        raise JobSpecError(
            f"output.formats must be a non-empty list of: {', '.join(OUTPUT_FORMATS)}"
        )
    chosen: list[OutputFormat] = []
    for i, item in enumerate(value):
        name = _string(item, f"output.formats[{i}]").lower()
        match = next((fmt for fmt in OUTPUT_FORMATS if fmt == name), None)
        if match is None:
            raise JobSpecError(
                f"output.formats[{i}]: unknown format {item!r}; choose from "
                f"{', '.join(OUTPUT_FORMATS)}"
            )
        if match not in chosen:
            chosen.append(match)
    return tuple(chosen)


def _options(spec: dict[str, Any]) -> TranscribeOptions:
    diarization = _mapping(spec.get("diarization", {}), "diarization",
                           {"enabled", "numSpeakers", "minSpeakers", "maxSpeakers"})
    enabled = diarization.get("enabled", False)
    if not isinstance(enabled, bool):
        raise JobSpecError(f"diarization.enabled must be true or false, not {_kind(enabled)}")
    counts: dict[str, int | None] = {}
    for field_name, key in (("num_speakers", "numSpeakers"), ("min_speakers", "minSpeakers"),
                            ("max_speakers", "maxSpeakers")):
        value = diarization.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise JobSpecError(f"diarization.{key} must be an integer, not {_kind(value)}")
        counts[field_name] = value
    try:
        return TranscribeOptions(
            task=_string(spec.get("task", "transcribe"), "task"),  # type: ignore[arg-type]
            language=_string(spec.get("language", "auto"), "language"),
            timestamps=_string(spec.get("timestamps", "segment"), "timestamps"),  # type: ignore[arg-type]
            diarize=enabled,
            **counts,
        ).validated()
    except OptionsError as error:
        raise JobSpecError(str(error)) from None
