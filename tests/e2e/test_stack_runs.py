"""Runs, outputs, events and job:// inputs over real HTTP on the local stack, as a frontend, the SDK
and the `jobgate` command line use them."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jobgate.client import Client
from jobgate_local.testing import DevProcess

from tests.e2e.test_cli import FLAGS, PNG, environment, jobgate, jobgate_command
from tests.e2e.test_stack_jobs import upload

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]

HEATMAP_FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}


def follow_events(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job by the long poll, as a client without a WebSocket reads them."""
    events: list[dict[str, Any]] = []
    after = 0
    for _ in range(30):
        page = api.get(f"/v1/jobs/{job_id}/events", params={"after_seq": after, "wait_s": 20})
        assert page.status_code == 200, page.text
        answer = page.json()
        events += answer["events"]
        after = answer["next_after_seq"]
        if answer["done"]:
            return events
    raise AssertionError("the job's events never said done")


def test_a_frontend_polls_its_run_reads_the_result_inline_and_chains_a_job(
    api: httpx.Client, npy_file: Path
) -> None:
    asset = upload(api, npy_file, "application/x-npy")
    run_id = f"answers-{uuid.uuid4().hex[:8]}"
    args = {"input": f"asset://{asset}", "output": "map.png", **HEATMAP_FLAGS}
    submitted = api.post(
        "/v1/jobs", json={"stage": "visualize", "command": "heatmap", "args": args, "run_id": run_id}
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["output_url"] == f"/v1/jobs/{job['job_id']}/outputs/map.png"

    events = follow_events(api, job["job_id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "status" and events[-1]["status"] == "succeeded"

    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["job_id"] == job["job_id"]
    assert (run["status"], run["finish_reason"], run["partial"]) == ("succeeded", "exit_0", False)
    assert "stderr" not in run

    png = api.get(job["output_url"])  # binary, through the gateway as Lambda answers it (base64)
    assert png.status_code == 200, png.text
    assert png.content.startswith(PNG)
    assert png.headers["content-type"] == "image/png"
    assert png.headers["etag"] == f'"{hashlib.sha256(png.content).hexdigest()}"'
    assert int(png.headers["content-length"]) == len(png.content)

    # The map, as the input of the next job, without a download and an upload.
    chained = api.post(
        "/v1/jobs",
        json={
            "stage": "disseminate",
            "command": "local",
            "args": {"input": f"job://{job['job_id']}/map.png", "path": "copy.png"},
            "mode": "sync",
            "wait_s": 20,
        },
    )
    assert chained.status_code == 200, chained.text
    assert chained.json()["status"] == "succeeded", chained.json()
    copy = api.get(f"/v1/jobs/{chained.json()['job_id']}/outputs/copy.png")
    assert copy.content == png.content


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}"


def test_the_sdk_follows_a_job_by_the_long_poll_when_the_websocket_is_unreachable(
    local_stack: DevProcess, npy_file: Path
) -> None:
    sources: list[str] = []
    args = {"input": npy_file, "output": "map.png", **HEATMAP_FLAGS}
    with Client(local_stack.http_url, local_stack.api_key, websocket_url=closed_port()) as client:
        result = client.run("visualize", "heatmap", args, on_event=lambda e: sources.append(e.source))
        assert result.status == "succeeded"
        assert client.read_output(result.job.job_id, "map.png").startswith(PNG)
        status = client.status(result.job.job_id)
        assert client.run_status(status.run_id).job_id == result.job.job_id
    assert sources[0] == "poll" and set(sources[1:]) == {"events"}  # a snapshot, then the numbered log


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    y, x = np.mgrid[0:24, 0:48]
    np.save(tmp_path / "local.npy", np.sin(x / 6.0) * np.cos(y / 5.0))
    return tmp_path


def test_the_command_line_dry_runs_polls_cats_follows_retries_and_runs_pipelines(
    local_stack: DevProcess, workdir: Path
) -> None:
    heatmap = ["visualize", "heatmap", "--input", "local.npy", "--output", "map.png", *FLAGS]
    dry = jobgate(local_stack, workdir, "submit", "--dry-run", *heatmap)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("visualize heatmap --input=inputs/") and "--output=map.png" in dry.stdout
    unknown = "job://01JD7Q9A1B2C3D4E5F6G7H8J9K/map.npy"  # passed as it is, never uploaded
    refused = jobgate(
        local_stack, workdir, "submit", "--dry-run", *heatmap[:2], "--input", unknown, *heatmap[4:]
    )
    assert refused.returncode == 1 and "does not exist" in refused.stderr  # as a submit is refused

    run_id = f"cli-run-{uuid.uuid4().hex[:8]}"
    submitted = jobgate(local_stack, workdir, "submit", "--run-id", run_id, *heatmap)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    lines = jobgate(local_stack, workdir, "events", job_id).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert events[-1]["type"] == "status" and events[-1]["status"] == "succeeded"
    status = json.loads(jobgate(local_stack, workdir, "status", "--run-id", run_id, "--json").stdout)
    assert status["job_id"] == job_id and status["finish_reason"] == "exit_0"
    cat = subprocess.run(
        [*jobgate_command(), "cat", job_id, "map.png"],
        cwd=workdir,
        env=environment(local_stack, workdir),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert cat.stdout.startswith(PNG)  # bytes, as written
    early = jobgate(local_stack, workdir, "cat", job_id, "nothing.png")
    assert early.returncode == 1 and "no output 'nothing.png'" in early.stderr
    retried = jobgate(local_stack, workdir, "retry", job_id)
    assert retried.returncode == 0 and len(retried.stdout.strip()) == 26

    asset_ref = jobgate(local_stack, workdir, "upload", "local.npy").stdout.split()[0]
    steps = [
        {
            "name": "map",
            "stage": "visualize",
            "command": "heatmap",
            "args": {"input": asset_ref, "output": "map.png", **HEATMAP_FLAGS},
        },
        {
            "name": "copy",
            "stage": "disseminate",
            "command": "local",
            "args": {"input": "step://map/map.png", "path": "copy.png"},
        },
    ]
    (workdir / "steps.json").write_text(json.dumps({"steps": steps}))
    ran = jobgate(local_stack, workdir, "pipeline", "submit", "steps.json", "--wait", "--json")
    assert ran.returncode == 0, ran.stderr
    pipeline = json.loads(ran.stdout)
    assert [s["job"]["status"] for s in pipeline["steps"]] == ["succeeded", "succeeded"]
    shown = jobgate(local_stack, workdir, "pipeline", "status", pipeline["pipeline_id"])
    assert shown.returncode == 0 and "copy" in shown.stdout
