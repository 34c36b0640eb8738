"""The TranscriptionJob's ``spec``, typed and validated: the operator's view of the CRD.

The API server already rejects most bad specs (the CRD's schema has enums,
patterns, bounds and CEL rules, ``charts/steno/crds/``); this module checks
the same rules again, for three reasons:

* the operator must not trust that the installed CRD is the current one (an
  old chart, or a CRD applied by hand without its validation);
* a few rules cannot be said in OpenAPI or cheaply in CEL (bucket names
  without ``..``; the byte length of an object key);
* the reconciler needs typed values, not nested dicts.

Every constant the CRD states (enums, defaults, bounds, patterns) is defined
here once; ``tests/unit/test_operator_crd.py`` checks that the YAML says the
same, so the two cannot drift apart.

Field names follow the CRD (camelCase in the object, snake_case here). The
job worker reads a JSON spec in the CRD's own field names
(``steno_inference.jobs.spec``); :meth:`TranscriptionJobSpec.worker_spec`
builds it, so what the worker runs is exactly what the API server accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# --- the resource ------------------------------------------------------------

GROUP = "steno.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TranscriptionJob"
PLURAL = "transcriptionjobs"
SINGULAR = "transcriptionjob"
SHORT_NAME = "tj"

# --- enums and defaults (the CRD states the same) ----------------------------

TASKS = ("transcribe", "translate")
TIMESTAMP_MODES = ("segment", "word")
OUTPUT_FORMATS = ("json", "srt", "vtt", "txt", "tsv")
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DEFAULT_TASK = "transcribe"
DEFAULT_LANGUAGE = "auto"
DEFAULT_TIMESTAMPS = "segment"
DEFAULT_FORMATS = ("json",)
DEFAULT_MODEL = "large-v3"  # a cluster job is for quality; tests name tiny.en
DEFAULT_PARALLELISM = 1
DEFAULT_GPUS_PER_POD = 1
# Greedy decoding. Applied by the operator, not the CRD (like int8CrossKV: a schema
# default added by a CRD upgrade would change the specFingerprint of stored jobs).
DEFAULT_BEAM_SIZE = 1
# Applied by the operator (not the CRD: a schema default on input.suffixes
# would also land on a uris input, where suffixes are not allowed) when a
# prefix input names none. An explicit empty list means every object.
DEFAULT_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4")

# --- bounds ------------------------------------------------------------------

MAX_PARALLELISM = 1000  # the worker's own cap on shards (steno_inference.jobs.spec)
MAX_GPUS_PER_POD = 16  # the largest GPU nodes sold today carry 16
MIN_BEAM_SIZE = 1
MAX_BEAM_SIZE = 16  # the engine's cap (steno_inference.beam_state.MAX_BEAM_SIZE)
MIN_SPEAKERS = 1
MAX_SPEAKERS = 32  # the engine's stated cap (steno_inference.options.MAX_SPEAKERS)
MAX_INPUT_URIS = 1000  # more inputs belong under a prefix: the object must fit in etcd
MAX_URI_CHARS = 1100  # "s3://" + a 63-character bucket + "/" + a 1,024-byte key, with room
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in bytes of UTF-8
MAX_SUFFIXES = 64  # the worker's caps on suffix filters
MAX_SUFFIX_CHARS = 32
MAX_MODEL_CHARS = 128
MAX_NODE_SELECTOR_ENTRIES = 64
MAX_TOLERATIONS = 32
MAX_NAME_CHARS = 253  # a DNS subdomain: Secret, PriorityClass and RuntimeClass names
MAX_LABEL_KEY_CHARS = 317  # a 253-character prefix, "/", a 63-character name
MAX_LABEL_VALUE_CHARS = 63
MIN_DEADLINE_SECONDS = 1

# --- patterns (RE2 and Python agree on these) -------------------------------

# A bucket: 3 to 63 lower-case letters, digits, dots and hyphens, starting and
# ending with a letter or digit (the rule AWS S3, GCS, MinIO, Ceph and SeaweedFS share).
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
# One object: a bucket and a key that does not end in "/" (that would be a folder).
OBJECT_URI_PATTERN = rf"^s3://{_BUCKET}/.*[^/]$"
# A prefix to read under: a bucket and any key prefix (even "talks/2024-" works).
INPUT_PREFIX_PATTERN = rf"^s3://{_BUCKET}(/.*)?$"
# A prefix steno writes under: relative path segments only, none empty, "." or
# "..", no backslash or control character (the worker's rule for keys it writes).
_KEY_CHAR = r"[^/\\\x00-\x1f\x7f]"  # any character but "/", "\\" and control characters
_FIRST_CHAR = r"[^/\\.\x00-\x1f\x7f]"  # the same, and not "."
_SEGMENT = rf"({_FIRST_CHAR}{_KEY_CHAR}*|\.{_FIRST_CHAR}{_KEY_CHAR}*|\.\.{_KEY_CHAR}+)"
OUTPUT_PREFIX_PATTERN = rf"^s3://{_BUCKET}(/({_SEGMENT}/)*({_SEGMENT}/?)?)?$"
# "auto", or an ISO 639 code as Whisper names languages ("en", "haw", "yue").
LANGUAGE_PATTERN = r"^(auto|[a-z]{2,3})$"
# A model short name ("tiny.en", "large-v3") or a hub id ("openai/whisper-large-v3").
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
SUFFIX_PATTERN = r"^\.?[A-Za-z0-9._-]+$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_OBJECT_URI = re.compile(OBJECT_URI_PATTERN)
_INPUT_PREFIX = re.compile(INPUT_PREFIX_PATTERN)
_OUTPUT_PREFIX = re.compile(OUTPUT_PREFIX_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)
_MODEL = re.compile(MODEL_PATTERN)
_SUFFIX = re.compile(SUFFIX_PATTERN)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)

# Spec fields and the sub-objects' fields; anything else is rejected (the CRD
# prunes unknown fields, so one here means the CRD is not ours).
_SPEC_FIELDS = frozenset(
    {"input", "output", "model", "task", "language", "timestamps", "diarization",
     "parallelism", "gpusPerPod", "int8CrossKV", "beamSize", "deterministic", "placement",
     "deadlineSeconds", "storageSecretRef", "suspend"}
)
# Fields that may change after the job started: everything else is fixed by the plan.
MUTABLE_FIELDS = frozenset({"suspend"})


class SpecError(ValueError):
    """The spec breaks a rule; ``field`` is its path (``input.uris[2]``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"spec.{field}: {message}")


