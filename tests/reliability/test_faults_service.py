"""Faults of the AWS services themselves, injected into the real handlers' boto3 clients (moto in-process):
a throttling table, a queue that refuses a message after the job was written, and a job left queued
without any message, which the sweeper must find.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Asset, AssetStatus, Job, utcnow
from ulid import ULID

from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, call_api, load_handler, pump

API_KEY = "reliability-service-key-0123456789"
PROBLEM = "application/problem+json"
THROTTLED = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
    b'"message":"The level of configured provisioned throughput for the table was exceeded."}'
)


def _headers(values: dict[str, str]) -> HTTPHeaders:
    headers = HTTPHeaders()
    for key, value in values.items():
        headers[key] = value
    return headers


def _hook(handler: Callable[..., Any]) -> Callable[..., None]:
    """An event handler that answers for the call; botocore's stubs type handlers as returning None."""
    return cast(Callable[..., None], handler)


@dataclass
class Fault:
    """Answers the next ``times`` calls of one operation with an error, before they leave the client."""

    operation: str
    times: int
    attempts: int = 0
    failed: int = 0

    def before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else target
        if not target.endswith(f".{self.operation}"):
            return None
        self.attempts += 1
        if self.failed >= self.times:
            return None
        self.failed += 1
        raw = SimpleNamespace(stream=lambda **_: iter([THROTTLED]))
        return AWSResponse(request.url, 400, _headers({"Content-Type": "application/x-amz-json-1.0"}), raw)


@dataclass
class Sleeps:
    """botocore's back-off sleeps, recorded instead of slept."""

    delays: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    recorded = Sleeps()
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=recorded.sleep))
    return recorded


@pytest.fixture
def throttle() -> Iterator[Callable[[str, int], Fault]]:
    """Make the next N calls of a DynamoDB operation throttled, on the client every adapter shares."""
    faults: list[Fault] = []
    client = aws_clients.dynamodb()

    def add(operation: str, times: int) -> Fault:
        fault = Fault(operation, times)
        client.meta.events.register("before-send.dynamodb.*", _hook(fault.before_send))
        faults.append(fault)
        return fault

    yield add
    for fault in faults:
        client.meta.events.unregister("before-send.dynamodb.*", _hook(fault.before_send))


