"""Every SQS handler logs a record it cannot read (message id and why) and reports it as a failure.

Lambda's batch response says only which records failed; without the log line nobody learns why a
message keeps coming back until it lands in a dead-letter queue. None of these records reaches AWS.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobgate.observability import logger

from tests.support.lambdas import FakeContext, load_handler

EVENTS = Path(__file__).resolve().parents[2] / "events"
SETTINGS = {
    "JOBGATE_TABLE_NAME": "jobs",
    "JOBGATE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
    "JOBGATE_BUCKET_NAME": "data",
    # A malformed record never runs a command: no need to import and warm the command sets.
    "JOBGATE_WARM_COMMAND_SETS": "false",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SETTINGS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("JOBGATE_WS_MANAGEMENT_URL", raising=False)


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines the handlers' logger writes, from here on."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    handler.setStream(previous)  # type: ignore[attr-defined]


def sample_records(name: str, *bodies: str) -> dict[str, Any]:
    """The sample event events/<name> with one record per body, each with its own message id."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    template = event["Records"][0]
    event["Records"] = []
    for n, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = f"message-{n}"
        record["body"] = body
        event["Records"].append(record)
    return event


def failures(answer: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def refusals(lines: list[dict[str, Any]]) -> dict[str, str]:
    """message id -> reason, for each record a handler refused."""
    return {line["message_id"]: line["reason"] for line in lines if "message_id" in line and "reason" in line}


@pytest.mark.parametrize(
    ("function", "sample"), [("worker", "worker-sqs-job.json"), ("deadletter", "deadletter-sqs-job.json")]
)
def test_a_malformed_job_message_is_logged_and_fails(
    function: str, sample: str, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    module = load_handler(function)
    event = sample_records(sample, "not json", json.dumps({"tenant": "default"}))

    answer = module.handler(event, FakeContext(function_name=function))

    assert failures(answer) == ["message-0", "message-1"]
    reasons = refusals(logged())
    assert set(reasons) == {"message-0", "message-1"}
    assert "Invalid JSON" in reasons["message-0"]
    assert reasons["message-1"] == "job_id: Field required"
    assert all(line["level"] == "ERROR" for line in logged() if "reason" in line)


def test_an_unknown_upload_event_is_logged_and_fails(logged: Callable[[], list[dict[str, Any]]]) -> None:
    module = load_handler("assets")
    s3_test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "data"})
    event = sample_records(
        "worker-sqs-job.json",
        s3_test_event,
        "{truncated",
        json.dumps({"job_id": "not an S3 notification"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "data"}}}]}),
    )

    answer = module.handler(event, FakeContext(function_name="assets"))

    # S3's test event names no object: it is done with, not failed.
    assert failures(answer) == ["message-1", "message-2", "message-3"]
    reasons = refusals(logged())
    assert reasons["message-1"].startswith("the body is not JSON")
    assert reasons["message-2"] == "neither an S3 event notification nor S3's test event"
    assert reasons["message-3"] == "an S3 event record without s3.object.key"
    assert "message-0" not in reasons