@dataclass(frozen=True)
class InputSpec:
    """Exactly one of: named objects, or a prefix filtered by suffix."""

    uris: tuple[str, ...] = ()
    prefix: str | None = None
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES  # only with a prefix; () = every object


@dataclass(frozen=True)
class OutputSpec:
    uri: str  # the prefix every output and manifest is written under
    formats: tuple[str, ...] = DEFAULT_FORMATS


@dataclass(frozen=True)
class DiarizationSpec:
    enabled: bool = False
    num_speakers: int | None = None  # exact count; excludes the bounds below
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None  # None: every effect
    toleration_seconds: int | None = None

    def to_kubernetes(self) -> dict[str, Any]:
        result: dict[str, Any] = {"operator": self.operator}
        for name, value in (
            ("key", self.key),
            ("value", self.value),
            ("effect", self.effect),
            ("tolerationSeconds", self.toleration_seconds),
        ):
            if value is not None:
                result[name] = value
        return result


@dataclass(frozen=True)
class PlacementSpec:
    """Where pods run. Each field left out takes the operator's (chart's) default."""

    node_selector: tuple[tuple[str, str], ...] | None = None  # sorted pairs
    tolerations: tuple[Toleration, ...] | None = None
    priority_class_name: str | None = None
    runtime_class_name: str | None = None


@dataclass(frozen=True)
class TranscriptionJobSpec:
    """A validated ``spec``."""

    input: InputSpec
    output: OutputSpec
    model: str = DEFAULT_MODEL
    task: str = DEFAULT_TASK
    language: str = DEFAULT_LANGUAGE
    timestamps: str = DEFAULT_TIMESTAMPS
    diarization: DiarizationSpec = DiarizationSpec()
    parallelism: int = DEFAULT_PARALLELISM  # pods at most (shards)
    gpus_per_pod: int = DEFAULT_GPUS_PER_POD
    # An engine setting of the worker pods (``steno work --int8-cross-kv``), not part
    # of the plan: like the dtype, it changes how the GPU decodes, not what the job is.
    int8_cross_kv: bool = False
    # Beams per window (``steno work --beam-size N``; 1: greedy), an engine setting too.
    beam_size: int = DEFAULT_BEAM_SIZE
    # Repeatable GPU decoder kernels (``steno work --deterministic``), an engine setting too.
    deterministic: bool = False
    placement: PlacementSpec = PlacementSpec()
    deadline_seconds: int | None = None  # the Job's activeDeadlineSeconds
    storage_secret_name: str | None = None  # None: the pods' own identity (boto3's chain)
    suspend: bool = False

    def worker_spec(self, job_id: str) -> dict[str, Any]:
        """The JSON the job worker reads (``steno_inference.jobs.spec``): CRD field names.

        ``int8CrossKV``, ``beamSize`` and ``deterministic`` are left out: the worker's
        parser refuses unknown fields, and the pods get them as flags
        (``manifests.worker_args``), so the plan, and with it every stored plan's bytes,
        does not depend on them.
        """
        source: dict[str, Any]
        if self.input.prefix is not None:
            source = {"prefix": self.input.prefix, "suffixes": list(self.input.suffixes)}
        else:
            source = {"uris": list(self.input.uris)}
        diarization: dict[str, Any] = {"enabled": self.diarization.enabled}
        for name, count in (
            ("numSpeakers", self.diarization.num_speakers),
            ("minSpeakers", self.diarization.min_speakers),
            ("maxSpeakers", self.diarization.max_speakers),
        ):
            if count is not None:
                diarization[name] = count
        return {
            "jobId": job_id,
            "input": source,
            "output": {"uri": self.output.uri, "formats": list(self.output.formats)},
            "model": self.model,
            "task": self.task,
            "language": self.language,
            "timestamps": self.timestamps,
            "diarization": diarization,
            "parallelism": self.parallelism,
        }


