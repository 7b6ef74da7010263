"""Lambda's limits on SQS event sources, as the local poller plays them: batches never over the 6 MB
payload limit, and no event source whose queue hides a message for less than the function may run."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jobgate_local.functions import MAX_SYNC_PAYLOAD_BYTES, InvokeResult
from jobgate_local.poller import SqsPoller, check_visibility_timeout
from jobgate_local.procs import StartupError
from jobgate_local.template import SqsEventSource

SOURCE = SqsEventSource(
    logical_id="WorkerJobs",
    function="WorkerFunction",
    queue_arn="arn:aws:sqs:us-east-1:123456789012:jobs",
    queue_url="http://127.0.0.1:1/123456789012/jobs",
    batch_size=10,
)


class RecordingPool:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any], **_: Any) -> InvokeResult:
        self.events.append(event)
        return InvokeResult("r", payload={"batchItemFailures": []})


class RecordingSqs:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> None:  # noqa: N803
        self.deleted += [entry["ReceiptHandle"] for entry in Entries]


def _message(index: int, body_bytes: int) -> dict[str, Any]:
    return {
        "MessageId": f"m{index}",
        "ReceiptHandle": f"r{index}",
        "Body": "x" * body_bytes,
        "MD5OfBody": "0" * 32,
        "Attributes": {},
    }


def test_a_batch_over_six_megabytes_is_split_as_lambda_batches() -> None:
    pool, sqs = RecordingPool(), RecordingSqs()
    poller = SqsPoller(SOURCE, pool, "http://127.0.0.1:1", concurrency=1)  # type: ignore[arg-type]
    messages = [_message(i, 1024 * 1024) for i in range(10)]  # 10 MiB of bodies: SQS's largest batch

    poller._process(sqs, messages)

    sizes = [len(json.dumps(event).encode()) for event in pool.events]
    assert len(pool.events) == 2 and all(size <= MAX_SYNC_PAYLOAD_BYTES for size in sizes)
    handed = [record["messageId"] for event in pool.events for record in event["Records"]]
    assert handed == [f"m{i}" for i in range(10)]
    assert sqs.deleted == [f"r{i}" for i in range(10)]


def test_a_small_batch_is_one_invoke() -> None:
    pool, sqs = RecordingPool(), RecordingSqs()
    SqsPoller(SOURCE, pool, "http://127.0.0.1:1", concurrency=1)._process(  # type: ignore[arg-type]
        sqs, [_message(i, 100) for i in range(10)]
    )
    assert len(pool.events) == 1 and len(pool.events[0]["Records"]) == 10


def test_a_visibility_timeout_under_the_function_timeout_is_refused_with_lambdas_words() -> None:
    with pytest.raises(StartupError) as refused:
        check_visibility_timeout(SOURCE, 30, 60.0)
    assert str(refused.value) == (
        "WorkerJobs: InvalidParameterValueException: Queue visibility timeout: 30 seconds is less than "
        "Function timeout: 60 seconds"
    )
    check_visibility_timeout(SOURCE, 60, 60.0)
