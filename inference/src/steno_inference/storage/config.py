"""How steno reaches object storage, configured the standard AWS way.

Everything an AWS SDK reads is honoured, because boto3 reads it: the
credentials chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared config and credentials
files, web identity tokens as Kubernetes service accounts get them, instance
metadata). :meth:`StorageConfig.from_env` reads the few settings this module
passes on explicitly, so they are visible and validated in one place:

====================================  ==========================================
variable                              meaning
====================================  ==========================================
``AWS_ENDPOINT_URL_S3``,              the S3 endpoint (unset: AWS S3). GCS:
``AWS_ENDPOINT_URL``                  ``https://storage.googleapis.com``
``AWS_REGION``,                       signing region (unset with an endpoint:
``AWS_DEFAULT_REGION``                ``us-east-1``, which such stores accept)
``AWS_REQUEST_CHECKSUM_CALCULATION``  ``when_supported`` (default) or
                                      ``when_required``: the compatibility
                                      switch for stores that reject the newer
                                      ``x-amz-checksum-*`` headers
``AWS_RESPONSE_CHECKSUM_VALIDATION``  the same for responses
``STENO_S3_ADDRESSING_STYLE``         ``path``, ``virtual`` or ``auto``;
                                      default ``path`` with a custom endpoint
                                      (MinIO, Ceph, SeaweedFS expect it), else
                                      botocore's choice
====================================  ==========================================

Integrity of every write does not depend on the switch: each PUT and each
multipart part carries ``Content-MD5`` (checked by every S3 implementation),
and with ``when_supported`` also ``x-amz-checksum-sha256``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ChecksumMode = Literal["when_supported", "when_required"]
AddressingStyle = Literal["auto", "path", "virtual"]
CHECKSUM_MODES: tuple[ChecksumMode, ...] = ("when_supported", "when_required")
ADDRESSING_STYLES: tuple[AddressingStyle, ...] = ("auto", "path", "virtual")

DEFAULT_REGION = "us-east-1"  # what S3-compatible stores accept when they have no regions
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # per socket read, not per object: a long stream is fine
MAX_ATTEMPTS = 5  # botocore "standard" retries: 1 try + 4 retries with jittered backoff
MAX_POOL_CONNECTIONS = 16  # prefetch + commit threads + the engine's reader, with room
MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3's smallest allowed part (all parts but the last)
MAX_PARTS = 10_000  # S3's limit on parts per upload
MULTIPART_THRESHOLD_BYTES = 64 * MIB  # a body this large or larger goes up in parts
PART_BYTES = 16 * MIB  # size of each part (so the largest object is ~156 GiB)


class StorageConfigurationError(ValueError):
    """A storage setting has a value steno cannot use; the message names it."""


@dataclass(frozen=True)
class StaticCredentials:
    """Explicit keys (tests, or a caller that has them); otherwise boto3's chain is used."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StorageConfig:
    """Settings for one :class:`~steno_inference.storage.client.ObjectStorage`."""

    endpoint_url: str | None = None  # None: AWS S3 (or what the AWS config file says)
    region: str | None = None  # None: botocore's chain; us-east-1 with a custom endpoint
    addressing_style: AddressingStyle | None = None  # None: path with an endpoint, else auto
    request_checksums: ChecksumMode = "when_supported"
    response_checksums: ChecksumMode = "when_supported"
    credentials: StaticCredentials | None = None  # None: boto3's credential chain
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    read_timeout_s: float = READ_TIMEOUT_S
    max_attempts: int = MAX_ATTEMPTS
    multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES
    part_bytes: int = PART_BYTES

    def __post_init__(self) -> None:
        if self.request_checksums not in CHECKSUM_MODES:
            raise StorageConfigurationError(
                f"request checksums must be one of {', '.join(CHECKSUM_MODES)}, "
                f"not {self.request_checksums!r}"
            )
        if self.response_checksums not in CHECKSUM_MODES:
            raise StorageConfigurationError(
                f"response checksums must be one of {', '.join(CHECKSUM_MODES)}, "
                f"not {self.response_checksums!r}"
            )
        if self.addressing_style is not None and self.addressing_style not in ADDRESSING_STYLES:
            raise StorageConfigurationError(
                f"addressing style must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"not {self.addressing_style!r}"
            )
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise StorageConfigurationError(
                f"endpoint URL {self.endpoint_url!r} must start with http:// or https://"
            )
        if self.part_bytes < MIN_PART_BYTES:
            raise StorageConfigurationError(
                f"part size {self.part_bytes} bytes is below S3's minimum of {MIN_PART_BYTES}"
            )
        if self.multipart_threshold_bytes < self.part_bytes:
            raise StorageConfigurationError(
                "the multipart threshold must be at least one part "
                f"({self.multipart_threshold_bytes} < {self.part_bytes} bytes)"
            )
        if self.max_attempts < 1:
            raise StorageConfigurationError(f"max attempts must be >= 1, not {self.max_attempts}")
        if not (self.connect_timeout_s > 0 and self.read_timeout_s > 0):
            raise StorageConfigurationError("storage timeouts must be positive")

    @property
    def send_sha256(self) -> bool:
        """Whether writes carry ``x-amz-checksum-sha256`` (not in compatibility mode)."""
        return self.request_checksums == "when_supported"

    @property
    def max_object_bytes(self) -> int:
        return self.part_bytes * MAX_PARTS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageConfig:
        """The settings in ``env`` (normally ``os.environ``; see the module docstring)."""
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        style = env.get("STENO_S3_ADDRESSING_STYLE") or None
        credentials = None
        key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if key_id and secret:
            credentials = StaticCredentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None)
        return cls(
            endpoint_url=endpoint,
            region=region,
            addressing_style=_choice(style, ADDRESSING_STYLES, "STENO_S3_ADDRESSING_STYLE"),
            request_checksums=_checksum_mode(env, "AWS_REQUEST_CHECKSUM_CALCULATION"),
            response_checksums=_checksum_mode(env, "AWS_RESPONSE_CHECKSUM_VALIDATION"),
            credentials=credentials,
        )


