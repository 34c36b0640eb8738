"""Finding a job's inputs: every object under a prefix (filtered by suffix), or named URIs.

The result is a deterministic list: sorted by bucket and key, whatever order
the store answered in, so two plans of the same inputs are the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steno_inference.storage.client import ObjectInfo, ObjectStorage
from steno_inference.storage.uri import S3Uri


class TooManyInputsError(ValueError):
    """More inputs than a job may have; the message says the limit."""


@dataclass(frozen=True)
class Listed:
    """A named input: its object, or None when no such object exists."""

    uri: S3Uri
    info: ObjectInfo | None


def matches_suffix(key: str, suffixes: Sequence[str]) -> bool:
    """Whether ``key`` ends with one of ``suffixes`` (case-insensitive); no suffixes: all."""
    if not suffixes:
        return True
    lowered = key.lower()
    return any(lowered.endswith(suffix.lower()) for suffix in suffixes)


def list_prefix(
    storage: ObjectStorage,
    prefix: S3Uri,
    suffixes: Sequence[str],
    max_objects: int,
    exclude: S3Uri | None = None,
) -> list[Listed]:
    """Objects under ``prefix`` with a matching suffix, sorted, none under ``exclude``.

    ``exclude`` is the job's output prefix: when it lies inside the input
    prefix, the job's own outputs are not inputs of a later plan.
    """
    found: list[Listed] = []
    for info in storage.list_objects(prefix):
        if exclude is not None and info.uri.bucket == exclude.bucket and (
            info.uri.key.startswith(exclude.key)
        ):
            continue
        if not matches_suffix(info.uri.key, suffixes):
            continue
        found.append(Listed(info.uri, info))
        if len(found) > max_objects:
            raise TooManyInputsError(
                f"{prefix} holds more than {max_objects} matching objects; "
                "split the job into several"
            )
    return found


def stat_uris(storage: ObjectStorage, uris: Sequence[S3Uri], max_objects: int) -> list[Listed]:
    """Each named object (sorted, duplicates once) with its size and ETag, or None if missing."""
    unique = sorted(set(uris))
    if len(unique) > max_objects:
        raise TooManyInputsError(f"{len(unique)} inputs named; a job may have {max_objects}")
    return [Listed(uri, storage.head(uri)) for uri in unique]
