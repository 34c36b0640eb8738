"""Helpers for the gRPC server's tests: servers on free ports, a gate on the encoder, certificates.

:class:`EncoderGate` holds the engine's decoder thread inside the encoder
until the test opens it, so "queued", "in flight" and "admitted" are states
a test can put the server in deterministically, not races it hopes to win.
It counts what the encoder really saw, which is how a test proves that a
window "never reached the GPU".
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

IDLE_TIMEOUT_S = 60.0  # after a test, the shared engine must drain within this
GATE_TIMEOUT_S = 120.0  # a gate left closed by a failing test opens by itself
POLL_S = 0.02


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition that has no event to wait on (the engine's queue, say)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


class EncoderGate:
    """Blocks ``runner.encode`` until ``open()``; records the batch sizes encoded."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self._original = runner.encode
        self._open = threading.Event()
        self.entered = threading.Event()  # set when a batch is waiting at the gate
        self.batches: list[int] = []

    def _encode(self, features: Any) -> Any:
        self.batches.append(int(features.shape[0]))
        self.entered.set()
        self._open.wait(GATE_TIMEOUT_S)
        return self._original(features)

    def open(self) -> None:
        self._open.set()

    def __enter__(self) -> EncoderGate:
        self._runner.encode = self._encode  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.set()
        del self._runner.encode


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def serve(tiny_engine: Any) -> Iterator[Callable[..., Any]]:
    """Start servers on 127.0.0.1:0 around the shared engine; stopped after the test."""
    from steno_inference.server.server import ServerSettings, build_server

    servers: list[Any] = []

    def start(
        *, serving: bool = True, progress: Any = None, open_uri: Any = None, **settings: Any
    ) -> Any:
        server = build_server(
            tiny_engine, ServerSettings(host="127.0.0.1", port=0, **settings),
            progress=progress, open_uri=open_uri,
        )
        server.start()
        if serving:
            server.set_serving()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    # The next test shares the engine: nothing of this one may still be queued.
    wait_until(
        lambda: tiny_engine.stats().queued_windows == 0 and tiny_engine.stats().busy_slots == 0,
        IDLE_TIMEOUT_S, "an idle decoder",
    )


@pytest.fixture
def channels() -> Iterator[Callable[[Any], Any]]:
    """Insecure channels to servers, closed after the test."""
    import grpc

    opened: list[Any] = []

    def open_channel(server: Any) -> Any:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


# ------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsSet:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def make_certificates(directory: Path) -> TlsSet:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(path: Path, private: ec.EllipticCurvePrivateKey) -> Path:
        path.write_bytes(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        return path

    def write_cert(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        private = key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common)).issuer_name(name(common))
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(private, hashes.SHA256())
        )
        return private, cert

    def leaf(
        common: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
        usage: x509.ObjectIdentifier, server: bool,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        private = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common)).issuer_name(ca_cert.subject)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]),
                critical=False,
            )
        return private, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("steno test CA")
    _other_key, other_cert = ca("another CA")
    server_key, server_cert = leaf(
        "localhost", ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH, server=True
    )
    client_key, client_cert = leaf(
        "steno client", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH, server=False
    )
    return TlsSet(
        ca=write_cert(directory / "ca.pem", ca_cert),
        server_cert=write_cert(directory / "server.pem", server_cert),
        server_key=write_key(directory / "server-key.pem", server_key),
        client_cert=write_cert(directory / "client.pem", client_cert),
        client_key=write_key(directory / "client-key.pem", client_key),
        other_ca=write_cert(directory / "other-ca.pem", other_cert),
    )
