"""Lambda's limits as the local stack plays them: SQS batches never over the 6 MB payload limit, no event
source whose queue hides a message for less than the function may run, and no synchronous invoke over
6 MB through the HTTP gateway."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobgate_local.functions import MAX_SYNC_PAYLOAD_BYTES, FunctionConfig, FunctionPool, InvokeResult
from jobgate_local.gateway_http import HttpGatewayApp
from jobgate_local.poller import SqsPoller, check_visibility_timeout
from jobgate_local.procs import StartupError
from jobgate_local.template import HttpRoute, SqsEventSource

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


def test_a_body_under_api_gateways_10_mb_but_over_lambdas_6_mb_is_a_413(tmp_path: Path) -> None:
    """The HTTP gateway takes 7 MB; the function's synchronous invoke cannot (Lambda's 6 MB)."""
    config = FunctionConfig(
        logical_id="ApiFunction", function_name="api", code_dir=tmp_path, handler="app.handler"
    )
    pool = FunctionPool(config, 1)  # never started: the limit is checked before a sandbox is taken

    async def invoke(function: str, event: Any, timeout: float) -> InvokeResult:
        return pool.invoke(event, acquire_timeout=0.1)

    route = HttpRoute(
        api="HttpApi", route_key="ANY /{proxy+}", method="ANY", path="/{proxy+}", function="ApiFunction"
    )
    app = HttpGatewayApp([route], invoke)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            return await http.post(
                "/v1/uploads", content=b"x" * (7 * 1024 * 1024), headers={"content-type": "text/plain"}
            )

    response = asyncio.run(post())
    assert response.status_code == 413
    assert response.json() == {"message": "Request Entity Too Large"}
