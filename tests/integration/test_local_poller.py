"""The local SQS event source against moto: partial batch failures, retries, redrive to the DLQ."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from jobgate_local.functions import FunctionConfig, FunctionPool
from jobgate_local.moto_server import MotoServer
from jobgate_local.poller import SqsPoller
from jobgate_local.procs import reserve_port
from jobgate_local.provision import aws_client
from jobgate_local.stack import local_aws_environment
from jobgate_local.template import SqsEventSource

# Records every record it gets; fails the ones whose body says "fail", and the whole batch on "explode".
HANDLER = dedent(
    """
    import json, os

    def handler(event, context):
        with open(os.environ["RECORD_FILE"], "a") as out:
            for record in event["Records"]:
                out.write(json.dumps(record) + "\\n")
        if any(r["body"] == "explode" for r in event["Records"]):
            raise RuntimeError("the whole batch failed")
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"]
        return {"batchItemFailures": failures}
    """
)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    moto = MotoServer(reserve_port("127.0.0.1", 0, "moto"))
    try:
        moto.wait_ready(30)
        yield moto.endpoint_url
    finally:
        moto.stop()


class Pipeline:
    """A queue with a DLQ (maxReceiveCount 2, 1 s visibility), a function on each, and their pollers."""

    def __init__(self, endpoint: str, folder: Path, name: str) -> None:
        self.sqs = aws_client("sqs", endpoint)
        dlq_url = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = self.arn(dlq_url)
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
        self.queue_url = self.sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive}
        )["QueueUrl"]
        self.worker_records = folder / "worker.jsonl"
        self.dlq_records = folder / "dlq.jsonl"
        (folder / "code").mkdir()
        (folder / "code" / "app.py").write_text(HANDLER)
        self.pools = [
            self._pool(endpoint, folder / "code", "Worker", self.worker_records),
            self._pool(endpoint, folder / "code", "DeadLetters", self.dlq_records),
        ]
        sources = [
            SqsEventSource("WorkerJobs", "Worker", self.arn(self.queue_url), self.queue_url, 10, 0.0, True),
            SqsEventSource("DeadLetterJobs", "DeadLetters", dlq_arn, dlq_url, 10, 0.0, True),
        ]
        self.pollers = [
            SqsPoller(s, p, endpoint, concurrency=1) for s, p in zip(sources, self.pools, strict=True)
        ]

    def arn(self, url: str) -> str:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        return str(attributes["QueueArn"])

    def _pool(self, endpoint: str, code: Path, name: str, records: Path) -> FunctionPool:
        config = FunctionConfig(
            name, f"test-{name}", code, "app.handler", 5.0, 128, {"RECORD_FILE": str(records)}
        )
        pool = FunctionPool(config, 1, aws_env=local_aws_environment(endpoint), python=sys.executable)
        pool.start()
        return pool

    def start(self) -> None:
        for poller in self.pollers:
            poller.start()

    def stop(self) -> None:
        for poller in self.pollers:
            poller.stop()
        for pool in self.pools:
            pool.stop()

    @staticmethod
    def records(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def queue_is_empty(self) -> bool:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)[
            "Attributes"
        ]
        return all(attributes[name] == "0" for name in names)


@pytest.fixture
def pipeline(moto_endpoint: str, tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(moto_endpoint, tmp_path, f"jobs-{os.getpid()}-{tmp_path.name[-12:]}")
    yield pipeline
    pipeline.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_reported_failures_are_retried_then_dead_lettered_and_the_rest_deleted(pipeline: Pipeline) -> None:
    pipeline.sqs.send_message_batch(
        QueueUrl=pipeline.queue_url,
        Entries=[
            {
                "Id": "1",
                "MessageBody": "ok-1",
                "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "a"}},
            },
            {"Id": "2", "MessageBody": "fail"},
            {"Id": "3", "MessageBody": "ok-2"},
        ],
    )
    pipeline.start()
    wait_for(lambda: len(Pipeline.records(pipeline.dlq_records)) == 1)
    wait_for(pipeline.queue_is_empty)

    seen = Pipeline.records(pipeline.worker_records)
    bodies = [record["body"] for record in seen]
    assert sorted(bodies) == [
        "fail",
        "fail",
        "ok-1",
        "ok-2",
    ]  # successes once, the failure maxReceiveCount times
    fails = [record for record in seen if record["body"] == "fail"]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in fails] == ["1", "2"]
    first = next(record for record in seen if record["body"] == "ok-1")
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"] == pipeline.arn(pipeline.queue_url)
    assert first["awsRegion"] == "us-east-1"
    assert first["messageAttributes"]["kind"]["stringValue"] == "a"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"} <= set(first["attributes"])
    (dead,) = Pipeline.records(pipeline.dlq_records)
    assert dead["body"] == "fail"
    assert dead["messageId"] == fails[0]["messageId"]


def test_a_failed_invoke_deletes_nothing(pipeline: Pipeline) -> None:
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody="explode")
    pipeline.start()
    wait_for(lambda: len(Pipeline.records(pipeline.dlq_records)) == 1)
    assert [r["body"] for r in Pipeline.records(pipeline.worker_records)] == ["explode", "explode"]
    wait_for(pipeline.queue_is_empty)
