"""Write kubeconfig files, and make TLS contexts from the same certificates.

Kubeconfigs embed the certificates (``*-data`` fields) so a file stays valid
when copied elsewhere. They are written as JSON, which every kubeconfig
reader accepts (JSON is YAML), so no YAML library is needed.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

from steno_devcluster.pki import CertPair

CLUSTER_NAME = "steno-dev"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_kubeconfig(path: Path, server: str, ca_cert: Path, client: CertPair, user: str) -> Path:
    """A kubeconfig for *user* (authenticated by *client*) talking to *server*."""
    context = f"{user}@{CLUSTER_NAME}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    # It holds a private key.
    path.chmod(0o600)
    return path


def client_ssl_context(ca_cert: Path, client: CertPair | None = None) -> ssl.SSLContext:
    """Verify servers against *ca_cert*; present *client* when given."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context