def parse_spec(raw: Mapping[str, Any]) -> TranscriptionJobSpec:
    """A typed spec from the object's ``spec``; the first broken rule raises :class:`SpecError`."""
    spec = _object(raw, "", _SPEC_FIELDS)
    input_spec = _input(spec.get("input"))
    output = _output(spec.get("output"))
    if input_spec.prefix is not None and _inside(input_spec.prefix, output.uri):
        # The worker leaves its own outputs out of input listings, so every input
        # there would vanish from the plan.
        raise SpecError("input.prefix", f"{input_spec.prefix} lies inside output.uri {output.uri}")
    model = _string(spec.get("model", DEFAULT_MODEL), "model", MAX_MODEL_CHARS, _MODEL)
    task = _choice(spec.get("task", DEFAULT_TASK), "task", TASKS)
    language = _string(spec.get("language", DEFAULT_LANGUAGE), "language", 8, _LANGUAGE)
    if _english_only(model):
        # English-only weights can neither translate nor recognize another language.
        if task == "translate":
            raise SpecError("task", f"model {model} is English-only and cannot translate")
        if language not in ("auto", "en"):
            raise SpecError("language", f"model {model} is English-only; use auto or en")
    return TranscriptionJobSpec(
        input=input_spec,
        output=output,
        model=model,
        task=task,
        language=language,
        timestamps=_choice(spec.get("timestamps", DEFAULT_TIMESTAMPS), "timestamps",
                           TIMESTAMP_MODES),
        diarization=_diarization(spec.get("diarization", {})),
        parallelism=_integer(spec.get("parallelism", DEFAULT_PARALLELISM), "parallelism",
                             1, MAX_PARALLELISM),
        gpus_per_pod=_integer(spec.get("gpusPerPod", DEFAULT_GPUS_PER_POD), "gpusPerPod",
                              1, MAX_GPUS_PER_POD),
        int8_cross_kv=_boolean(spec.get("int8CrossKV", False), "int8CrossKV"),
        beam_size=_integer(spec.get("beamSize", DEFAULT_BEAM_SIZE), "beamSize",
                           MIN_BEAM_SIZE, MAX_BEAM_SIZE),
        deterministic=_boolean(spec.get("deterministic", False), "deterministic"),
        placement=_placement(spec.get("placement", {})),
        deadline_seconds=(
            None
            if spec.get("deadlineSeconds") is None
            else _integer(spec["deadlineSeconds"], "deadlineSeconds", MIN_DEADLINE_SECONDS, None)
        ),
        storage_secret_name=_secret_ref(spec.get("storageSecretRef")),
        suspend=_boolean(spec.get("suspend", False), "suspend"),
    )


