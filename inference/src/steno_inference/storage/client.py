"""A small typed wrapper over one boto3 S3 client: the only calls steno makes.

* :meth:`ObjectStorage.list_objects` — every object under a prefix, sorted by
  key (S3 lists in UTF-8 byte order, other stores may not: sorting here makes
  the order the same everywhere).
* :meth:`ObjectStorage.open` — an :class:`~steno_inference.storage.reader.ObjectReader`
  to stream one object version into the decoder.
* :meth:`ObjectStorage.put` — one write with ``Content-MD5`` (and
  ``x-amz-checksum-sha256`` unless in compatibility mode); ``create_only``
  adds ``If-None-Match: *`` so the write fails with
  :class:`~steno_inference.storage.errors.PreconditionFailedError` when the key
  exists. Bodies from the configured threshold up go in parts.
* :meth:`ObjectStorage.upload_parts` — a multipart upload that **always**
  aborts when anything fails, the completion included (a create-only
  completion that loses is a failure too), so no incomplete upload is left
  by a live process. A process killed mid-upload cannot abort; the job
  worker clears such leftovers of its own keys with
  :meth:`ObjectStorage.abort_incomplete_uploads` when it starts.

Every botocore error leaves as a :class:`~steno_inference.storage.errors.StorageError`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from steno_inference.storage.config import StorageConfig, make_s3_client
from steno_inference.storage.errors import (
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StorageUnavailableError,
    translate,
)
from steno_inference.storage.reader import ObjectReader
from steno_inference.storage.uri import InvalidUriError, S3Uri, parse_uri

LOG = logging.getLogger(__name__)

LIST_PAGE_KEYS = 1000  # S3's maximum page of a listing
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing or a HEAD sees it."""

    uri: S3Uri
    size: int  # bytes
    etag: str  # as the store sent it, quotes included: opaque, used for If-Match


@dataclass(frozen=True)
class PutResult:
    """What was written: the store's ETag and the digests of the bytes sent."""

    uri: S3Uri
    etag: str
    size: int
    sha256: str  # hex
    md5: str  # hex


@dataclass(frozen=True)
class IncompleteUpload:
    uri: S3Uri
    upload_id: str


