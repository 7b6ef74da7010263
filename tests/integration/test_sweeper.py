"""The sweeper leaves no job unfinished and fails none that is fine.

Lost messages are re-sent, lost workers replaced; a job whose message waits in a backlog is left to
wait, and every write the sweeper makes holds only if the job is still as it read it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import QueueError, StoreError
from jobgate.models import Job, JobResult, JobStatus, utcnow
from jobgate.services.pipelines import Advancer
from jobgate.services.sweeper import SweepConfig, Sweeper
from ulid import ULID

from tests.integration.conftest import Client
from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler

MAX_RESENDS = 3  # the sweeper's default


def queued_job(
    store: JobStore, minutes_ago: float, status: JobStatus = JobStatus.QUEUED, **fields: object
) -> Job:
    """A job as the API writes it; no message is sent (as if the API died right after the write)."""
    created = utcnow() - timedelta(minutes=minutes_ago)
    job = Job(
        job_id=str(ULID.from_timestamp(created.timestamp())),
        tenant="default",
        stage="process",
        command="scan-frames",
        args={"frames_dir": "nowhere"},
        timeout_s=60,
        request_hash="h",
        created_at=created,
        status=status,
        **fields,  # type: ignore[arg-type]
    )
    return store.create(job)[0]


def messages(resources: Resources) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600)
        if not got.get("Messages"):
            return bodies
        bodies.extend(m["Body"] for m in got["Messages"])


class Clock:
    """The sweeper's clock, moved forward by the test: hours pass in a line."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(stack_env: Resources) -> JobQueue:
    return JobQueue(aws_clients.sqs(), stack_env.queue_url)


@pytest.fixture
def advancer(store: JobStore, queue: JobQueue, clock: Clock) -> Advancer:
    return Advancer(store, queue, clock=clock)


@pytest.fixture
def sweeper(store: JobStore, queue: JobQueue, advancer: Advancer, clock: Clock) -> Sweeper:
    return Sweeper(store, queue, SweepConfig(), advancer=advancer, clock=clock)


def test_queued_job_that_lost_its_message_is_sent_again(
    sweeper: Sweeper, store: JobStore, stack_env: Resources
) -> None:
    lost = queued_job(store, minutes_ago=20)
    fresh = queued_job(store, minutes_ago=0)
    report = sweeper.sweep()
    assert report.requeued == [lost.job_id]
    assert [lost.job_id in body for body in messages(stack_env)] == [True]
    assert store.get(lost.job_id).enqueued_at is not None  # sent: never sent again
    assert store.get(fresh.job_id).enqueued_at is None
    assert sweeper.sweep().requeued == []


def test_job_whose_message_waits_in_a_backlog_is_never_failed_nor_resent(
    client: Client, sweeper: Sweeper, store: JobStore, clock: Clock, stack_env: Resources
) -> None:
    job_id = client.submit(
        {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "x"}}
    ).json()["job_id"]
    # Reserved concurrency, a burst of jobs: no worker reads the queue for hours.
    for _ in range(12):
        clock.advance(minutes=20)
        report = sweeper.sweep()
        assert (report.requeued, report.failed) == ([], [])
    clock.advance(days=3)
    assert sweeper.sweep().failed == []
    assert store.get(job_id).status == JobStatus.QUEUED
    assert len(messages(stack_env)) == 1  # the API's own message, never duplicated


def test_job_whose_message_outlived_the_queues_retention_ends_failed(
    client: Client, sweeper: Sweeper, store: JobStore, clock: Clock
) -> None:
    job_id = client.submit(
        {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "x"}}
    ).json()["job_id"]
    clock.advance(days=4, minutes=1)  # SQS's retention of the queue's messages (template.yaml)
    assert sweeper.sweep().failed == [job_id]
    job = store.get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error.type == "queue_expired"
    assert store.active(JobStatus.QUEUED) == []


def test_step_unblocked_late_is_not_taken_for_a_lost_message(
    client: Client, sweeper: Sweeper, store: JobStore, advancer: Advancer, clock: Clock, stack_env: Resources
) -> None:
    scan = {"frames_dir": "nowhere", "output": "meta.json"}
    pad = {"frames_meta": "step://scan/meta.json", "output_dir": "filled", "fill_mode": "blank"}
    body = {
        "steps": [
            {"name": "scan", "stage": "process", "command": "scan-frames", "args": scan},
            {"name": "pad", "stage": "process", "command": "pad-missing", "args": pad},
        ]
    }
    created = client.call("POST", "/v1/pipelines", body=body)
    assert created.status == 201, created.body
    jobs = {s["name"]: s["job"]["job_id"] for s in created.json()["steps"]}
    assert len(messages(stack_env)) == 1  # the first step's message, taken by its worker
    clock.advance(minutes=30)  # which runs for half an hour, then queues the second step
    first = store.claim(store.get(jobs["scan"]), now=clock.now, lease_until=clock.now + timedelta(seconds=30))
    ok = JobResult(status=JobStatus.SUCCEEDED, exit_code=0, stdout_tail="", stderr_tail="")
    advancer.advance(store.finish(first, attempt=1, result=ok, now=clock.now))
    assert store.get(jobs["pad"]).status == JobStatus.QUEUED
    report = sweeper.sweep()
    assert (report.requeued, report.failed) == ([], [])
    assert len(messages(stack_env)) == 1  # the Advancer's message, not a duplicate


