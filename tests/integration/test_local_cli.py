"""`jobgate dev` as a user runs it, on a small template: it serves, it stops cleanly, it refuses clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import boto3
import httpx
import pytest
from jobgate_local.testing import DevProcess, free_port, jobgate_command, start_dev

DEV_KEY = "cli-test-key-0123456789"

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  ApiKey:
    Type: String
    NoEcho: true
Globals:
  Function:
    Environment:
      Variables:
        TABLE_NAME: !Ref Table
        QUEUE_URL: !Ref Queue
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
  DeadLetters:
    Type: AWS::SQS::Queue
  Files:
    Type: AWS::S3::Bucket
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 10
      RedrivePolicy: {deadLetterTargetArn: !GetAtt DeadLetters.Arn, maxReceiveCount: 2}
  Api:
    Type: AWS::Serverless::HttpApi
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: api/
      Handler: app.handler
      Runtime: python3.12
      Environment:
        Variables:
          API_KEY: !Ref ApiKey
      Policies:
        - SQSSendMessagePolicy: {QueueName: !GetAtt Queue.QueueName}
      Events:
        All:
          Type: HttpApi
          Properties:
            ApiId: !Ref Api
            Path: /{proxy+}
            Method: ANY
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      Timeout: 10
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref Table}
      Events:
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            BatchSize: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
    Metadata:
      Dockerfile: worker/Dockerfile
      DockerContext: .
"""

API_HANDLER = dedent(
    """
    import json, os
    import boto3

    sqs = boto3.client("sqs")

    def handler(event, context):
        if event["headers"].get("x-api-key") != os.environ["API_KEY"]:
            return {"statusCode": 401, "body": "no"}
        if event["rawPath"] == "/enqueue":
            sqs.send_message(QueueUrl=os.environ["QUEUE_URL"], MessageBody=event["body"])
            return {"statusCode": 202, "body": "queued"}
        body = {"table": os.environ["TABLE_NAME"], "function": context.function_name}
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
    """
)

WORKER_HANDLER = dedent(
    """
    import os
    import boto3

    table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])

    def handler(event, context):
        for record in event["Records"]:
            table.put_item(Item={"pk": record["body"], "pid": os.getpid()})
        return {"batchItemFailures": []}
    """
)

DOCKERFILE = """\
FROM public.ecr.aws/lambda/python:3.12
COPY worker/app.py ${LAMBDA_TASK_ROOT}/
CMD ["app.handler"]
"""


