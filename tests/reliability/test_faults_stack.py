"""Faults on the local stack, over real HTTP and WebSocket: each leaves every job with a true ending.

The commands are real zyra (`acquire api`) fetching from the loopback origin server, so a test picks
what the command does: answer after a few seconds, stream half a file and then stall, or fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Job, utcnow
from jobgate_local.testing import DevProcess
from ulid import ULID

from tests.reliability.conftest import (
    LEASE_S,
    LOST_AFTER_S,
    PARTIAL_CHUNK,
    SWEEP_EVERY_S,
    VISIBILITY_TIMEOUT_S,
    Origin,
    fetch,
    job_child_pid,
    parent_pid,
    wait_for,
    wait_terminal,
)

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]
TWO_HOURS = 7200  # past the worker Lambda's budget: such a job runs as a container task


def _client(stack: DevProcess, service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _submit(api: httpx.Client, body: dict[str, Any]) -> str:
    answer = api.post("/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def _running_child(job_id: str, timeout: float = 60) -> int:
    pid: int = wait_for(lambda: job_child_pid(job_id), timeout=timeout, every=0.05)
    return pid


def _send_duplicate(stack: DevProcess, job_id: str) -> None:
    """The same message again, as SQS's at-least-once delivery may hand it out."""
    _client(stack, "sqs").send_message(
        QueueUrl=stack.resources["JobsQueue"], MessageBody=json.dumps({"job_id": job_id, "tenant": "default"})
    )


@pytest.fixture(scope="module")
def killed_worker_job(api: httpx.Client, origin: Origin) -> tuple[str, str]:
    """A job whose worker was SIGKILLed mid-run; the tests in between run while SQS holds its message."""
    path = f"/slow/{uuid.uuid4().hex}"
    job_id = _submit(api, fetch(origin, f"{path}?s=4", output="page.txt", timeout_s=30))
    child = _running_child(job_id)
    wait_for(lambda: origin.count(path) == 1, timeout=30, every=0.05)  # its fetch has begun
    sandbox = parent_pid(parent_pid(child))  # the job's parent is the worker's zygote
    os.kill(sandbox, signal.SIGKILL)  # the whole worker, as a crashed or OOM-killed Lambda
    return job_id, path


def _tasks_of(stack: DevProcess, job_id: str) -> list[dict[str, Any]]:
    """The local ECS tasks started for a job (the emulated RunTask lists them with their pids)."""
    tasks = httpx.get(f"{stack.aws_endpoint_url}/_jobgate/tasks", timeout=30).json()["tasks"]
    return [t for t in tasks if t["environment"].get("JOBGATE_JOB_ID") == job_id]


@pytest.fixture(scope="module")
def killed_task_job(api: httpx.Client, reliability_stack: DevProcess, origin: Origin) -> tuple[str, str]:
    """A job past the worker Lambda's budget, so it runs as a container task, whose task died mid-run
    (its host lost: the process and its command SIGKILLed, with no time to say anything)."""
    path = f"/slow/{uuid.uuid4().hex}"
    body = fetch(origin, f"{path}?s=4", output="page.txt", timeout_s=TWO_HOURS)
    submitted = api.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["job_id"]
    assert submitted.json()["runner"] == "container"
    wait_for(lambda: origin.count(path) == 1, timeout=60, every=0.05)  # its command has begun its fetch
    [task] = _tasks_of(reliability_stack, job_id)
    assert task["status"] == "RUNNING"
    os.killpg(task["pid"], signal.SIGKILL)
    return job_id, path


def test_worker_killed_mid_job_leaves_it_running_for_a_retry(
    api: httpx.Client, killed_worker_job: tuple[str, str]
) -> None:
    job_id, _ = killed_worker_job
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"]) == ("running", 1)


def test_a_task_that_died_leaves_its_job_running_for_the_sweeper(
    api: httpx.Client, killed_task_job: tuple[str, str]
) -> None:
    job_id, _ = killed_task_job
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["runner"], job["attempts"]) == ("running", "container", 1)


