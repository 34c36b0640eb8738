"""TLS and mutual TLS credentials for the server and the client, from PEM files.

With a certificate and key the server speaks TLS; adding a client CA turns
on mutual TLS: a client must present a certificate signed by that CA or the
handshake fails (the call never reaches a handler).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS endpoint."""

    cert: Path  # this side's certificate chain
    key: Path  # its private key
    ca: Path | None = None  # server: CA of client certificates (mTLS); client: CA of the server


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {what} {path}: {error.strerror or error}") from None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """TLS, or mTLS when ``files.ca`` is set."""
    pair = (_read(files.key, "TLS key"), _read(files.cert, "TLS certificate"))
    client_ca = _read(files.ca, "client CA") if files.ca is not None else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client side: trust ``ca`` (else the system roots); present ``cert``/``key`` for mTLS."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate") if ca is not None else None,
        private_key=_read(key, "client key") if key is not None else None,
        certificate_chain=_read(cert, "client certificate") if cert is not None else None,
    )