@pytest.fixture
def small_template(tmp_path: Path) -> Path:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "app.py").write_text(API_HANDLER)
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "app.py").write_text(WORKER_HANDLER)
    (tmp_path / "worker" / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    return tmp_path / "template.yaml"


def test_dev_serves_the_template_and_ctrl_c_leaves_no_process(small_template: Path, tmp_path: Path) -> None:
    env = {**os.environ, "JOBGATE_DEV_API_KEY": DEV_KEY}
    args = ["--api-concurrency", "2", "--workers", "1"]
    with start_dev(template=small_template, workdir=tmp_path / "run", args=args, env=env, timeout=60) as dev:
        assert dev.api_key == DEV_KEY
        assert dev.state["docs_url"] == f"{dev.http_url}/docs"
        headers = {"X-API-Key": DEV_KEY}
        info = httpx.get(f"{dev.http_url}/info", headers=headers)
        assert info.status_code == 200
        assert info.json() == {"table": dev.resources["Table"], "function": "jobgate-local-ApiFunction"}
        assert httpx.get(f"{dev.http_url}/info").status_code == 401

        # Through the HTTP gateway, the API function queues; the poller hands it to the worker image.
        # (Without a text content type, API Gateway would hand the body over base64-encoded.)
        text = {**headers, "content-type": "text/plain"}
        assert httpx.post(f"{dev.http_url}/enqueue", content="job-1", headers=text).status_code == 202
        table = boto3.resource(
            "dynamodb",
            endpoint_url=dev.aws_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).Table(dev.resources["Table"])
        deadline = time.monotonic() + 15
        while "Item" not in table.get_item(Key={"pk": "job-1"}):
            assert time.monotonic() < deadline, dev.log()
            time.sleep(0.1)
        assert int(table.get_item(Key={"pk": "job-1"})["Item"]["pid"]) in dev.child_pids()

        children = dev.child_pids()
        assert len(children) == 1 + 2 + 1  # moto, two API sandboxes, one worker sandbox
        assert dev.stop() == 0, dev.log()
    assert dev.leftover_pids(children) == []
    assert not dev.state_file.exists()
    log = dev.log()
    assert "jobgate dev is running" in log and DEV_KEY in log
    assert "stopping" in log


def _admin(dev: DevProcess, service: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=dev.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _wait_for_item(dev: DevProcess, pk: str) -> None:
    deadline = time.monotonic() + 15
    while "Item" not in _admin(dev, "dynamodb").get_item(
        TableName=dev.resources["Table"], Key={"pk": {"S": pk}}
    ):
        assert time.monotonic() < deadline, dev.log()
        time.sleep(0.1)


def test_data_and_the_dev_key_survive_a_restart_and_fresh_starts_empty(
    small_template: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOBGATE_DEV_API_KEY"}  # a key of its own, kept
    args = ["--api-concurrency", "1", "--workers", "1"]
    run = tmp_path / "run"
    with start_dev(template=small_template, workdir=run, args=args, env=env, timeout=60) as dev:
        key = dev.api_key
        assert (run / ".jobgate" / "api-key").read_text().strip() == key
        sent = httpx.post(
            f"{dev.http_url}/enqueue",
            content="job-1",
            headers={"X-API-Key": key, "content-type": "text/plain"},
        )
        assert sent.status_code == 202
        _wait_for_item(dev, "job-1")
        _admin(dev, "s3").put_object(
            Bucket=dev.resources["Files"], Key="a/b.json", Body=b'{"x": 1}', ContentType="application/json",
            Metadata={"origin": "test"},
        )  # fmt: skip
        _admin(dev, "sqs").send_message(
            QueueUrl=dev.resources["DeadLetters"],
            MessageBody="waiting",
            MessageAttributes={"job_id": {"DataType": "String", "StringValue": "J1"}},
        )
        assert dev.stop() == 0, dev.log()
    assert "saved to" in dev.log()

    with start_dev(template=small_template, workdir=run, args=args, env=env, timeout=60) as dev:
        assert dev.api_key == key  # made once for this folder, and kept
        assert "restored from" in dev.log()
        _wait_for_item(dev, "job-1")
        got = _admin(dev, "s3").get_object(Bucket=dev.resources["Files"], Key="a/b.json")
        assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (
            b'{"x": 1}', "application/json", {"origin": "test"}
        )  # fmt: skip
        waiting = _admin(dev, "sqs").receive_message(
            QueueUrl=dev.resources["DeadLetters"], MessageAttributeNames=["All"], WaitTimeSeconds=1
        )["Messages"]
        assert [(m["Body"], m["MessageAttributes"]["job_id"]["StringValue"]) for m in waiting] == [
            ("waiting", "J1")
        ]
        # The functions' roles are new; the restored table is theirs all the same.
        text = {"X-API-Key": key, "content-type": "text/plain"}
        assert httpx.post(f"{dev.http_url}/enqueue", content="job-2", headers=text).status_code == 202
        _wait_for_item(dev, "job-2")
        assert dev.stop() == 0, dev.log()

    with start_dev(template=small_template, workdir=run, args=[*args, "--fresh"], env=env, timeout=60) as dev:
        assert dev.api_key == key
        table = _admin(dev, "dynamodb").scan(TableName=dev.resources["Table"])
        assert table["Items"] == []
        assert _admin(dev, "s3").list_objects_v2(Bucket=dev.resources["Files"]).get("Contents", []) == []


def test_a_port_in_use_is_one_clear_line_and_exit_status_1(small_template: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = tmp_path / "state.json"
        command = [*jobgate_command(), "dev", "--template", str(small_template), "--port", str(port)]
        result = subprocess.run(
            [*command, "--ws-port", str(free_port()), "--state-file", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"jobgate dev: port {port} on 127.0.0.1 is already in use (HTTP gateway); "
        "choose another with --port or JOBGATE_HTTP_PORT"
    ]
    assert result.stdout == ""
    assert not state.exists()


def test_a_queue_hiding_messages_for_less_than_its_function_runs_is_refused_as_lambda_does(
    small_template: Path, tmp_path: Path
) -> None:
    text = small_template.read_text()
    small_template.write_text(text.replace("VisibilityTimeout: 10", "VisibilityTimeout: 4"))
    state = tmp_path / "state.json"
    command = [*jobgate_command(), "dev", "--template", str(small_template), "--port", str(free_port())]
    result = subprocess.run(
        [*command, "--ws-port", str(free_port()), "--state-file", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        "WorkerJobs: InvalidParameterValueException: Queue visibility timeout: 4 seconds is less than "
        "Function timeout: 10 seconds"
    ) in result.stderr
    assert not state.exists()


def test_a_missing_template_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*jobgate_command(), "dev", "--template", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "no template at" in result.stderr