@pytest.fixture
def stack_env(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Resources:
    for key, value in resources.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JOBGATE_API_KEY", API_KEY)
    monkeypatch.setenv("JOBGATE_WORKER_TIMEOUT_S", "120")
    monkeypatch.setenv("JOBGATE_RATE_LIMIT_PER_S", "0")
    monkeypatch.setenv("JOBGATE_MAX_ACTIVE_JOBS", "0")
    monkeypatch.setenv("JOBGATE_REQUEUE_AFTER_S", "30")
    return resources


@pytest.fixture
def store(stack_env: Resources) -> JobStore:
    return JobStore(aws_clients.dynamodb(), stack_env.table_name, timedelta(days=1))


@pytest.fixture
def asset_id(store: JobStore, stack_env: Resources, npy_file: Path) -> str:
    """An uploaded input as the upload flow leaves it: its object in S3 and an AVAILABLE record."""
    new_id = str(ULID())
    asset = Asset(
        asset_id=new_id,
        tenant="default",
        filename=npy_file.name,
        media_type="application/x-npy",
        size=npy_file.stat().st_size,
        status=AssetStatus.AVAILABLE,
        key=f"uploads/default/{new_id}/{npy_file.name}",
        created_at=utcnow(),
    )
    boto3.client("s3").put_object(Bucket=stack_env.bucket_name, Key=asset.key, Body=npy_file.read_bytes())
    store.put_asset(asset)
    return asset.asset_id


def heatmap(asset_id: str) -> dict[str, Any]:
    args = {"input": f"asset://{asset_id}", "output": "map.png", "no_coastline": True, "no_borders": True}
    return {"stage": "visualize", "command": "heatmap", "args": args}


def queued_messages(queue_url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_a_throttled_table_is_retried_with_backoff_and_the_read_succeeds(
    store: JobStore, throttle: Callable[[str, int], Fault], sleeps: Sleeps
) -> None:
    job, _ = store.create(_job())
    fault = throttle("GetItem", 2)

    assert store.get(job.job_id).job_id == job.job_id

    assert fault.attempts == 3
    # Standard retry mode: truncated exponential back-off with jitter, 1 s base for throttling.
    assert len(sleeps.delays) == 2
    assert all(0 <= delay <= 2**i for i, delay in enumerate(sleeps.delays, start=1))


def test_a_table_that_keeps_throttling_fails_the_submit_with_a_clear_503(
    stack_env: Resources, throttle: Callable[[str, int], Fault], sleeps: Sleeps, asset_id: str
) -> None:
    api = load_handler("api")
    fault = throttle("PutItem", 1000)

    answer = call_api(api, "POST", "/v1/jobs", body=heatmap(asset_id), headers={"X-API-Key": API_KEY})

    assert answer.status == 503
    assert answer.headers["content-type"].startswith(PROBLEM)
    problem = answer.json()
    assert problem["type"].endswith(":storage")
    assert "ProvisionedThroughputExceededException" in problem["detail"]
    assert fault.attempts == _total_attempts() > 1  # the first try and every retry
    assert len(sleeps.delays) == fault.attempts - 1
    assert queued_messages(stack_env.queue_url) == 0  # nothing was queued for a job never written


def test_a_throttled_request_gives_up_before_the_api_times_out(stack_env: Resources) -> None:
    api_timeout_s = 29  # template.yaml: ApiFunction Timeout, under API Gateway's 30 s
    # botocore's standard mode: the i-th retry sleeps up to min(1 s * 2**i, 20 s) on throttling.
    worst_backoff_s = sum(min(2**i, 20) for i in range(_total_attempts() - 1))
    assert worst_backoff_s < api_timeout_s


def _total_attempts() -> int:
    retries: dict[str, Any] = getattr(aws_clients.dynamodb().meta.config, "retries")  # noqa: B009 (untyped)
    return int(retries["total_max_attempts"])


def test_queue_refusing_the_message_after_the_job_was_written_ends_the_job_failed(
    stack_env: Resources, store: JobStore, asset_id: str
) -> None:
    api = load_handler("api")

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        raw = SimpleNamespace(stream=lambda **_: iter([b""]))
        error = {"Error": {"Code": "ServiceUnavailable", "Message": "SQS is down"}}
        return AWSResponse("https://sqs", 503, _headers({}), raw), error

    sqs = aws_clients.sqs()  # the API's client
    sqs.meta.events.register("before-call.sqs.SendMessage", _hook(refuse))
    try:
        answer = call_api(api, "POST", "/v1/jobs", body=heatmap(asset_id), headers={"X-API-Key": API_KEY})
    finally:
        sqs.meta.events.unregister("before-call.sqs.SendMessage", _hook(refuse))

    assert answer.status == 503
    assert answer.headers["content-type"].startswith(PROBLEM)
    jobs = call_api(api, "GET", "/v1/jobs", headers={"X-API-Key": API_KEY}).json()["items"]
    assert len(jobs) == 1  # written, then ended: never left queued without a message
    assert jobs[0]["status"] == "failed"
    assert jobs[0]["error"]["type"] == "enqueue"


def test_a_job_left_queued_without_a_message_is_resent_by_the_sweeper_and_runs(
    stack_env: Resources, store: JobStore, asset_id: str
) -> None:
    # The API wrote the job and died before its SendMessage: a queued job, no message anywhere.
    job, _ = store.create(_job(asset_id=asset_id, age_s=3600))
    assert queued_messages(stack_env.queue_url) == 0

    report = load_handler("sweeper").handler({}, FakeContext(function_name="sweeper"))

    assert report["requeued"] == [job.job_id]
    worker = load_handler("worker")
    assert pump(worker, stack_env.queue_url, timeout_s=120) == 1
    done = store.get(job.job_id)
    assert done.status.value == "succeeded", done.error
    assert done.attempts == 1
    assert [o.name for o in done.outputs] == ["map.png"]


def test_a_job_whose_resends_all_fail_ends_never_started(stack_env: Resources, store: JobStore) -> None:
    # A job whose message is sent and waits for a worker is never failed (tests/integration/test_sweeper.py);
    # one whose message cannot be sent at all ends `never_started` after the last try.
    job, _ = store.create(_job(age_s=3600))
    sweeper = load_handler("sweeper")

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        raw = SimpleNamespace(stream=lambda **_: iter([b""]))
        error = {"Error": {"Code": "ServiceUnavailable", "Message": "SQS is down"}}
        return AWSResponse("https://sqs", 503, _headers({}), raw), error

    sqs = aws_clients.sqs(aws_clients.BACKGROUND)  # the sweeper's client
    sqs.meta.events.register("before-call.sqs.SendMessage", _hook(refuse))
    try:
        for _ in range(10):  # the sweeper's schedule, played quickly
            report = sweeper.handler({}, FakeContext(function_name="sweeper"))
            if report["failed"]:
                break
    finally:
        sqs.meta.events.unregister("before-call.sqs.SendMessage", _hook(refuse))
    ended = store.get(job.job_id)
    assert ended.status.value == "failed"
    assert ended.error is not None and ended.error.type == "never_started"
    assert ended.requeues == 3 and queued_messages(stack_env.queue_url) == 0


def _job(asset_id: str | None = None, age_s: float = 0) -> Job:
    created = time.time() - age_s
    args: dict[str, Any] = heatmap(asset_id)["args"] if asset_id else {"output": "map.png"}
    return Job(
        job_id=str(ULID.from_timestamp(created)),
        tenant="default",
        stage="visualize",
        command="heatmap",
        args=args,
        inputs={"input": asset_id} if asset_id else {},
        timeout_s=60,
        request_hash="reliability",
        created_at=utcnow() - timedelta(seconds=age_s),
    )
