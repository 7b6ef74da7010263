"""boto3 clients, created on first use so a cold start pays only for the clients it needs."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# Standard retry mode backs off on throttling; adaptive adds client-side rate limiting.
# Four attempts: throttling back-off then sleeps at most 1+2+4 s, well inside the API's 29 s.
_CONFIG = Config(retries={"total_max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=20)
_S3_CONFIG = _CONFIG.merge(Config(signature_version="s3v4", s3={"addressing_style": "path"}))


@cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def _client(service: str, config: Config = _CONFIG) -> Any:
    # The endpoint comes from AWS_ENDPOINT_URL when set (the local stack), as boto3 reads it itself.
    return _session().client(service, config=config)  # type: ignore[call-overload]


@cache
def dynamodb() -> DynamoDBClient:
    return _client("dynamodb")  # type: ignore[no-any-return]


@cache
def sqs() -> SQSClient:
    return _client("sqs")  # type: ignore[no-any-return]


@cache
def s3() -> S3Client:
    return _client("s3", _S3_CONFIG)  # type: ignore[no-any-return]


def reset_clients() -> None:
    """Forget cached clients (tests that swap endpoints or credentials)."""
    for fn in (_session, dynamodb, sqs, s3):
        fn.cache_clear()
