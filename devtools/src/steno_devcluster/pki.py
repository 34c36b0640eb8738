"""Certificates and keys for one development cluster, made with ``cryptography``.

One throw-away CA per cluster signs everything:

- etcd's serving certificate and the API server's client certificate for
  etcd (etcd runs with ``--client-cert-auth``, so nothing else can reach it);
- the API server's serving certificate (SANs 127.0.0.1, localhost and the
  in-cluster names ``kubernetes.default.svc…``, plus the first service IP);
- serving certificates for the controller manager's and scheduler's health
  endpoints (so their ``/healthz`` is checked with the same CA);
- client certificates: the admin (group ``system:masters``), the controller
  manager and scheduler (the CNs the bootstrap RBAC roles are bound to), and
  the process kubelet;
- the service-account token signing key pair;
- a separate front-proxy CA and its client certificate, for API aggregation
  (the controllers also read it from ``extension-apiserver-authentication``).

Keys are ECDSA P-256: generated in microseconds (RSA-2048 takes ~50 ms each),
and accepted by every component, service-account tokens (ES256) included.
Certificates are valid for a bounded time (``CERT_VALIDITY``); clusters live
for minutes to days, never longer.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for a `make dev-cluster` left running over a holiday.
CERT_VALIDITY = datetime.timedelta(days=30)
# Tolerate a little clock difference between processes reading the certs.
BACKDATE = datetime.timedelta(minutes=5)

# The only name the API server accepts as an authenticating front proxy.
FRONT_PROXY_CLIENT = "front-proxy-client"
# In-cluster names of the API server (what pods resolve and verify).
API_SERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPki:
    """Every file the control plane and its clients need."""

    ca: CertPair
    front_proxy_ca: CertPair
    front_proxy_client: CertPair
    etcd: CertPair
    apiserver_etcd_client: CertPair
    apiserver: CertPair
    controller_manager_serving: CertPair
    scheduler_serving: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    kubelet: CertPair
    service_account_key: Path  # private key that signs service-account tokens
    service_account_pub: Path  # its public key, for verification


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CERT_VALIDITY)
    )


class CertificateAuthority:
    """A self-signed CA that issues leaf certificates into one folder."""

    def __init__(self, directory: Path, common_name: str, stem: str = "ca") -> None:
        self.directory = directory
        self._key = _new_key()
        self._name = _name(common_name)
        certificate = (
            _builder(self._name, self._name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
        self.pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(self._key, self.pair.key)

    def issue(
        self,
        stem: str,
        common_name: str,
        organization: str | None = None,
        *,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
        client: bool = False,
    ) -> CertPair:
        """Issue a leaf certificate; serving when it has names or IPs, else client."""
        key = _new_key()
        usages = []
        if server_names or server_ips:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client or not usages:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            _builder(_name(common_name, organization), self._name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server_names or server_ips:
            alternative_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternative_names), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        pair = CertPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


def create_cluster_pki(directory: Path, service_ip: str) -> ClusterPki:
    """Write a fresh CA and every certificate of one cluster into *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(directory, "steno-devcluster-ca")
    # A CA of its own, as kubeadm does: the API server trusts requests that
    # carry X-Remote-User headers only from clients this CA signed.
    front_proxy_ca = CertificateAuthority(
        directory, "steno-devcluster-front-proxy-ca", "front-proxy-ca"
    )
    loopback = ("127.0.0.1",)
    service_account_key = _new_key()
    sa_key_path = directory / "service-account.key"
    sa_pub_path = directory / "service-account.pub"
    _write_key(service_account_key, sa_key_path)
    sa_pub_path.write_bytes(
        service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPki(
        ca=ca.pair,
        front_proxy_ca=front_proxy_ca.pair,
        front_proxy_client=front_proxy_ca.issue(
            "front-proxy-client", FRONT_PROXY_CLIENT, client=True
        ),
        # etcd's gRPC gateway dials etcd itself with this certificate: client too.
        etcd=ca.issue(
            "etcd", "etcd", server_names=("localhost",), server_ips=loopback, client=True
        ),
        apiserver_etcd_client=ca.issue("apiserver-etcd-client", "kube-apiserver", client=True),
        apiserver=ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=API_SERVER_DNS_NAMES,
            server_ips=(*loopback, service_ip),
        ),
        controller_manager_serving=ca.issue(
            "controller-manager-serving", "kube-controller-manager", server_ips=loopback
        ),
        scheduler_serving=ca.issue("scheduler-serving", "kube-scheduler", server_ips=loopback),
        admin=ca.issue("admin", "steno-admin", "system:masters", client=True),
        # The bootstrap ClusterRoleBindings name exactly these users.
        controller_manager=ca.issue(
            "controller-manager", "system:kube-controller-manager", client=True
        ),
        scheduler=ca.issue("scheduler", "system:kube-scheduler", client=True),
        # The process kubelet acts for several nodes at once, so it cannot be
        # one `system:node:<name>` identity; it gets the admin group instead.
        kubelet=ca.issue("kubelet", "steno:process-kubelet", "system:masters", client=True),
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
    )
