"""Storage settings from the standard AWS environment."""

from __future__ import annotations

import pytest
from steno_inference.storage.config import (
    MIN_PART_BYTES,
    StaticCredentials,
    StorageConfig,
    StorageConfigurationError,
    make_s3_client,
)

pytestmark = pytest.mark.unit


def test_defaults_leave_everything_to_the_aws_chain() -> None:
    config = StorageConfig.from_env({})
    assert config.endpoint_url is None
    assert config.region is None
    assert config.credentials is None
    assert config.request_checksums == "when_supported"
    assert config.send_sha256


def test_environment_is_read_the_aws_way() -> None:
    config = StorageConfig.from_env({
        "AWS_ENDPOINT_URL": "http://general:1",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",  # the service-specific one wins
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-central-1",  # AWS_REGION wins over AWS_DEFAULT_REGION
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        "STENO_S3_ADDRESSING_STYLE": "virtual",
    })
    assert config.endpoint_url == "http://127.0.0.1:9000"
    assert config.region == "eu-central-1"
    assert config.credentials == StaticCredentials("key", "secret")
    assert "secret" not in repr(config)
    assert config.request_checksums == config.response_checksums == "when_required"
    assert not config.send_sha256  # the compatibility switch drops x-amz-checksum-sha256
    assert config.addressing_style == "virtual"


@pytest.mark.parametrize(("env", "problem"), [
    ({"AWS_REQUEST_CHECKSUM_CALCULATION": "sometimes"}, "AWS_REQUEST_CHECKSUM_CALCULATION"),
    ({"STENO_S3_ADDRESSING_STYLE": "dns"}, "STENO_S3_ADDRESSING_STYLE"),
    ({"AWS_ENDPOINT_URL": "ftp://x"}, "http:// or https://"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(StorageConfigurationError, match=problem):
        StorageConfig.from_env(env)


def test_part_size_limits() -> None:
    with pytest.raises(StorageConfigurationError, match="minimum"):
        StorageConfig(part_bytes=MIN_PART_BYTES - 1)
    with pytest.raises(StorageConfigurationError, match="threshold"):
        StorageConfig(part_bytes=MIN_PART_BYTES * 2, multipart_threshold_bytes=MIN_PART_BYTES)


def test_client_uses_path_style_and_checksum_switch_for_custom_endpoints() -> None:
    config = StorageConfig(endpoint_url="http://127.0.0.1:9", request_checksums="when_required",
                           response_checksums="when_required",
                           credentials=StaticCredentials("k", "s"))
    client = make_s3_client(config)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "us-east-1"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"
    assert client.meta.config.retries["mode"] == "standard"