def digests(data: bytes) -> tuple[str, str]:
    """``(sha256 hex, md5 hex)`` of ``data``."""
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class ObjectStorage:
    """Object storage through one S3 client; safe to share between threads."""

    def __init__(self, client: Any, config: StorageConfig) -> None:
        self.client = client
        self.config = config

    @classmethod
    def from_config(cls, config: StorageConfig) -> ObjectStorage:
        return cls(make_s3_client(config), config)

    # ----------------------------------------------------------------- reads

    def list_objects(self, prefix: S3Uri) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix.key``, sorted by key.

        Keys ending in ``/`` (folder markers some tools create) are not objects
        anyone wants transcribed and are left out. The listing is read whole
        before the first item is yielded, as sorting needs it.
        """
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": prefix.bucket, "Prefix": prefix.key, "MaxKeys": LIST_PAGE_KEYS,
            }
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("LIST", str(prefix), self.client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if key.endswith("/"):
                    continue
                found.append(
                    ObjectInfo(S3Uri(prefix.bucket, key), int(item["Size"]), str(item["ETag"]))
                )
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
            if not token:
                raise StorageUnavailableError(str(prefix), "truncated listing without a token")
        found.sort(key=lambda info: info.uri.key)
        yield from found

    def head(self, uri: S3Uri) -> ObjectInfo | None:
        """Size and ETag of ``uri``, or None when there is no such object."""
        try:
            response = self._call(
                "HEAD", str(uri), self.client.head_object, Bucket=uri.bucket, Key=uri.key
            )
        except ObjectNotFoundError:
            return None
        return ObjectInfo(uri, int(response["ContentLength"]), str(response.get("ETag", "")))

    def get_bytes(self, uri: S3Uri, max_bytes: int) -> bytes:
        """The whole object, refused (without reading it) when larger than ``max_bytes``."""
        response = self._call(
            "GET", str(uri), self.client.get_object, Bucket=uri.bucket, Key=uri.key
        )
        body = response["Body"]
        try:
            length = int(response.get("ContentLength", 0))
            if length > max_bytes:
                raise StorageError(
                    str(uri), f"object is {length} bytes, more than the {max_bytes} allowed"
                )
            data: bytes = body.read(max_bytes + 1)
        except StorageError:
            raise
        except Exception as error:
            raise translate(error, str(uri), "reading") from error
        finally:
            body.close()
        if len(data) > max_bytes:
            raise StorageError(str(uri), f"object is larger than the {max_bytes} bytes allowed")
        return data

    def open(self, info: ObjectInfo) -> ObjectReader:
        """A streamed reader of this version of the object (see :class:`ObjectReader`)."""
        return ObjectReader(self.client, info.uri, info.size, info.etag)

    # ---------------------------------------------------------------- writes

    def put(
        self,
        uri: S3Uri,
        data: bytes,
        *,
        create_only: bool = False,
        content_type: str = JSON_CONTENT_TYPE,
    ) -> PutResult:
        """Write ``data`` at ``uri``, checksummed; ``create_only`` fails if the key exists."""
        if len(data) >= self.config.multipart_threshold_bytes:
            part = self.config.part_bytes
            chunks = (data[i : i + part] for i in range(0, len(data), part))
            etag = self.upload_parts(uri, chunks, create_only=create_only,
                                     content_type=content_type)
        else:
            sha256 = hashlib.sha256(data)
            md5 = hashlib.md5(data)  # Content-MD5 is what every S3 store checks
            kwargs: dict[str, Any] = {
                "Bucket": uri.bucket, "Key": uri.key, "Body": data,
                "ContentMD5": _b64(md5.digest()), "ContentType": content_type,
            }
            if self.config.send_sha256:
                kwargs["ChecksumSHA256"] = _b64(sha256.digest())
            if create_only:
                kwargs["IfNoneMatch"] = "*"
            response = self._call("PUT", str(uri), self.client.put_object, **kwargs)
            etag = str(response.get("ETag", ""))
        sha256_hex, md5_hex = digests(data)
        return PutResult(uri, etag, len(data), sha256_hex, md5_hex)

    def upload_parts(
        self,
        uri: S3Uri,
        parts: Iterable[bytes],
        *,
        create_only: bool = False,
        content_type: str = JSON_CONTENT_TYPE,
    ) -> str:
        """A multipart upload of ``parts`` (each but the last >= 5 MiB); returns the ETag.

        Whatever fails — reading ``parts``, a part's upload, the completion
        (including a create-only completion finding the key taken) — the
        upload is aborted before the error propagates.
        """
        create: dict[str, Any] = {"Bucket": uri.bucket, "Key": uri.key,
                                  "ContentType": content_type}
        if self.config.send_sha256:
            create["ChecksumAlgorithm"] = "SHA256"
        started = self._call("CREATE-MULTIPART", str(uri), self.client.create_multipart_upload,
                             **create)
        upload_id = str(started["UploadId"])
        try:
            done: list[dict[str, Any]] = []
            for number, chunk in enumerate(parts, start=1):
                done.append(self._upload_part(uri, upload_id, number, chunk))
            complete: dict[str, Any] = {
                "Bucket": uri.bucket, "Key": uri.key, "UploadId": upload_id,
                "MultipartUpload": {"Parts": done},
            }
            if create_only:
                complete["IfNoneMatch"] = "*"
            response = self._call("COMPLETE-MULTIPART", str(uri),
                                  self.client.complete_multipart_upload, **complete)
            return str(response.get("ETag", ""))
        except BaseException:
            self._abort(uri, upload_id)
            raise

    def _upload_part(self, uri: S3Uri, upload_id: str, number: int, chunk: bytes) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "Bucket": uri.bucket, "Key": uri.key, "UploadId": upload_id, "PartNumber": number,
            "Body": chunk,
            "ContentMD5": _b64(hashlib.md5(chunk).digest()),
        }
        if self.config.send_sha256:
            kwargs["ChecksumSHA256"] = _b64(hashlib.sha256(chunk).digest())
        response = self._call(f"UPLOAD-PART {number}", str(uri), self.client.upload_part,
                              **kwargs)
        entry: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        if self.config.send_sha256:
            entry["ChecksumSHA256"] = response.get("ChecksumSHA256") or kwargs["ChecksumSHA256"]
        return entry

    def _abort(self, uri: S3Uri, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=uri.bucket, Key=uri.key, UploadId=upload_id)
        except Exception as error:  # the original failure matters more; the sweep retries it
            LOG.warning("%s: aborting multipart upload %s failed: %s", uri, upload_id, error)

    def incomplete_uploads(self, prefix: S3Uri) -> list[IncompleteUpload]:
        """Multipart uploads started under ``prefix`` and neither completed nor aborted."""
        found: list[IncompleteUpload] = []
        key_marker: str | None = None
        id_marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": prefix.bucket, "Prefix": prefix.key}
            if key_marker is not None:
                kwargs["KeyMarker"] = key_marker
                if id_marker:
                    kwargs["UploadIdMarker"] = id_marker
            page = self._call("LIST-UPLOADS", str(prefix), self.client.list_multipart_uploads,
                              **kwargs)
            for item in page.get("Uploads", []):
                found.append(IncompleteUpload(S3Uri(prefix.bucket, str(item["Key"])),
                                              str(item["UploadId"])))
            if not page.get("IsTruncated"):
                return found
            key_marker = page.get("NextKeyMarker")
            id_marker = page.get("NextUploadIdMarker")
            if not key_marker:
                return found

    def abort_incomplete_uploads(self, prefix: S3Uri, owned: Callable[[S3Uri], bool]) -> int:
        """Abort the incomplete uploads under ``prefix`` whose key ``owned`` claims; count them."""
        aborted = 0
        for upload in self.incomplete_uploads(prefix):
            if not owned(upload.uri):
                continue
            try:
                self._call("ABORT-MULTIPART", str(upload.uri), self.client.abort_multipart_upload,
                           Bucket=upload.uri.bucket, Key=upload.uri.key,
                           UploadId=upload.upload_id)
            except ObjectNotFoundError:
                continue  # completed or aborted meanwhile
            aborted += 1
        return aborted

    # ----------------------------------------------------------------- calls

    def _call(self, action: str, shown: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except Exception as error:
            raise translate(error, shown, action) from error


def open_uri(uri: str, storage: ObjectStorage | None = None) -> ObjectReader:
    """An ``s3://`` object opened for streaming; its ``name`` is the URI (for messages).

    The gRPC servicer's opener for URI inputs. Pass the server's ``storage``
    (one client for the process, e.g. ``functools.partial(open_uri,
    storage=storage)``); without it, a client configured from the environment
    is made for this call, which costs about a second of CPU (boto3 loads its
    service model per session). Errors follow the servicer's
    contract: :class:`~steno_inference.storage.uri.InvalidUriError` (a
    ``ValueError``) for a malformed URI or a prefix, ``FileNotFoundError``
    for a missing object, ``PermissionError`` when the store refuses
    (credentials, permissions, no such bucket), :class:`StorageError` for
    the rest.
    """
    parsed = parse_uri(uri)
    if not parsed.key or parsed.key.endswith("/"):
        raise InvalidUriError(f"{uri!r} names a prefix, not an object")
    store = storage or ObjectStorage.from_config(StorageConfig.from_env(os.environ))
    try:
        info = store.head(parsed)
    except StorageConfigError as error:
        raise PermissionError(str(error)) from error
    if info is None:
        raise FileNotFoundError(f"{parsed}: no such object")
    return store.open(info)