def spec_fingerprint(raw: Mapping[str, Any]) -> str:
    """A hash of the spec's fixed fields: equal before and after a change of ``suspend`` only.

    The status records it when the job is planned; a later spec with another
    fingerprint is a change the job does not follow (see ``conditions``).
    """
    fixed = {key: value for key, value in raw.items() if key not in MUTABLE_FIELDS}
    encoded = json.dumps(fixed, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


# --- helpers -------------------------------------------------------------------


def _english_only(model: str) -> bool:
    return model.endswith(".en")


def _inside(prefix: str, output_prefix: str) -> bool:
    """Whether an input prefix lies inside the output prefix (the worker's rule, on keys)."""
    in_bucket, _, in_key = prefix.removeprefix("s3://").partition("/")
    out_bucket, _, out_key = output_prefix.removeprefix("s3://").partition("/")
    if out_key and not out_key.endswith("/"):
        out_key += "/"
    return in_bucket == out_bucket and in_key.startswith(out_key)


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _object(value: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(where or "spec", f"must be an object, not {_kind(value)}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SpecError(where or "spec", f"unknown field(s) {', '.join(unknown)}")
    return value


def _kind(value: Any) -> str:
    return "missing" if value is None else type(value).__name__


def _string(value: Any, where: str, max_chars: int, pattern: re.Pattern[str] | None) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(where, f"must be a non-empty string, not {_kind(value)}")
    if len(value) > max_chars:
        raise SpecError(where, f"is longer than {max_chars} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise SpecError(where, f"{value[:80]!r} does not match {pattern.pattern}")
    return value


def _choice(value: Any, where: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise SpecError(where, f"must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _integer(value: Any, where: str, low: int, high: int | None) -> int:
    bound = f"from {low} to {high}" if high is not None else f"at least {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(where, f"must be an integer {bound}, not {_kind(value)}")
    if value < low or (high is not None and value > high):
        raise SpecError(where, f"must be {bound}, not {value}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(where, f"must be true or false, not {_kind(value)}")
    return value


def _bucket_and_key(uri: str, where: str) -> None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if ".." in bucket:
        raise SpecError(where, f"bucket name {bucket!r} must not contain '..'")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise SpecError(where, f"key is longer than S3's {MAX_KEY_BYTES} bytes")


def _input(value: Any) -> InputSpec:
    section = _object(value, "input", frozenset({"uris", "prefix", "suffixes"}))
    has_uris, has_prefix = "uris" in section, "prefix" in section
    if has_uris == has_prefix:
        raise SpecError("input", "must have exactly one of uris or prefix")
    if has_uris:
        if "suffixes" in section:
            raise SpecError("input.suffixes", "filters a prefix listing; it needs input.prefix")
        raw = section["uris"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_INPUT_URIS:
            raise SpecError("input.uris", f"must list 1 to {MAX_INPUT_URIS} s3:// object URIs")
        uris: list[str] = []
        for i, item in enumerate(raw):
            where = f"input.uris[{i}]"
            uri = _string(item, where, MAX_URI_CHARS, _OBJECT_URI)
            _bucket_and_key(uri, where)
            uris.append(uri)
        if len(set(uris)) != len(uris):
            raise SpecError("input.uris", "names an object twice")
        return InputSpec(uris=tuple(uris), prefix=None, suffixes=())
    prefix = _string(section["prefix"], "input.prefix", MAX_URI_CHARS, _INPUT_PREFIX)
    _bucket_and_key(prefix, "input.prefix")
    raw_suffixes = section.get("suffixes")
    if raw_suffixes is None:
        return InputSpec(prefix=prefix, suffixes=DEFAULT_SUFFIXES)
    if not isinstance(raw_suffixes, list) or len(raw_suffixes) > MAX_SUFFIXES:
        raise SpecError("input.suffixes", f"must be a list of at most {MAX_SUFFIXES} suffixes")
    suffixes = tuple(
        _string(item, f"input.suffixes[{i}]", MAX_SUFFIX_CHARS, _SUFFIX)
        for i, item in enumerate(raw_suffixes)
    )
    if len({s.lower() for s in suffixes}) != len(suffixes):
        raise SpecError("input.suffixes", "names a suffix twice")
    return InputSpec(prefix=prefix, suffixes=suffixes)


def _output(value: Any) -> OutputSpec:
    section = _object(value, "output", frozenset({"uri", "formats"}))
    uri = _string(section.get("uri"), "output.uri", MAX_URI_CHARS, _OUTPUT_PREFIX)
    _bucket_and_key(uri, "output.uri")
    raw = section.get("formats", list(DEFAULT_FORMATS))
    if not isinstance(raw, list) or not raw:
        raise SpecError("output.formats", f"must list some of {', '.join(OUTPUT_FORMATS)}")
    formats = tuple(_choice(item, f"output.formats[{i}]", OUTPUT_FORMATS)
                    for i, item in enumerate(raw))
    if len(set(formats)) != len(formats):
        raise SpecError("output.formats", "names a format twice")
    return OutputSpec(uri=uri, formats=formats)


def _diarization(value: Any) -> DiarizationSpec:
    section = _object(value, "diarization",
                      frozenset({"enabled", "numSpeakers", "minSpeakers", "maxSpeakers"}))
    enabled = _boolean(section.get("enabled", False), "diarization.enabled")
    counts: dict[str, int | None] = {}
    for key in ("numSpeakers", "minSpeakers", "maxSpeakers"):
        raw = section.get(key)
        counts[key] = (
            None if raw is None
            else _integer(raw, f"diarization.{key}", MIN_SPEAKERS, MAX_SPEAKERS)
        )
    given = [key for key, count in counts.items() if count is not None]
    if given and not enabled:
        raise SpecError(f"diarization.{given[0]}", "needs diarization.enabled: true")
    if counts["numSpeakers"] is not None and len(given) > 1:
        raise SpecError("diarization.numSpeakers", "excludes minSpeakers and maxSpeakers")
    low, high = counts["minSpeakers"], counts["maxSpeakers"]
    if low is not None and high is not None and low > high:
        raise SpecError("diarization.minSpeakers", f"({low}) exceeds maxSpeakers ({high})")
    return DiarizationSpec(enabled, counts["numSpeakers"], low, high)


def _placement(value: Any) -> PlacementSpec:
    section = _object(
        value, "placement",
        frozenset({"nodeSelector", "tolerations", "priorityClassName", "runtimeClassName"}),
    )
    node_selector: tuple[tuple[str, str], ...] | None = None
    if "nodeSelector" in section:
        raw = section["nodeSelector"]
        if not isinstance(raw, Mapping) or len(raw) > MAX_NODE_SELECTOR_ENTRIES:
            raise SpecError("placement.nodeSelector",
                            f"must map at most {MAX_NODE_SELECTOR_ENTRIES} labels to values")
        for key, label in raw.items():
            _string(key, "placement.nodeSelector", MAX_LABEL_KEY_CHARS, None)
            if not isinstance(label, str) or len(label) > MAX_LABEL_VALUE_CHARS:
                raise SpecError(f"placement.nodeSelector.{key}",
                                f"must be a label value of at most {MAX_LABEL_VALUE_CHARS} chars")
        node_selector = tuple(sorted((str(k), str(v)) for k, v in raw.items()))
    tolerations: tuple[Toleration, ...] | None = None
    if "tolerations" in section:
        raw_list = section["tolerations"]
        if not isinstance(raw_list, list) or len(raw_list) > MAX_TOLERATIONS:
            raise SpecError("placement.tolerations",
                            f"must be a list of at most {MAX_TOLERATIONS} tolerations")
        tolerations = tuple(parse_toleration(item, f"placement.tolerations[{i}]")
                            for i, item in enumerate(raw_list))
    names: dict[str, str | None] = {}
    for key in ("priorityClassName", "runtimeClassName"):
        raw_name = section.get(key)
        names[key] = (
            None if raw_name is None
            else _string(raw_name, f"placement.{key}", MAX_NAME_CHARS, _DNS_SUBDOMAIN)
        )
    return PlacementSpec(node_selector, tolerations, names["priorityClassName"],
                         names["runtimeClassName"])


def parse_toleration(value: Any, where: str) -> Toleration:
    section = _object(value, where,
                      frozenset({"key", "operator", "value", "effect", "tolerationSeconds"}))
    operator = _choice(section.get("operator", "Equal"), f"{where}.operator",
                       TOLERATION_OPERATORS)
    key = section.get("key")
    if key is not None:
        key = _string(key, f"{where}.key", MAX_LABEL_KEY_CHARS, None)
    toleration_value = section.get("value")
    if toleration_value is not None and not isinstance(toleration_value, str):
        raise SpecError(f"{where}.value", f"must be a string, not {_kind(toleration_value)}")
    if operator == "Exists" and toleration_value:
        raise SpecError(f"{where}.value", "must be empty when operator is Exists")
    if key is None and operator != "Exists":
        raise SpecError(f"{where}.operator", "must be Exists when key is empty")
    effect = section.get("effect")
    if effect is not None and effect != "":
        effect = _choice(effect, f"{where}.effect", TAINT_EFFECTS)
    seconds = section.get("tolerationSeconds")
    if seconds is not None:
        seconds = _integer(seconds, f"{where}.tolerationSeconds", 0, None)
    return Toleration(key, operator, toleration_value or None, effect or None, seconds)


def _secret_ref(value: Any) -> str | None:
    if value is None:
        return None
    section = _object(value, "storageSecretRef", frozenset({"name"}))
    return _string(section.get("name"), "storageSecretRef.name", MAX_NAME_CHARS, _DNS_SUBDOMAIN)
