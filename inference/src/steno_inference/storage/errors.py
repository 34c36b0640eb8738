"""What can go wrong talking to object storage, in a few classes callers can act on.

boto3 reports failures as ``botocore`` exceptions with string codes; this
module turns each into one :class:`StorageError` subclass, by what the caller
should do about it:

========================  =========================================  ==========
class                     typical cause                              retryable
========================  =========================================  ==========
ObjectNotFoundError       404, ``NoSuchKey``                         no
PreconditionFailedError   412: a create-only write found the key     no
                          taken, or an ``If-Match`` read found the
                          object changed
StorageConfigError        403 (bad credentials, no permission),      no
                          ``NoSuchBucket``, an invalid request
StorageUnavailableError   network errors, timeouts, 5xx, throttling, yes
                          409 ``ConditionalRequestConflict``
IntegrityError            ``BadDigest``: the bytes that arrived are  yes
                          not the bytes sent
========================  =========================================  ==========

botocore already retried the retryable ones (``standard`` mode) before they
reach here, so a :class:`StorageUnavailableError` means the store stayed
unavailable for the whole retry budget.
"""

from __future__ import annotations

from typing import Any

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
CONFIG_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthorizationHeaderMalformed",
        "NoSuchBucket",
        "InvalidBucketName",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidRequest",
        "NotImplemented",
        "403",
    }
)
INTEGRITY_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
# Codes that come with a 4xx status but go away on their own.
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "SlowDown", "ConditionalRequestConflict", "OperationAborted",
     "Throttling", "TooManyRequests"}
)


class StorageError(RuntimeError):
    """An object-storage call failed. ``uri`` names the object, ``code`` the store's code."""

    retryable = False

    def __init__(self, uri: str, problem: str, code: str = "") -> None:
        super().__init__(f"{uri}: {problem}")
        self.uri = uri
        self.problem = problem
        self.code = code


class ObjectNotFoundError(StorageError):
    """The object (or multipart upload) does not exist."""


class PreconditionFailedError(StorageError):
    """A conditional request's condition did not hold (HTTP 412)."""


class StorageConfigError(StorageError):
    """Credentials, permissions, bucket or endpoint are wrong: retrying will not help."""


class StorageUnavailableError(StorageError):
    """The store did not answer usefully within the retry budget: try again later."""

    retryable = True


class IntegrityError(StorageError):
    """Bytes were damaged on the way (a checksum did not match)."""

    retryable = True


def error_code(error: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` for other errors)."""
    response: Any = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else ""


def http_status(error: BaseException) -> int:
    response: Any = getattr(error, "response", None)
    if not isinstance(response, dict):
        return 0
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status) if status else 0


def translate(error: BaseException, uri: str, action: str) -> StorageError:
    """The :class:`StorageError` for a botocore (or network) exception raised by ``action``."""
    if isinstance(error, StorageError):
        return error
    code = error_code(error)
    status = http_status(error)
    message = f"{action} failed: {code or type(error).__name__}"
    detail = _message(error)
    if detail:
        message += f" ({detail})"
    if code in NOT_FOUND_CODES or status == 404:
        return ObjectNotFoundError(uri, message, code)
    if code in PRECONDITION_CODES or status == 412:
        return PreconditionFailedError(uri, message, code)
    if code in INTEGRITY_CODES:
        return IntegrityError(uri, message, code)
    if code in TRANSIENT_CODES:
        return StorageUnavailableError(uri, message, code)
    if code in CONFIG_CODES or status in (400, 401, 403):
        return StorageConfigError(uri, message, code)
    return StorageUnavailableError(uri, message, code)


def _message(error: BaseException) -> str:
    response: Any = getattr(error, "response", None)
    if isinstance(response, dict):
        text = response.get("Error", {}).get("Message")
        if text:
            return " ".join(str(text).split())
        return ""
    return " ".join(str(error).split())
