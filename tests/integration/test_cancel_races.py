"""Cancel while the job moves, claims of cancelled jobs, and dead-lettered jobs: each ends once, visibly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import InvalidTransition
from jobgate.models import Job, JobResult, JobStatus, utcnow
from ulid import ULID

from tests.integration.conftest import Client
from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler, sqs_event

HEATMAP_FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}


def new_job(store: JobStore, status: JobStatus = JobStatus.QUEUED, **fields: Any) -> Job:
    job = Job(
        job_id=str(ULID()),
        tenant="default",
        stage="process",
        command="scan-frames",
        args={"frames_dir": "nowhere"},
        timeout_s=60,
        request_hash="h",
        created_at=utcnow(),
        status=status,
        **fields,
    )
    return store.create(job)[0]


def two_steps() -> dict[str, Any]:
    scan = {"frames_dir": "nowhere", "output": "meta.json"}
    pad = {"frames_meta": "step://scan/meta.json", "output_dir": "filled", "fill_mode": "blank"}
    return {
        "steps": [
            {"name": "scan", "stage": "process", "command": "scan-frames", "args": scan},
            {"name": "pad", "stage": "process", "command": "pad-missing", "args": pad},
        ]
    }


def status_events(stack_env: Resources, job_id: str) -> list[str]:
    events = EventStore(aws_clients.dynamodb(), stack_env.table_name, timedelta(days=1)).after(job_id, 0)
    return [e.status.value for e in events if e.type == "status" and e.status is not None]


def dead_letter(job_id: str, receives: int = 3) -> dict[str, Any]:
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": f'{{"job_id": "{job_id}"}}',
        "MD5OfBody": "x",
        "Attributes": {"ApproximateReceiveCount": str(receives)},
    }
    handler = load_handler("deadletter")
    answer: dict[str, Any] = handler.handler(
        sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:dlq"), FakeContext()
    )
    return answer


# -- JobStore.cancel against a job that moves under it ------------------------------------------


def test_cancel_of_a_step_that_was_just_unblocked_cancels_it(store: JobStore) -> None:
    seen = new_job(store, JobStatus.BLOCKED)
    store.unblock(seen, now=utcnow())  # its upstream finished between the client's read and its cancel
    cancelled = store.cancel(seen, now=utcnow())
    assert cancelled.status == JobStatus.CANCELLED
    assert store.get(seen.job_id).status == JobStatus.CANCELLED


def test_cancel_of_a_job_just_requeued_for_a_retry_cancels_it(store: JobStore) -> None:
    job = new_job(store, max_attempts=2, retry_on_exit=True)
    now = utcnow()
    seen = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    store.requeue(seen, attempt=1, now=utcnow())  # its first attempt exited non-zero: queued for the second
    cancelled = store.cancel(seen, now=utcnow())
    assert cancelled.status == JobStatus.CANCELLED


def test_cancel_of_a_queued_job_a_worker_just_claimed_flags_it(store: JobStore) -> None:
    seen = new_job(store)
    now = utcnow()
    store.claim(seen, now=now, lease_until=now + timedelta(seconds=30))
    flagged = store.cancel(seen, now=utcnow())
    assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested


def test_cancel_of_an_ended_job_is_still_refused(store: JobStore) -> None:
    job = new_job(store)
    store.cancel(job, now=utcnow())
    with pytest.raises(InvalidTransition, match="already ended"):
        store.cancel(job, now=utcnow())


def test_pipeline_cancel_ends_a_step_unblocked_while_it_cancels(
    client: Client, monkeypatch: pytest.MonkeyPatch, store: JobStore
) -> None:
    view = client.call("POST", "/v1/pipelines", body=two_steps()).json()
    ids = {s["name"]: s["job"]["job_id"] for s in view["steps"]}
    now = utcnow()
    running = store.claim(store.get(ids["scan"]), now=now, lease_until=now + timedelta(seconds=30))
    pipelines = client.api._asgi.app.state.services.pipelines
    read = pipelines.jobs

    def read_then_the_first_step_ends(pipeline: Any) -> dict[str, Job]:
        jobs: dict[str, Job] = read(pipeline)
        if store.get(running.job_id).terminal:
            return jobs  # the answer's own read, after the cancel
        ok = JobResult(status=JobStatus.SUCCEEDED, exit_code=0, stdout_tail="", stderr_tail="")
        done = store.finish(running, attempt=1, result=ok, now=utcnow())
        pipelines._advancer.advance(done)  # as its worker does: the second step is queued
        return jobs

    monkeypatch.setattr(pipelines, "jobs", read_then_the_first_step_ends)
    answer = client.call("DELETE", f"/v1/pipelines/{view['pipeline_id']}")
    assert answer.status == 200, answer.body
    assert store.get(ids["pad"]).status == JobStatus.CANCELLED
    client.run_worker()
    assert store.get(ids["pad"]).attempts == 0  # it never ran


# -- claims of a job whose cancel was asked --------------------------------------------------------


def test_job_whose_worker_died_after_a_cancel_request_ends_cancelled_without_running_again(
    client: Client, store: JobStore, make_asset: Callable[..., str], npy_file: Path, stack_env: Resources
) -> None:
    args = {
        "input": f"asset://{make_asset(npy_file, 'application/x-npy')}",
        "output": "m.png",
        **HEATMAP_FLAGS,
    }
    job_id = client.submit({"stage": "visualize", "command": "heatmap", "args": args}).json()["job_id"]
    then = utcnow() - timedelta(minutes=5)
    store.claim(store.get(job_id), now=then, lease_until=then + timedelta(seconds=5))
    flagged = client.call("DELETE", f"/v1/jobs/{job_id}")  # its worker died before it saw this
    assert flagged.status == 200 and flagged.json()["cancel_requested"] is True
    client.run_worker()  # the message comes back: the job must not run again
    done = store.get(job_id)
    assert done.status == JobStatus.CANCELLED
    assert done.attempts == 1
    assert done.outputs == []
    assert status_events(stack_env, job_id)[-1:] == ["cancelled"]


def test_queued_job_with_a_cancel_request_is_cancelled_at_claim(
    client: Client, store: JobStore, stack_env: Resources
) -> None:
    job = new_job(store, max_attempts=2, retry_on_exit=True)
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    store.cancel(running, now=now)  # flagged while running
    store.requeue(running, attempt=1, now=utcnow())  # then its attempt ended and asked for another
    JobQueue(aws_clients.sqs(), stack_env.queue_url).send(job.job_id, job.tenant)
    client.run_worker()
    done = store.get(job.job_id)
    assert done.status == JobStatus.CANCELLED and done.attempts == 1


# -- dead letters ---------------------------------------------------------------------------------


def test_dead_lettered_job_is_announced(client: Client, stack_env: Resources) -> None:
    job_id = client.submit(
        {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "x"}}
    ).json()["job_id"]
    assert dead_letter(job_id) == {"batchItemFailures": []}
    assert client.call("GET", f"/v1/jobs/{job_id}").json()["status"] == "failed"
    assert status_events(stack_env, job_id)[-1:] == ["failed"]


def test_dead_lettered_step_moves_its_pipeline_on(client: Client, store: JobStore) -> None:
    view = client.call("POST", "/v1/pipelines", body=two_steps()).json()
    ids = {s["name"]: s["job"]["job_id"] for s in view["steps"]}
    dead_letter(ids["scan"])
    after = store.get(ids["pad"])
    assert after.status == JobStatus.CANCELLED
    assert after.error is not None and "Step 'scan'" in after.error.message
    done = client.call("GET", f"/v1/pipelines/{view['pipeline_id']}").json()
    assert done["status"] == "failed"


def test_dead_letter_of_a_job_running_under_a_live_lease_leaves_it_to_its_worker(
    store: JobStore, stack_env: Resources
) -> None:
    job = new_job(store)
    now = utcnow()
    store.claim(job, now=now, lease_until=now + timedelta(minutes=5))
    dead_letter(job.job_id)  # a duplicate message of a job that another delivery is running
    assert store.get(job.job_id).status == JobStatus.RUNNING
