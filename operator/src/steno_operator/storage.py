"""The operator's object-storage calls: list, head, get, create-only put. The one boto3 user.

The operator reads and writes little: it lists a job's inputs, writes the
plan (create-only), reads the workers' shard manifests, checks that the
outputs they name exist, and writes the result manifest (create-only). The
worker has a richer client (``steno_inference.storage``) that the operator
must not import; this module follows the same conventions so both sides
reach the same store the same way:

* settings come from the job's storage Secret, whose keys are the AWS
  environment variables the worker reads (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3`` or
  ``AWS_ENDPOINT_URL``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``,
  ``STENO_S3_ADDRESSING_STYLE``); without a Secret, boto3's own chain;
* a custom endpoint means path-style addressing and region ``us-east-1``
  unless told otherwise (what MinIO, Ceph and SeaweedFS expect);
* create-only writes send ``If-None-Match: *``: a 412 means the object is
  there already, which the callers treat as "someone wrote it first".

Every failure leaves as :class:`StorageError` with ``retryable`` set for
what may go away (network, 5xx, throttling). A client is created per job and
per Secret version (never in a module global).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REGION = "us-east-1"  # what S3-compatible stores accept when they have no regions
MAX_ATTEMPTS = 4  # botocore "standard" retries inside one call
LIST_PAGE_KEYS = 1000  # S3's largest page
JSON_CONTENT_TYPE = "application/json"
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
# 4xx codes that go away on their own.
TRANSIENT_CODES = frozenset({"RequestTimeout", "SlowDown", "ConditionalRequestConflict",
                             "OperationAborted", "Throttling", "TooManyRequests"})


class StorageError(RuntimeError):
    """A storage call failed; ``retryable`` says whether trying again may help."""

    def __init__(self, uri: str, problem: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(f"{uri}: {problem}")
        self.uri = uri
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # as sent, quotes included


@dataclass(frozen=True)
class StorageSettings:
    """Where the store is and who we are: from a Secret's data (AWS variable names)."""

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)  # never in logs
    session_token: str | None = field(default=None, repr=False)
    timeout_s: float = 20.0

    @classmethod
    def from_variables(cls, values: Mapping[str, str], timeout_s: float) -> StorageSettings:
        def get(*names: str) -> str | None:
            for name in names:
                if values.get(name):
                    return values[name]
            return None

        return cls(
            endpoint_url=get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            addressing_style=get("STENO_S3_ADDRESSING_STYLE"),
            access_key_id=get("AWS_ACCESS_KEY_ID"),
            secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
            timeout_s=timeout_s,
        )


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def _error(error: BaseException, uri: str, action: str) -> StorageError:
    response: Any = getattr(error, "response", None)
    code, status = "", 0
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code") or "")
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    problem = f"{action} failed: {code or type(error).__name__} ({error})"
    transient = (code in TRANSIENT_CODES or status >= 500 or status in (0, 408, 429)
                 or code == "")
    if code in NOT_FOUND_CODES or status == 404 or code in PRECONDITION_CODES or status == 412:
        transient = False
    return StorageError(uri, problem, retryable=transient, code=code or str(status or ""))


class ObjectStore:
    """Blocking calls on one boto3 S3 client (thread-safe; called from worker threads)."""

    def __init__(self, settings: StorageSettings) -> None:
        import boto3  # heavy: imported when a store is first needed
        from botocore.config import Config

        region = settings.region or (DEFAULT_REGION if settings.endpoint_url else None)
        style = settings.addressing_style or ("path" if settings.endpoint_url else None)
        options: dict[str, Any] = {
            "connect_timeout": settings.timeout_s,
            "read_timeout": settings.timeout_s,
            "retries": {"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        }
        if style is not None:
            options["s3"] = {"addressing_style": style}
        keys: dict[str, Any] = {}
        if settings.access_key_id and settings.secret_access_key:
            keys = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": settings.secret_access_key,
                "aws_session_token": settings.session_token,
            }
        session = boto3.session.Session()
        self._client = session.client(
            "s3", endpoint_url=settings.endpoint_url, region_name=region,
            config=Config(**options), **keys,
        )

    def list(self, prefix_uri: str) -> list[ObjectInfo]:
        """Every object under a prefix (not folder markers), sorted by key."""
        bucket, prefix = split_uri(prefix_uri)
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix,
                                      "MaxKeys": LIST_PAGE_KEYS}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self._client.list_objects_v2(**kwargs)
            except Exception as error:  # botocore raises many classes; all are translated
                raise _error(error, prefix_uri, "LIST") from error
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if not key.endswith("/"):
                    found.append(ObjectInfo(key, int(item["Size"]), str(item["ETag"])))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated"):
                break
            if not token:
                raise StorageError(prefix_uri, "truncated listing without a token",
                                   retryable=True)
        found.sort(key=lambda info: info.key)
        return found

    def head(self, uri: str) -> ObjectInfo | None:
        bucket, key = split_uri(uri)
        try:
            response = self._client.head_object(Bucket=bucket, Key=key)
        except Exception as error:
            translated = _error(error, uri, "HEAD")
            if translated.code in NOT_FOUND_CODES:
                return None
            raise translated from error
        return ObjectInfo(key, int(response["ContentLength"]), str(response.get("ETag", "")))

    def get(self, uri: str, max_bytes: int) -> bytes | None:
        """The object's bytes, None when it does not exist; larger than ``max_bytes`` raises."""
        bucket, key = split_uri(uri)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except Exception as error:
            translated = _error(error, uri, "GET")
            if translated.code in NOT_FOUND_CODES:
                return None
            raise translated from error
        size = int(response.get("ContentLength", 0))
        body = response["Body"]
        try:
            if size > max_bytes:
                raise StorageError(uri, f"is {size} bytes, more than {max_bytes}",
                                   retryable=False)
            data: bytes = body.read()
        except StorageError:
            raise
        except Exception as error:
            raise _error(error, uri, "GET") from error
        finally:
            body.close()
        return data

    def put_create_only(self, uri: str, data: bytes, content_type: str = JSON_CONTENT_TYPE
                        ) -> bool:
        """Write ``data`` unless the key exists (``If-None-Match: *``); False when it exists."""
        bucket, key = split_uri(uri)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # S3's Content-MD5 check
        try:
            self._client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                ContentMD5=md5, IfNoneMatch="*",
            )
        except Exception as error:
            translated = _error(error, uri, "PUT")
            if translated.code in PRECONDITION_CODES:
                return False
            raise translated from error
        return True
