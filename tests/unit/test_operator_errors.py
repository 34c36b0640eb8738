"""API and storage failures are sorted by what the reconciler does about them."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from kubernetes.client.exceptions import ApiException
from steno_operator import kube, storage

pytestmark = pytest.mark.unit


def _api_exception(status: int, reason: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "reason": reason, "message": f"{reason}!"})
    return error


@pytest.mark.parametrize(("status", "reason", "kind"), [
    (404, "NotFound", kube.NotFoundError),
    (409, "AlreadyExists", kube.AlreadyExistsError),
    (409, "Conflict", kube.TransientApiError),
    (429, "TooManyRequests", kube.TransientApiError),
    (500, "InternalError", kube.TransientApiError),
    (503, "ServiceUnavailable", kube.TransientApiError),
])
def test_api_errors(status: int, reason: str, kind: type) -> None:
    translated = kube._translate(_api_exception(status, reason), "patch status")
    assert type(translated) is kind
    assert translated.status == status and reason in str(translated)


def test_forbidden_is_not_transient_and_no_answer_is() -> None:
    forbidden = kube._translate(_api_exception(403, "Forbidden"), "create job")
    assert type(forbidden) is kube.ApiError
    assert isinstance(kube._translate(ConnectionResetError("reset"), "get job"), kube.TransientApiError)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(("error", "retryable"), [
    (_client_error("SlowDown", 503), True),
    (_client_error("InternalError", 500), True),
    (_client_error("RequestTimeout", 400), True),
    (_client_error("AccessDenied", 403), False),
    (_client_error("NoSuchBucket", 404), False),
    (_client_error("PreconditionFailed", 412), False),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
])
def test_storage_errors(error: Exception, retryable: bool) -> None:
    assert storage._error(error, "s3://b/k", "PUT").retryable is retryable


def test_storage_settings_from_secret_variables() -> None:
    settings = storage.StorageSettings.from_variables(
        {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_ENDPOINT_URL": "http://x:1",
         "AWS_ENDPOINT_URL_S3": "http://s3:2", "AWS_DEFAULT_REGION": "eu-west-1"}, timeout_s=5)
    assert settings.endpoint_url == "http://s3:2"  # the S3-specific variable wins, as in boto3
    assert settings.region == "eu-west-1" and settings.access_key_id == "id"
    assert "secret" not in repr(settings)  # credentials never reach a log line
