"""Convert a CT2 model once, into the cache, atomically.

A conversion lands in ``<cache_dir>/models/<name>-<digest>/`` where the
digest is a SHA-256 over the converter version and the bytes of every input
file (about 0.15 s for the 145 MB of ``base``): the same weights under any
name or path share one entry, and a changed converter or changed weights get
a fresh one.

Publication is atomic: the converter writes into a hidden temporary
directory next to the destination, its files are fsynced, then one
``rename`` makes it visible. Readers therefore see either nothing or a whole
model. Two processes converting at once both finish; the loser of the rename
discards its copy and uses the winner's. An interrupted run leaves only a
hidden temporary directory, which a later conversion removes once it is old
enough that no live process can still be writing it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from steno_inference.models.ct2_convert import (
    CONVERTER_VERSION,
    OUTPUT_FILES,
    Ct2WhisperSource,
    convert_ct2_whisper,
)
from steno_inference.models.errors import ModelError

log = logging.getLogger(__name__)

MODELS_SUBDIR = "models"
DIGEST_PREFIX_LENGTH = 16  # 64 bits of SHA-256: no accidental collisions in one cache
TEMP_SUFFIX = ".tmp"
PUBLISH_ATTEMPTS = 3  # renames tried when an incomplete entry is in the way
# A conversion takes seconds; a temporary directory this old is from a dead run.
STALE_TEMP_AGE_S = 3600.0
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def converted_model_dir(source: Ct2WhisperSource, name: str, cache_dir: Path) -> Path:
    """Return a transformers directory for ``source``, converting it on first use."""
    models_dir = cache_dir / MODELS_SUBDIR
    digest = source_digest(source)[:DIGEST_PREFIX_LENGTH]
    existing = _find_complete(models_dir, digest)
    if existing is not None:
        return existing

    final = models_dir / f"{_safe_name(name)}-{digest}"
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(models_dir)
    temporary = _temporary_path(models_dir, final.name)
    temporary.mkdir()
    try:
        started = time.monotonic()
        convert_ct2_whisper(source, temporary)
        _fsync_tree(temporary)
        published = _publish(temporary, final, models_dir)
        log.info("converted %s into %s in %.1f s", name, final, time.monotonic() - started)
        return published
    except BaseException:
        # Includes KeyboardInterrupt: never leave a half-written directory behind.
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _publish(temporary: Path, final: Path, models_dir: Path) -> Path:
    """Rename ``temporary`` to ``final``; if another process got there first, use theirs."""
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            os.rename(temporary, final)  # atomic; fails if final is a non-empty directory
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if _is_complete(final):
                log.info("%s was converted concurrently; using that copy", final)
                shutil.rmtree(temporary, ignore_errors=True)
                return final
            # An incomplete entry (files deleted by hand): set it aside and retry.
            _discard(final, models_dir)
            continue
        _fsync_directory(models_dir)
        return final
    raise ModelError(f"{final}: could not publish the converted model (it keeps changing)")


def source_digest(source: Ct2WhisperSource) -> str:
    """SHA-256 (hex) of the converter version and every input file's name and bytes."""
    digest = hashlib.sha256(f"steno-ct2-whisper-converter-{CONVERTER_VERSION}\n".encode())
    for path in source.files():
        # File names, not paths: the same weights elsewhere share the entry.
        digest.update(f"{path.name}\n{path.stat().st_size}\n".encode())
        with path.open("rb") as file:
            hashlib.file_digest(file, lambda: digest)
    return digest.hexdigest()


def _find_complete(models_dir: Path, digest: str) -> Path | None:
    if not models_dir.is_dir():
        return None
    for candidate in sorted(models_dir.glob(f"*-{digest}")):
        if not candidate.name.startswith(".") and _is_complete(candidate):
            return candidate
    return None


def _is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in OUTPUT_FILES)


def _safe_name(name: str) -> str:
    return _UNSAFE_NAME_CHARS.sub("-", name).strip("-.") or "model"


def _temporary_path(models_dir: Path, final_name: str) -> Path:
    # Hidden, and named after the process, so stale ones can be recognised.
    return models_dir / f".{final_name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _discard(directory: Path, models_dir: Path) -> None:
    aside = _temporary_path(models_dir, directory.name)
    with contextlib.suppress(FileNotFoundError):  # someone else removed it: fine
        os.rename(directory, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_temporaries(models_dir: Path) -> None:
    now = time.time()
    for entry in models_dir.glob(f".*{TEMP_SUFFIX}"):
        try:
            age_s = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if age_s > STALE_TEMP_AGE_S:
            log.info("removing %s, left by an interrupted conversion", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    # Without this, a crash just after the rename could publish empty files.
    for path in directory.iterdir():
        with path.open("rb") as file:
            os.fsync(file.fileno())
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
