"""Time budgets: every AWS call of an API request ends before API Gateway and Lambda give up on it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError
from jobgate.adapters import aws
from jobgate.api.middleware import REQUEST_BUDGET_S, request_times
from jobgate.models import Job, utcnow
from jobgate.services.jobs import JobLimits, JobService
from jobgate.settings import MAX_SYNC_WAIT_S

API_LAMBDA_TIMEOUT_S = 29  # template.yaml: ApiFunction and WsFunction
HTTP_API_TIMEOUT_S = 30  # API Gateway HTTP API's integration timeout


def test_one_api_call_alone_fits_the_api_lambda() -> None:
    # 3 attempts of 1 s connect + 2 s read, and botocore's longest sleeps before retries 1 and 2
    # (throttling: 1 s, 2 s; each up to 5 s more with x-amz-retry-after).
    assert aws.API.worst_call_s == 3 * (1 + 2) + (1 + 5) + (2 + 5) == 22
    assert aws.API.worst_call_s < API_LAMBDA_TIMEOUT_S
    assert aws.BACKGROUND.worst_call_s == 4 * (5 + 20) + (1 + 5) + (2 + 5) + (4 + 5) == 122


def test_a_request_ends_its_aws_calls_with_time_left_to_answer() -> None:
    assert REQUEST_BUDGET_S + 1 <= API_LAMBDA_TIMEOUT_S < HTTP_API_TIMEOUT_S
    # The sync wait's last read starts early enough to end (one attempt) before that deadline.
    assert MAX_SYNC_WAIT_S + aws.API.attempt_s <= REQUEST_BUDGET_S


def test_the_api_clients_use_the_api_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.reset_clients()
    config = aws.dynamodb().meta.config
    assert (config.connect_timeout, config.read_timeout) == (1, 2)
    assert config.retries["total_max_attempts"] == 3
    assert aws.dynamodb(aws.BACKGROUND).meta.config.read_timeout == 20
    aws.reset_clients()


class FakeContext:
    def __init__(self, remaining_s: float) -> None:
        self.remaining_s = remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_s * 1000)


def scope(time_epoch: Any = None, remaining_s: float | None = None) -> dict[str, Any]:
    context = {"timeEpoch": time_epoch} if time_epoch is not None else {}
    out: dict[str, Any] = {"type": "http", "aws.event": {"requestContext": context}}
    if remaining_s is not None:
        out["aws.context"] = FakeContext(remaining_s)
    return out


def test_the_deadline_counts_from_the_requests_arrival_at_api_gateway() -> None:
    now_wall, now = 1_800_000_000.0, 500.0
    times = request_times(scope(int((now_wall - 6.0) * 1000)), wall=lambda: now_wall, monotonic=lambda: now)
    assert times.arrived == pytest.approx(now - 6.0)
    assert times.deadline == pytest.approx(now - 6.0 + REQUEST_BUDGET_S)
    assert times.wait_until(25) == pytest.approx(now - 6.0 + 25)


@pytest.mark.parametrize("age_s", [3600.0, -60.0], ids=["a replayed sample event", "a clock ahead"])
def test_a_stamp_no_live_request_can_have_counts_from_the_handlers_start(age_s: float) -> None:
    now_wall, now = 1_800_000_000.0, 500.0
    times = request_times(scope(int((now_wall - age_s) * 1000)), wall=lambda: now_wall, monotonic=lambda: now)
    assert times.arrived == now


def test_the_deadline_never_passes_what_the_lambda_has_left() -> None:
    times = request_times(scope(remaining_s=10.0), wall=time.time, monotonic=lambda: 100.0)
    assert times.deadline == pytest.approx(100.0 + 10.0 - 1.0)
    assert times.wait_until(25) == pytest.approx(109.0 - aws.API.attempt_s)


@pytest.fixture
def silent_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """A loopback endpoint that accepts connections and never answers; AWS calls go there."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
    }.items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    yield accepted
    listener.close()
    for conn in accepted:
        conn.close()
    aws.reset_clients()


def test_an_attempt_that_could_not_end_before_the_deadline_is_not_made(
    silent_endpoint: list[socket.socket],
) -> None:
    started = time.monotonic()
    with aws.deadline(started + 2.0), pytest.raises(aws.DeadlineExceeded):
        aws.dynamodb().describe_table(TableName="jobs")
    assert time.monotonic() - started < 2.0  # refused at once, not after waiting the deadline out
    assert silent_endpoint == []  # nothing was sent


def test_a_call_under_a_deadline_stops_retrying_when_a_retry_could_not_end_in_time(
    silent_endpoint: list[socket.socket],
) -> None:
    started = time.monotonic()
    with aws.deadline(started + 4.0), pytest.raises(BotoCoreError) as raised:
        aws.dynamodb().describe_table(TableName="jobs")
    took = time.monotonic() - started
    # One attempt timed out reading (2 s); a second would have needed its sleep and 3 s more.
    assert "Read timeout" in str(raised.value)
    assert 2.0 <= took < 4.0
    assert len(silent_endpoint) == 1


class RunningStore:
    """A job store whose job never ends; counts the reads."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.reads = 0

    def get(self, job_id: str) -> Any:
        self.reads += 1
        return self.job


def test_the_sync_wait_reads_ever_less_often_up_to_its_longest_interval() -> None:
    job = Job(
        job_id="01JD7Q9A1B2C3D4E5F6G7H8J9K",
        tenant="t",
        stage="s",
        command="c",
        timeout_s=60,
        request_hash="h",
        created_at=utcnow(),
    )
    store = RunningStore(job)
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    service = JobService(
        store,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        JobLimits(default_timeout_s=60, max_timeout_s=60, sync_poll_s=0.25),
        sleep=sleep,
        monotonic=lambda: clock[0],
    )
    assert service.wait(job, until=2.0) is job
    assert sleeps[0] == 0.025 and max(sleeps) == 0.25
    assert sleeps[:-1] == sorted(sleeps[:-1])  # the last one only reaches `until`
    assert sum(sleeps) == pytest.approx(2.0)
    assert store.reads <= 16  # 40 at a fixed 50 ms
