"""The sweeper leaves no job unfinished: lost messages are re-sent, lost workers replaced."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import JobQueue
from jobgate.models import Job, JobStatus, utcnow
from jobgate.services.sweeper import SweepConfig, Sweeper
from ulid import ULID

from tests.integration.conftest import Client
from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler


def queued_job(store: JobStore, minutes_ago: float, **args: object) -> Job:
    created = utcnow() - timedelta(minutes=minutes_ago)
    job = Job(
        job_id=str(ULID.from_timestamp(created.timestamp())),
        tenant="default",
        stage="process",
        command="scan-frames",
        args={"frames_dir": "nowhere", **args},
        timeout_s=60,
        request_hash="h",
        created_at=created,
    )
    return store.create(job)[0]


def messages(resources: Resources) -> list[str]:
    got = boto3.client("sqs").receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10)
    return [m["Body"] for m in got.get("Messages", [])]


@pytest.fixture
def sweeper(store: JobStore, stack_env: Resources) -> Sweeper:
    queue = JobQueue(aws_clients.sqs(), stack_env.queue_url)
    return Sweeper(store, queue, SweepConfig(requeue_after_s=600, max_requeues=2, lost_after_s=60))


def test_queued_job_that_lost_its_message_is_sent_again(
    sweeper: Sweeper, store: JobStore, stack_env: Resources
) -> None:
    lost = queued_job(store, minutes_ago=20)
    fresh = queued_job(store, minutes_ago=1)
    report = sweeper.sweep()
    assert report.requeued == [lost.job_id]
    assert [lost.job_id in body for body in messages(stack_env)] == [True]
    assert store.get(lost.job_id).requeues == 1
    assert store.get(fresh.job_id).requeues == 0


def test_queued_job_never_picked_up_ends_failed(sweeper: Sweeper, store: JobStore) -> None:
    lost = queued_job(store, minutes_ago=20)
    sweeper.sweep()
    sweeper.sweep()
    report = sweeper.sweep()
    assert report.failed == [lost.job_id]
    job = store.get(lost.job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error.type == "never_started"
    assert store.active(JobStatus.QUEUED) == []


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