def test_duplicate_delivery_runs_the_job_once(
    api: httpx.Client, reliability_stack: DevProcess, origin: Origin
) -> None:
    path = f"/slow/{uuid.uuid4().hex}"
    job_id = _submit(api, fetch(origin, f"{path}?s=2", output="page.txt", timeout_s=30))
    _send_duplicate(reliability_stack, job_id)  # both workers get a copy at about the same time

    job = wait_terminal(api, job_id, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert origin.count(path) == 1

    _send_duplicate(reliability_stack, job_id)  # and one more, long after it ended
    time.sleep(3)
    again = api.get(f"/v1/jobs/{job_id}").json()
    assert (again["status"], again["finished_at"], again["attempts"]) == ("succeeded", job["finished_at"], 1)
    assert origin.count(path) == 1


def test_a_message_in_the_dead_letter_queue_ends_its_job_failed(
    api: httpx.Client, reliability_stack: DevProcess
) -> None:
    # A job whose message SQS gave up on: written as the API writes it, its message in the DLQ.
    store = JobStore(
        _client(reliability_stack, "dynamodb"), reliability_stack.resources["JobsTable"], timedelta(days=1)
    )
    job, _ = store.create(
        Job(
            job_id=str(ULID()),
            tenant="default",
            stage="acquire",
            command="api",
            args={"url": "http://127.0.0.1:9/never"},
            timeout_s=30,
            request_hash="dead-letter-test",
            created_at=utcnow(),
        )
    )
    _client(reliability_stack, "sqs").send_message(
        QueueUrl=reliability_stack.resources["JobsDeadLetterQueue"],
        MessageBody=json.dumps({"job_id": job.job_id, "tenant": "default"}),
    )

    ended = wait_terminal(api, job.job_id, timeout=60)
    assert ended["status"] == "failed"
    assert ended["error"]["type"] == "dead_letter"
    assert "dead-letter" in ended["error"]["message"]


def test_a_child_killed_by_a_signal_keeps_its_outputs_and_names_the_signal(
    api: httpx.Client, origin: Origin
) -> None:
    job_id = _submit(api, fetch(origin, f"/partial/{uuid.uuid4().hex}", output="partial.bin", timeout_s=30))
    child = _running_child(job_id)
    written = Path(f"/proc/{child}/cwd/partial.bin")
    wait_for(lambda: written.exists() and written.stat().st_size >= 2 * PARTIAL_CHUNK, timeout=30, every=0.05)

    os.kill(child, signal.SIGSEGV)  # as zyra's `[all]` install crashes after writing its outputs

    job = wait_terminal(api, job_id, timeout=60)
    assert job["status"] == "failed"
    assert job["exit_code"] == 128 + signal.SIGSEGV
    assert job["error"]["type"] == "signal"
    assert "SIGSEGV" in job["error"]["message"]
    assert [(o["name"], o["size"]) for o in job["outputs"]] == [("partial.bin", 2 * PARTIAL_CHUNK)]
    kept = api.get(f"/v1/jobs/{job_id}/download", params={"name": "partial.bin"}, follow_redirects=True)
    assert kept.status_code == 200
    assert kept.content == b"A" * PARTIAL_CHUNK + b"B" * PARTIAL_CHUNK


def test_a_subscriber_that_vanishes_leaves_the_job_and_other_subscribers_alone(
    api: httpx.Client, reliability_stack: DevProcess, origin: Origin
) -> None:
    ws_url = reliability_stack.state.get("websocket_url")
    if not ws_url:
        pytest.skip("the local stack has no WebSocket gateway")
    from websockets.sync.client import connect

    job_id = _submit(api, fetch(origin, f"/slow/{uuid.uuid4().hex}?s=3", output="page.txt", timeout_s=30))
    url = f"{ws_url}?api_key={reliability_stack.api_key}"
    with connect(url, open_timeout=30) as stays, connect(url, open_timeout=30) as leaves:
        for ws in (stays, leaves):
            ws.send(json.dumps({"action": "subscribe", "job_id": job_id}))
            assert json.loads(ws.recv(timeout=30))["type"] == "snapshot"
        # Gone without a goodbye: no close frame, the TCP connection just drops (a phone going offline).
        leaves.socket.shutdown(socket.SHUT_RDWR)
        leaves.socket.close()

        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = json.loads(stays.recv(timeout=max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                break
            seen.append(message)
            if message.get("type") == "status" and message["status"] not in ("queued", "running"):
                break

    job = api.get(f"/v1/jobs/{job_id}").json()
    assert seen and seen[-1].get("status") == "succeeded", (seen, job)
    assert job["status"] == "succeeded" and job["exit_code"] == 0
    assert [o["name"] for o in job["outputs"]] == ["page.txt"]


def test_worker_killed_mid_job_is_taken_over_and_finishes(
    api: httpx.Client, origin: Origin, killed_worker_job: tuple[str, str]
) -> None:
    # Last in this module: the sweeper hands the job on once its lease has run out, while the tests above
    # run (else SQS would, after the visibility timeout).
    job_id, path = killed_worker_job
    job = wait_terminal(api, job_id, timeout=VISIBILITY_TIMEOUT_S + 60)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), (job["error"], job["stderr"][-2000:])
    assert [o["name"] for o in job["outputs"]] == ["page.txt"]
    assert origin.count(path) == 2  # the first attempt's fetch, and the retry's


def test_a_task_that_died_is_rescued_by_the_sweeper_and_finishes(
    api: httpx.Client, reliability_stack: DevProcess, origin: Origin, killed_task_job: tuple[str, str]
) -> None:
    # Its lease runs out, lost_after_s more pass, the sweeper's next pass sends the job again, to the
    # container runner's queue: a new task takes it over (nothing else would, the dispatcher having
    # consumed its message when it started the first task).
    job_id, path = killed_task_job
    job = wait_terminal(api, job_id, timeout=LEASE_S + LOST_AFTER_S + SWEEP_EVERY_S + 60)
    assert (job["status"], job["runner"], job["attempts"]) == ("succeeded", "container", 2), (
        job["error"],
        job["stderr"][-2000:],
    )
    assert [o["name"] for o in job["outputs"]] == ["page.txt"]
    assert origin.count(path) == 2  # the dead task's fetch, and the new task's
    wait_for(lambda: all(t["status"] == "STOPPED" for t in _tasks_of(reliability_stack, job_id)), timeout=15)
    assert [t["exit_code"] for t in _tasks_of(reliability_stack, job_id)] == [-signal.SIGKILL, 0]
