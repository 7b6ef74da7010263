"""The bootstrap API key comes from its Secrets Manager secret, read as the API's role once per
container, never from the environment (template.yaml: ApiKeySecret, JOBGATE_API_KEY_SECRET)."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from jobgate.adapters import aws as aws_clients

from tests.integration.conftest import API_KEY
from tests.support.aws import Resources
from tests.support.lambdas import call_api, load_handler
from tests.support.strict import StrictAws, as_function


@pytest.fixture
def secret_env(stack_env: Resources, aws: StrictAws, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("JOBGATE_API_KEY")
    monkeypatch.setenv("JOBGATE_API_KEY_SECRET", aws.api_key_secret)
    yield aws.api_key_secret
    boto3.client("secretsmanager").put_secret_value(SecretId=aws.api_key_secret, SecretString=API_KEY)


def test_the_api_reads_its_key_from_the_secret_once_per_container(secret_env: str) -> None:
    api = load_handler("api")
    assert call_api(api, "GET", "/v1/jobs", headers={"X-API-Key": API_KEY}).status == 200
    assert call_api(api, "GET", "/v1/jobs", headers={"X-API-Key": "not-the-key-0123456789"}).status == 401

    # The key is rotated: a running container keeps the key it read; a new one reads the new key.
    rotated = "rotated-bootstrap-key-0123456789"
    boto3.client("secretsmanager").put_secret_value(SecretId=secret_env, SecretString=rotated)
    assert call_api(api, "GET", "/v1/jobs", headers={"X-API-Key": API_KEY}).status == 200
    fresh = load_handler("api")
    assert call_api(fresh, "GET", "/v1/jobs", headers={"X-API-Key": rotated}).status == 200
    assert call_api(fresh, "GET", "/v1/jobs", headers={"X-API-Key": API_KEY}).status == 401


def test_only_the_roles_that_need_the_key_may_read_it(secret_env: str) -> None:
    with as_function("ws"):
        assert aws_clients.secretsmanager().get_secret_value(SecretId=secret_env)["SecretString"] == API_KEY
    with as_function("worker"), pytest.raises(ClientError) as refused:
        aws_clients.secretsmanager().get_secret_value(SecretId=secret_env)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
