"""The container runner on the local stack: a job past the worker Lambda's budget runs as a task (a
local process started by the emulated RunTask from the template's task definition), and a cancel
kills it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from jobgate_local.strict import ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY
from jobgate_local.testing import DevProcess

from tests.e2e.test_stack_jobs import HEATMAP_ARGS, upload, wait_until

pytestmark = [pytest.mark.e2e]
TWO_HOURS = 7200


@pytest.fixture(scope="module")
def client(egress_stack: DevProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=egress_stack.http_url, headers={"X-API-Key": egress_stack.api_key}, timeout=60
    ) as http:
        yield http


def _tasks_of(stack: DevProcess, job_id: str) -> list[dict[str, Any]]:
    tasks = httpx.get(f"{stack.aws_endpoint_url}/_jobgate/tasks", timeout=30).json()["tasks"]
    return [t for t in tasks if t["environment"].get("JOBGATE_JOB_ID") == job_id]


def _ended(client: httpx.Client, job_id: str) -> bool:
    return client.get(f"/v1/jobs/{job_id}").json()["status"] not in ("queued", "running")


@pytest.mark.zyra
def test_a_two_hour_job_runs_as_a_task_and_succeeds(
    egress_stack: DevProcess, client: httpx.Client, npy_file: Path
) -> None:
    asset_id = upload(client, npy_file, "application/x-npy")
    submitted = client.post(
        "/v1/jobs",
        json={
            "stage": "visualize",
            "command": "heatmap",
            "args": {"input": f"asset://{asset_id}", **HEATMAP_ARGS},
            "timeout_s": TWO_HOURS,
        },
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert submitted.json()["runner"] == "container"

    wait_until(lambda: _ended(client, job_id), timeout=90)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert [o["name"] for o in job["outputs"]] == ["map.png"]
    assert (job["runner"], job["attempts"], job["timeout_s"]) == ("container", 1, TWO_HOURS)
    wait_until(lambda: _tasks_of(egress_stack, job_id)[0]["status"] == "STOPPED", timeout=15)
    tasks = _tasks_of(egress_stack, job_id)
    assert len(tasks) == 1 and tasks[0]["exit_code"] == 0  # one task, which ended with its job

    too_long = client.post(
        "/v1/jobs", json={"stage": "visualize", "command": "heatmap", "args": {}, "timeout_s": 6 * 3600 + 1}
    )
    assert too_long.status_code == 422 and "21600 s" in too_long.json()["detail"]


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers: a job fetching it hangs."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    yield f"http://127.0.0.1:{silent.getsockname()[1]}/never"
    silent.close()


def _hanging_job(stack: DevProcess, client: httpx.Client, url: str) -> str:
    """A two-hour job whose command has started (on its task) and hangs."""
    submitted = client.post(
        "/v1/jobs",
        json={
            "stage": "acquire",
            "command": "http",
            "args": {"url": url, "output": "page.html"},
            "timeout_s": TWO_HOURS,
        },
    )
    assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["job_id"]
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"] >= 0.2, timeout=90)
    assert [t["status"] for t in _tasks_of(stack, job_id)] == ["RUNNING"]
    return job_id


def test_cancelling_a_container_job_kills_its_task(
    egress_stack: DevProcess, client: httpx.Client, silent_url: str
) -> None:
    job_id = _hanging_job(egress_stack, client, silent_url)
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    started = time.monotonic()
    wait_until(lambda: _ended(client, job_id), timeout=30)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["error"]["type"] == "cancelled", job
    assert "killed" in job["error"]["message"]
    wait_until(lambda: _tasks_of(egress_stack, job_id)[0]["status"] == "STOPPED", timeout=15)
    assert time.monotonic() - started < 20


def test_a_stopped_task_releases_its_job_for_another_task(
    egress_stack: DevProcess, client: httpx.Client, silent_url: str
) -> None:
    """ECS stops a task (StopTask, a Spot interruption): SIGTERM. The task kills its command and gives
    up the job's lease at once, so the sweeper hands the job to a new task at its next pass."""
    job_id = _hanging_job(egress_stack, client, silent_url)
    ecs = boto3.client(
        "ecs",
        endpoint_url=egress_stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_ACCESS_KEY,
        aws_secret_access_key=ADMIN_SECRET_KEY,
    )
    task = _tasks_of(egress_stack, job_id)[0]
    ecs.stop_task(cluster="jobs", task=task["arn"], reason="Spot interruption")

    wait_until(lambda: _tasks_of(egress_stack, job_id)[0]["status"] == "STOPPED", timeout=20)
    assert _tasks_of(egress_stack, job_id)[0]["exit_code"] == 143
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=egress_stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_ACCESS_KEY,
        aws_secret_access_key=ADMIN_SECRET_KEY,
    )
    item = dynamodb.get_item(
        TableName=egress_stack.resources["JobsTable"],
        Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}},
        ConsistentRead=True,
    )["Item"]
    assert item["status"]["S"] == "running" and item["attempts"]["N"] == "1"
    assert int(item["lease_until"]["N"]) <= time.time() * 1000  # released: free to take over now
    client.delete(f"/v1/jobs/{job_id}")  # not left for the sweeper to run again