def test_job_claimed_between_the_sweepers_read_and_its_write_is_left_running(
    sweeper: Sweeper, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job whose message was re-sent as often as allowed, and every send failed.
    job = queued_job(store, minutes_ago=60, requeues=MAX_RESENDS)
    write = store.fail_unfinished

    def a_worker_claims_then_write(seen: Job, **kwargs: Any) -> Job:
        now = utcnow()
        store.claim(store.get(seen.job_id), now=now, lease_until=now + timedelta(seconds=30))
        return write(seen, **kwargs)

    monkeypatch.setattr(store, "fail_unfinished", a_worker_claims_then_write)
    report = sweeper.sweep()
    assert report.failed == []
    running = store.get(job.job_id)
    assert running.status == JobStatus.RUNNING and running.error is None


def test_every_page_of_lost_messages_is_swept(
    sweeper: Sweeper, store: JobStore, stack_env: Resources
) -> None:
    lost = {queued_job(store, minutes_ago=30).job_id for _ in range(130)}
    assert set(sweeper.sweep().requeued) == lost
    assert len(messages(stack_env)) == 130


def test_job_whose_resends_all_fail_ends_never_started(
    sweeper: Sweeper, store: JobStore, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = queued_job(store, minutes_ago=20)

    def refuse(*args: object, **kwargs: object) -> str:
        raise QueueError("SQS is down")

    monkeypatch.setattr(queue, "send", refuse)
    reports = [sweeper.sweep() for _ in range(MAX_RESENDS + 1)]
    assert [r.failed for r in reports] == [[]] * MAX_RESENDS + [[lost.job_id]]
    job = store.get(lost.job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error.type == "never_started"
    assert store.active(JobStatus.QUEUED) == []


def test_one_blocked_step_that_cannot_be_moved_on_does_not_stop_the_others(
    sweeper: Sweeper, store: JobStore, advancer: Advancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = [queued_job(store, minutes_ago=40) for _ in range(2)]
    blocked = [
        queued_job(store, minutes_ago=30, status=JobStatus.BLOCKED, upstream={"input": f"{d.job_id}/x"})
        for d in done
    ]
    for d in done:
        store.cancel(d, now=utcnow())
    moved: list[str] = []

    def advance(job: Job) -> None:
        if job.job_id == done[0].job_id:
            raise StoreError("DynamoDB call failed: InternalServerError")
        moved.append(job.job_id)

    monkeypatch.setattr(advancer, "advance", advance)
    sweeper.sweep()
    assert moved == [done[1].job_id]
    assert {b.job_id for b in blocked} == {j.job_id for j in store.active(JobStatus.BLOCKED)}


def test_job_of_a_lost_worker_is_handed_over_and_finishes(
    client: Client, sweeper: Sweeper, store: JobStore, make_asset: Callable[..., str], npy_file: Path
) -> None:
    args = {"input": f"asset://{make_asset(npy_file, 'application/x-npy')}", "output": "m.png"}
    args.update(no_coastline=True, no_borders=True, no_gridlines=True)
    job_id = client.submit({"stage": "visualize", "command": "heatmap", "args": args}).json()["job_id"]
    # The first worker took the message, claimed the job, and died: the message stays invisible.
    sqs = boto3.client("sqs")
    sqs.receive_message(QueueUrl=client.resources.queue_url, VisibilityTimeout=3600)
    then = utcnow() - timedelta(minutes=5)
    store.claim(store.get(job_id), now=then, lease_until=then + timedelta(seconds=30))
    assert sweeper.sweep().rescued == [job_id]
    assert client.run_worker() == 1
    done = store.get(job_id)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2
    assert store.active(JobStatus.RUNNING) == []


def test_sweeper_function_handler_reports_what_it_did(store: JobStore, stack_env: Resources) -> None:
    lost = queued_job(store, minutes_ago=30)
    handler = load_handler("sweeper")
    out = handler.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, FakeContext())
    assert out == {"requeued": [lost.job_id], "rescued": [], "failed": []}
