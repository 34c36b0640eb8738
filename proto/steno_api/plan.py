"""A job's plan (schema ``steno.dev/plan/v1``): its document, its bytes and the rules that fill it.

The plan is the contract between the planner (the operator, before it
creates the Kubernetes Job) and the worker pods (``steno_inference.jobs``):
each pod reads it and transcribes shard ``$JOB_COMPLETION_INDEX``, and each
shard manifest names the SHA-256 of the plan's bytes (``planSha256``). Both
sides must therefore agree on every byte. They used to restate these rules
each in its own package (the operator may not import inference code, and the
worker does not import the operator); this module is the one copy. It lives
in ``steno_api``, next to the gRPC API, because that package belongs to
neither side: it imports only the standard library, so the slim operator
image and the worker image both ship and load it (an import-linter contract
in ``pyproject.toml`` keeps it that way).

The rules, all deterministic (the same listing and spec give the same bytes):

* **Output stems.** An input's key relative to the input folder, without its
  extension, made unique within its folder (``a.wav`` and ``a.mp3`` → ``a``
  and ``a-1``), as the CLI names local outputs (:func:`unique_stems`).
* **Balanced by size.** Each input weighs its size plus
  :data:`FILE_OVERHEAD_BYTES` (the fixed cost of a file: requests, decoder
  start-up, writing outputs); the heaviest input goes to the lightest shard
  first (LPT scheduling), ties to the lowest shard. A job has
  ``min(parallelism, inputs)`` shards, and one (empty) shard when it has no
  inputs, so even an empty job ends with a manifest.
* **Bad inputs are kept.** A named object that does not exist, or an input
  whose output key would be invalid (``..``, too long, inside ``_steno/``),
  stays in the plan with a ``problem``; the worker records it as a failed
  file and the other inputs go on.
* **Canonical JSON.** Sorted keys, no spaces, UTF-8, a final newline.

What stays with each side: listing a bucket (each has its own storage
client), parsing the spec into its own types, and what to do with a plan.
The spec travels in the document as plain JSON; this module reads only
``output.uri``, ``output.formats`` and ``parallelism`` from it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

PLAN_SCHEMA = "steno.dev/plan/v1"
MAX_INPUTS = 100_000  # per job: the plan stays a few tens of MB; split larger jobs
MAX_PLAN_BYTES = 64 * 1024 * 1024  # a plan larger than this is refused when read
FILE_OVERHEAD_BYTES = 1024 * 1024  # per-file cost in bytes of input, for balancing
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in bytes of UTF-8
RESERVED_DIR = "_steno"  # under the output prefix: steno's own objects, never an output
PLAN_KEY = f"{RESERVED_DIR}/plan.json"  # where the plan lives, relative to the output prefix
FALLBACK_STEM = "audio"  # for an input whose name yields no usable stem

REASON_MISSING = "missing"  # a named input does not exist
REASON_INVALID_KEY = "invalid_output_key"  # its output key breaks the key rules
MISSING_PROBLEM = "no such object (it was named in the job but is not in the bucket)"

_WHITESPACE_RUN = re.compile(r"\s+")


class PlanFormatError(ValueError):
    """Bytes that are not a plan of :data:`PLAN_SCHEMA`; the message says where and why."""


@dataclass(frozen=True)
class ListedInput:
    """An input as a storage listing found it, in the plan's sorted order.

    ``size`` is None for an object named in the spec that does not exist:
    it still gets a place (and a problem) in the plan.
    """

    uri: str  # s3://bucket/key, as both sides print URIs
    size: int | None
    etag: str = ""  # as listed, quotes included: every read of the input must match it


@dataclass(frozen=True)
class PlanEntry:
    """One input of the plan: where it is, which shard transcribes it, where its outputs go."""

    index: int  # position in the plan's input list (implicit in the JSON)
    uri: str
    size: int  # bytes, as listed (0 when missing)
    etag: str
    shard: int
    stem: str | None  # outputs are <output>/<stem>.<ext>; None when it has a problem
    problem: str | None = None  # one line: why this input cannot be transcribed
    reason: str | None = None  # a short code for the problem (REASON_*)

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON shape (``index`` is its position, not a field)."""
        return {
            "uri": self.uri,
            "size": self.size,
            "etag": self.etag,
            "shard": self.shard,
            "stem": self.stem,
            "problem": self.problem,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class PlanDocument:
    """The whole plan as JSON carries it; the spec stays plain JSON (each side parses its own)."""

    spec: Mapping[str, Any]
    shard_count: int
    inputs: tuple[PlanEntry, ...]

    def shard(self, index: int) -> tuple[PlanEntry, ...]:
        """The entries of shard ``index``, in plan order (empty for a shard out of range)."""
        return tuple(item for item in self.inputs if item.shard == index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "spec": dict(self.spec),
            "shardCount": self.shard_count,
            "inputs": [item.to_dict() for item in self.inputs],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same plan is always the same bytes."""
        return canonical_json(self.to_dict())

    @property
    def sha256(self) -> str:
        """What every shard manifest names as ``planSha256``."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, a final newline: one document, one byte string.

    Shared with the manifests, whose bytes are hashed the same way.
    """
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    return (text + "\n").encode("utf-8")


# --- building a plan ------------------------------------------------------------


def build_plan_document(spec: Mapping[str, Any], listed: Sequence[ListedInput], base: str
                        ) -> PlanDocument:
    """The plan for inputs already listed and sorted; ``base`` is cut off their keys.

    ``spec`` is the job spec in its JSON shape, as the plan will carry it (URIs
    normalized, ``jobId`` set); it must name ``output.uri`` (a prefix: ``""``
    or ending in ``/`` after the bucket), ``output.formats`` and ``parallelism``.
    """
    output_key = uri_key(str(spec["output"]["uri"]))
    formats = [str(fmt) for fmt in spec["output"]["formats"]]
    keys = [uri_key(item.uri) for item in listed]
    relative = [key[len(base):] if key.startswith(base) else key for key in keys]
    stems = output_stems(relative)
    weights = [(item.size or 0) + FILE_OVERHEAD_BYTES for item in listed]
    shard_count = max(1, min(int(spec["parallelism"]), len(listed)))
    shards = balance(weights, shard_count)
    inputs: list[PlanEntry] = []
    for index, (item, stem, shard) in enumerate(zip(listed, stems, shards, strict=True)):
        problem, reason = _problem(output_key, formats, item, stem)
        inputs.append(PlanEntry(
            index=index,
            uri=item.uri,
            size=item.size or 0,
            etag=item.etag if item.size is not None else "",
            shard=shard,
            stem=None if problem else stem,
            problem=problem,
            reason=reason,
        ))
    return PlanDocument(spec, shard_count, tuple(inputs))


def _problem(output_key: str, formats: Sequence[str], item: ListedInput, stem: str
             ) -> tuple[str | None, str | None]:
    """Why ``item`` cannot be transcribed (a message and a REASON_* code), or ``(None, None)``."""
    if item.size is None:
        return MISSING_PROBLEM, REASON_MISSING
    if is_reserved(stem):
        return f"its output name {stem!r} falls in steno's reserved folder", REASON_INVALID_KEY
    for fmt in formats:
        problem = output_key_problem(output_key + f"{stem}.{fmt}")
        if problem is not None:
            return f"cannot name its output: {problem}", REASON_INVALID_KEY
    return None, None


def balance(weights: Sequence[int], shard_count: int) -> list[int]:
    """The shard of each item: heaviest first onto the lightest shard (ties: lowest index).

    LPT keeps every shard within one item's weight of the lightest, and the
    index tie-break makes the assignment a function of the weights alone.
    """
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


def output_stems(relative_keys: Sequence[str]) -> list[str]:
    """``folder/name.ext`` → ``folder/name``, made unique within each folder.

    Uniqueness is per folder because outputs keep the input's folders: only
    names that would land side by side can collide.
    """
    by_folder: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(relative_keys):
        by_folder[folder(key)].append(index)
    stems = [""] * len(relative_keys)
    for parent, indexes in by_folder.items():
        names = [relative_keys[i][len(parent):] for i in indexes]
        for i, stem in zip(indexes, unique_stems(names), strict=True):
            stems[i] = parent + stem
    return stems


def base_stem(name: str) -> str:
    """``talk.wav`` → ``talk`` (works on paths and URIs: only the last name counts).

    Whitespace runs become one space and leading dots go, so a hidden file
    does not make a hidden output; a name with nothing left is
    :data:`FALLBACK_STEM`. POSIX rules always, so the result never depends
    on the machine that plans.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _WHITESPACE_RUN.sub(" ", stem).strip().lstrip(".")
    return stem or FALLBACK_STEM


def unique_stems(names: Sequence[str]) -> list[str]:
    """One stem per name, distinct even when base names repeat.

    ``["a/x.wav", "b/x.wav"]`` → ``["x", "x-1"]``. Suffixes are handed out in
    sorted order of the names, so the same set of inputs gets the same stems
    whatever order a listing returns them in. Stems are compared
    case-insensitively, so ``X.wav`` and ``x.wav`` do not collide on a
    case-insensitive file system either.
    """
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
    """The key up to and including its last ``/`` (``""`` for a key without one)."""
    return key[: key.rfind("/") + 1]


def common_folder(keys: Sequence[str]) -> str:
    """The longest folder (whole ``/``-separated segments) that holds every key.

    Named inputs' stems are relative to it, so ``s3://b/calls/2024/a.wav``
    and ``s3://b/calls/2025/b.wav`` become ``2024/a`` and ``2025/b``.
    """
    if not keys:
        return ""
    folders = [key.split("/")[:-1] for key in keys]
    common: list[str] = []
    for segments in zip(*folders, strict=False):
        if any(segment != segments[0] for segment in segments):
            break
        common.append(segments[0])
    return "".join(segment + "/" for segment in common)


def uri_key(uri: str) -> str:
    """``s3://bucket/some/key`` → ``some/key`` (``""`` for ``s3://bucket`` or ``s3://bucket/``)."""
    return uri.partition("://")[2].partition("/")[2]


def is_reserved(stem: str) -> bool:
    """Whether outputs named ``stem`` would land in steno's own folder."""
    return stem == RESERVED_DIR or stem.startswith(RESERVED_DIR + "/")


def output_key_problem(key: str, *, what: str = "output key") -> str | None:
    """Why steno may not write an object at ``key``, or None.

    A key steno writes must be a plain relative path: not empty, at most
    :data:`MAX_KEY_BYTES` bytes of UTF-8, not absolute, no backslash, no
    control character, no empty, ``.`` or ``..`` segment. Such a key means
    the same object on every S3 implementation and, synced to a file system,
    stays inside its folder. The worker raises this message before every
    write; the planner puts it in the plan as the input's problem.
    """
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


# --- reading a plan -------------------------------------------------------------


def parse_plan_document(data: bytes, where: str = "plan") -> PlanDocument:
    """The plan in ``data``; anything else raises :class:`PlanFormatError`.

    Checks the document's own structure (schema, shard numbers, a stem or a
    problem for every input). The spec is left to the caller, who parses it
    into its own types; a worker also re-validates each stem against it.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise PlanFormatError(f"{where} is not valid JSON: {error}") from None
    try:
        return _document_from_dict(raw)
    except (KeyError, TypeError, ValueError) as error:
        raise PlanFormatError(f"{where} is not a valid plan: {error}") from None


def _document_from_dict(raw: Any) -> PlanDocument:
    if not isinstance(raw, dict) or raw.get("schema") != PLAN_SCHEMA:
        raise PlanFormatError(f"not a plan of schema {PLAN_SCHEMA}")
    spec = raw["spec"]
    if not isinstance(spec, dict):
        raise PlanFormatError(f"spec must be an object, not {type(spec).__name__}")
    shard_count = raw["shardCount"]
    if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
        raise PlanFormatError(f"shardCount must be a positive integer, not {shard_count!r}")
    inputs: list[PlanEntry] = []
    for index, item in enumerate(raw["inputs"]):
        shard = int(item["shard"])
        if not 0 <= shard < shard_count:
            raise PlanFormatError(f"input {index} is assigned to shard {shard} of {shard_count}")
        stem = item.get("stem")
        problem = item.get("problem")
        if stem is None and problem is None:
            raise PlanFormatError(f"input {index} has neither a stem nor a problem")
        inputs.append(PlanEntry(
            index=index,
            uri=str(item["uri"]),
            size=int(item["size"]),
            etag=str(item["etag"]),
            shard=shard,
            stem=None if stem is None else str(stem),
            problem=None if problem is None else str(problem),
            reason=None if item.get("reason") is None else str(item["reason"]),
        ))
    return PlanDocument(spec, shard_count, tuple(inputs))
