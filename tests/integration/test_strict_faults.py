"""Fault injection on the local AWS: the functions' calls fail as AWS calls fail (throttling, 500s,
connections lost before or after the call is applied, answers held past the client's read timeout,
slow S3 transfers); the admin identity (plumbing, test set-up) and end users' presigned requests never
do."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.blobs import BlobStore

from tests.integration.conftest import API_KEY
from tests.support.aws import Resources
from tests.support.lambdas import call_api, load_handler
from tests.support.strict import StrictAws, as_function


def client_as(strict: StrictAws, folder: str, service: str, **config: Any) -> Any:
    credentials = strict.credentials[folder]
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=strict.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
        config=Config(signature_version="s3v4", retries={"total_max_attempts": 1}, **config),
    )


def _code(error: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = error.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def queued(resources: Resources) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_throttling_and_errors_come_as_each_service_sends_them(
    aws_faults: StrictAws, resources: Resources
) -> None:
    aws_faults.faults(rate=1.0, kinds=["throttle"])
    with pytest.raises(ClientError) as dynamodb:
        client_as(aws_faults, "api", "dynamodb").get_item(
            TableName=resources.table_name, Key={"pk": {"S": "a"}, "sk": {"S": "b"}}
        )
    assert _code(dynamodb) == ("ProvisionedThroughputExceededException", 400)
    with pytest.raises(ClientError) as sqs:
        client_as(aws_faults, "api", "sqs").send_message(QueueUrl=resources.queue_url, MessageBody="x")
    assert _code(sqs) == ("RequestThrottled", 403)
    with pytest.raises(ClientError) as s3:
        client_as(aws_faults, "api", "s3").head_bucket(Bucket=resources.bucket_name)
    assert _code(s3) == ("503", 503)  # a HEAD's error has no body: botocore names it by its status
    assert aws_faults.fault_state()["injected"] == {"throttle": 3}

    aws_faults.faults(rate=1.0, kinds=["error"])  # counts start again with each setting
    with pytest.raises(ClientError) as broken:
        client_as(aws_faults, "worker", "dynamodb").describe_table(TableName=resources.table_name)
    assert _code(broken) == ("InternalServerError", 500)

    # The admin identity (the stack's plumbing, test set-up) never gets a fault.
    boto3.client("dynamodb").describe_table(TableName=resources.table_name)
    assert aws_faults.fault_state()["injected"] == {"error": 1}


def test_a_dropped_answer_leaves_the_call_applied_and_a_reset_does_not(
    aws_faults: StrictAws, resources: Resources
) -> None:
    sqs = client_as(aws_faults, "api", "sqs")
    aws_faults.faults(rate=1.0, kinds=["drop"])
    with pytest.raises(ConnectionClosedError):
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody="applied")
    aws_faults.faults(rate=1.0, kinds=["reset"])
    with pytest.raises(ConnectionClosedError):
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody="never")
    aws_faults.faults(rate=0.0)
    got = boto3.client("sqs").receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10)
    assert [m["Body"] for m in got["Messages"]] == ["applied"]


def test_a_held_answer_times_the_client_out_after_the_call_was_applied(
    aws_faults: StrictAws, resources: Resources
) -> None:
    aws_faults.faults(rate=1.0, kinds=["timeout"], stall_s=10)
    sqs = client_as(aws_faults, "api", "sqs", read_timeout=1)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody="ambiguous")
    assert time.monotonic() - started < 5  # the client gave up at its read timeout
    aws_faults.faults(rate=0.0)
    assert queued(resources) == 1


def test_slow_s3_moves_object_bodies_at_the_set_rate(aws_faults: StrictAws, resources: Resources) -> None:
    data = bytes(range(256)) * 80  # 20 KiB
    boto3.client("s3").put_object(Bucket=resources.bucket_name, Key="results/slow.bin", Body=data)
    aws_faults.faults(rate=1.0, kinds=["slow"], slow_bytes_per_s=10 * 1024)
    started = time.monotonic()
    body = client_as(aws_faults, "worker", "s3").get_object(
        Bucket=resources.bucket_name, Key="results/slow.bin"
    )
    assert body["Body"].read() == data
    assert time.monotonic() - started >= 1.8


def test_presigned_requests_of_end_users_get_no_faults_unless_asked(
    aws_faults: StrictAws, resources: Resources
) -> None:
    boto3.client("s3").put_object(Bucket=resources.bucket_name, Key="results/x.txt", Body=b"x")
    with as_function("api"):
        url = BlobStore(aws_clients.s3(), resources.bucket_name).presign_get("results/x.txt", expires_s=60)
    aws_faults.faults(rate=1.0, kinds=["throttle"])
    assert httpx.get(url).status_code == 200
    aws_faults.faults(rate=1.0, kinds=["throttle"], presigned=True)
    assert httpx.get(url).status_code == 503


def test_the_api_rides_out_throttling_with_its_retries(
    stack_env: Resources, aws_faults: StrictAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoffs: list[float] = []  # botocore's back-off sleeps, recorded rather than slept
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=backoffs.append))
    api = load_handler("api")
    # The API tries a call three times (jobgate.adapters.aws.API): three throttles in a row are rare.
    aws_faults.faults(rate=0.1, kinds=["throttle"], seed=1)
    answers = [call_api(api, "GET", "/v1/jobs", headers={"X-API-Key": API_KEY}).status for _ in range(10)]
    assert answers == [200] * 10
    assert aws_faults.fault_state()["injected"]["throttle"] == len(backoffs) >= 2