def _choice(value: str | None, allowed: tuple[Any, ...], name: str) -> Any:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in allowed:
        raise StorageConfigurationError(
            f"{name}={value!r}: use one of {', '.join(allowed)}"
        )
    return lowered


def _checksum_mode(env: Mapping[str, str], name: str) -> ChecksumMode:
    chosen = _choice(env.get(name) or None, CHECKSUM_MODES, name)
    return "when_supported" if chosen is None else chosen


def make_s3_client(config: StorageConfig) -> Any:
    """A new boto3 S3 client (its own session: nothing is shared through module globals)."""
    import boto3  # heavy: only code that really talks to storage pays for the import
    from botocore.config import Config

    region = config.region or (DEFAULT_REGION if config.endpoint_url else None)
    style = config.addressing_style or ("path" if config.endpoint_url else None)
    options: dict[str, Any] = {
        "connect_timeout": config.connect_timeout_s,
        "read_timeout": config.read_timeout_s,
        "retries": {"mode": "standard", "max_attempts": config.max_attempts},
        "max_pool_connections": MAX_POOL_CONNECTIONS,
        "request_checksum_calculation": config.request_checksums,
        "response_checksum_validation": config.response_checksums,
        "tcp_keepalive": True,
    }
    if style is not None:
        options["s3"] = {"addressing_style": style}
    session = boto3.session.Session()
    keys: dict[str, Any] = {}
    if config.credentials is not None:
        keys = {
            "aws_access_key_id": config.credentials.access_key_id,
            "aws_secret_access_key": config.credentials.secret_access_key,
            "aws_session_token": config.credentials.session_token,
        }
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=region,
        config=Config(**options),
        **keys,
    )
