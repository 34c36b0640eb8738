"""Opening s3:// URIs: the server's default ``open_uri``, backed by ``steno_inference.storage``.

The storage package (boto3) is optional and imported only when a request
names a URI, so a server without it still serves bytes and streams. The
contract the core relies on: ``open_uri(uri)`` returns a readable binary
object (``read(size)``, optionally ``close()``), raises ``FileNotFoundError``
when the object does not exist, ``PermissionError`` when storage refuses, and
``ValueError`` for a URI it cannot parse.
"""

from __future__ import annotations

import importlib
from typing import Any

from steno_inference.audio import ReadableBinary
from steno_inference.server.failures import UnsupportedUri

STORAGE_MODULE = "steno_inference.storage"
STORAGE_FUNCTION = "open_uri"


def open_with_storage(uri: str) -> ReadableBinary:
    """Open ``uri`` through ``steno_inference.storage.open_uri``."""
    try:
        module: Any = importlib.import_module(STORAGE_MODULE)
    except ImportError:
        raise UnsupportedUri(
            "this server has no object-storage support (steno_inference.storage is not "
            "installed): send the audio bytes instead"
        ) from None
    opener = getattr(module, STORAGE_FUNCTION, None)
    if not callable(opener):
        raise UnsupportedUri(
            f"this server's storage package has no {STORAGE_FUNCTION}(): send the audio bytes"
        )
    readable: ReadableBinary = opener(uri)
    return readable
