"""Tools for the running stack, as a user runs them inside the checkout: `jobgate dev env`, `jobgate keys`
with no table named, `jobgate events new` and `jobgate invoke` (a handler on one event, without Docker)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from jobgate.client import Client
from jobgate_local.testing import DevProcess, jobgate_command

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]


def inside_checkout(stack: DevProcess) -> Path:
    """A folder deep inside the stack's checkout (the folder holding its `.jobgate/`)."""
    folder = stack.state_file.parent.parent / "notes" / "deeper"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBGATE_", "AWS_"))}
    env["JOBGATE_CONFIG"] = str(cwd / "no-config.toml")
    return subprocess.run(
        [*jobgate_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def finished_job(local_stack: DevProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("tools")
    y, x = np.mgrid[0:12, 0:24]
    np.save(folder / "f.npy", np.sin(x / 4.0) * np.cos(y / 3.0))
    with Client(local_stack.http_url, local_stack.api_key) as client:
        result = client.run(
            "visualize",
            "heatmap",
            {"input": folder / "f.npy", "output": "m.png", "no_coastline": True, "no_borders": True},
        )
    assert result.status == "succeeded"
    return result.job.model_dump(mode="json")


def test_dev_env_exports_what_curl_boto3_and_the_admin_cli_need(local_stack: DevProcess) -> None:
    cwd = inside_checkout(local_stack)
    printed = run(cwd, "dev", "env")
    assert printed.returncode == 0, printed.stderr
    script = (
        printed.stdout + 'curl -sf -H "X-API-Key: $JOBGATE_API_KEY" "$JOBGATE_URL/v1/commands" > /dev/null\n'
    )
    script += (
        "python -c \"import boto3; table = boto3.client('dynamodb').describe_table("
        "TableName='$JOBGATE_TABLE_NAME'); print(table['Table']['TableStatus'])\"\n"
    )
    path = f"{Path(jobgate_command()[0]).parent}:{os.environ['PATH']}"
    shell = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": path},
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == "ACTIVE"

    # The admin commands find the stack's table themselves.
    listed = run(cwd, "keys", "list", "--tenant", "default", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [] or isinstance(json.loads(listed.stdout), list)
    assert "the local stack of" in listed.stderr


def test_the_admin_commands_work_against_the_stack_with_no_setup(local_stack: DevProcess) -> None:
    cwd = inside_checkout(local_stack)
    stuck = run(cwd, "admin", "stuck", "--json")
    assert stuck.returncode == 0, stuck.stderr
    assert isinstance(json.loads(stuck.stdout), list)

    # An upload event nothing could settle, in the dead-letter queue nothing reads: moved back to the
    # queue AssetsFunction reads, which takes it (S3's test event settles nothing and succeeds).
    admin = {k: v for k, v in local_stack.state.items() if k.startswith("aws_")}
    sqs = boto3.client(
        "sqs",
        endpoint_url=admin["aws_endpoint_url"],
        region_name=local_stack.state["region"],
        aws_access_key_id=admin["aws_access_key_id"],
        aws_secret_access_key=admin["aws_secret_access_key"],
        aws_session_token=admin["aws_session_token"],
    )
    dlq = local_stack.resources["UploadEventsDeadLetterQueue"]
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    waiting = run(cwd, "admin", "redrive", "--queue", "uploads", "--dry-run", "--json")
    assert waiting.returncode == 0, waiting.stderr
    assert json.loads(waiting.stdout) == {"queue": "uploads", "waiting": 1, "moved": 0}
    moved = run(cwd, "admin", "redrive", "--queue", "uploads", "--json")
    assert json.loads(moved.stdout) == {"queue": "uploads", "waiting": 1, "moved": 1}, moved.stderr
    attributes = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    queue = local_stack.resources["UploadEventsQueue"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=attributes)["Attributes"]
        if counts == dict.fromkeys(attributes, "0"):
            break
        time.sleep(0.2)
    assert counts == dict.fromkeys(attributes, "0")  # AssetsFunction took it
    assert sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=attributes)["Attributes"] == dict.fromkeys(
        attributes, "0"
    )


def test_events_new_names_what_exists_and_invoke_runs_the_handler(
    local_stack: DevProcess, finished_job: dict[str, Any]
) -> None:
    cwd = inside_checkout(local_stack)
    made = run(cwd, "events", "new", "api-get-job", "-o", "get.json")
    assert made.returncode == 0, made.stderr
    event = json.loads((cwd / "get.json").read_text())
    assert event["headers"]["x-api-key"] == local_stack.api_key
    assert event["rawPath"] == f"/v1/jobs/{finished_job['job_id']}"

    answered = run(cwd, "invoke", "ApiFunction", "-e", "get.json")
    assert answered.returncode == 0, answered.stderr
    answer = json.loads(answered.stdout)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["job_id"] == finished_job["job_id"]

    # The worker, as its role, on the job's message: the job has ended, so it acknowledges it.
    assert run(cwd, "events", "new", "worker-sqs-job", "-o", "worker.json").returncode == 0
    worked = run(cwd, "invoke", "Worker", "-e", "worker.json")
    assert worked.returncode == 0, worked.stderr
    assert json.loads(worked.stdout) == {"batchItemFailures": []}

    assert run(cwd, "events", "new", "assets-s3-upload", "-o", "upload.json").returncode == 0
    settled = run(cwd, "invoke", "AssetsFunction", "-e", "upload.json")
    assert settled.returncode == 0, settled.stderr


def test_the_tools_say_in_one_line_when_no_stack_runs(tmp_path: Path) -> None:
    done = run(tmp_path, "events", "new", "api-get-job")
    assert done.returncode == 1
    assert done.stderr == (
        "jobgate: no `jobgate dev` runs in this checkout: start it with `make dev` (or `jobgate dev`)\n"
    )
