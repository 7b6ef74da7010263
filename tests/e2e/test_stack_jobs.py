"""The whole system on the local stack, over real HTTP: health, the command registry, a real zyra job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobgate_local.testing import DevProcess

pytestmark = [pytest.mark.e2e]

PROBLEM = "application/problem+json"


def test_liveness_and_readiness_answer_200(api: httpx.Client) -> None:
    assert api.get("/health/live").status_code == 200
    ready = api.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"table": "ok", "queue": "ok", "bucket": "ok"}


def test_the_registry_lists_zyras_stages(api: httpx.Client) -> None:
    response = api.get("/v1/commands")
    assert response.status_code == 200
    stages = response.json()["stages"]
    assert {"acquire", "process", "visualize", "disseminate"} <= set(stages)
    assert "heatmap" in stages["visualize"]
    assert all(item["contract"] is None for item in response.json()["items"])

    # A client's whole catalog in one request: each item with what its href answers.
    catalog = api.get("/v1/commands", params={"contracts": "true"}).json()["items"]
    heatmap = next(i for i in catalog if (i["stage"], i["command"]) == ("visualize", "heatmap"))
    assert heatmap["contract"] == api.get(heatmap["href"]).json()
    assert len(catalog) == len(response.json()["items"]) and all(i["contract"] for i in catalog)


def test_an_unknown_job_is_a_problem_json_404(api: httpx.Client) -> None:
    response = api.get("/v1/jobs/01JD7Q9A1B2C3D4E5F6G7H8J9K")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == 404
    assert {"type", "title", "detail", "instance"} <= set(problem)


def test_a_request_without_the_key_is_refused(local_stack: DevProcess) -> None:
    response = httpx.get(f"{local_stack.http_url}/v1/commands")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)


def test_an_unknown_argument_is_refused_before_anything_is_queued(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"stage": "visualize", "command": "heatmap", "args": {"nope": 1}})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["errors"]


def upload(api: httpx.Client, path: Path, media_type: str) -> str:
    """Upload an input as a client does: ask for a presigned upload, send the bytes straight to S3."""
    data = path.read_bytes()
    answer = api.post(
        "/v1/uploads", json={"filename": path.name, "media_type": media_type, "size": len(data)}
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    target = created["upload"]
    if target["method"] == "POST":
        sent = httpx.post(target["url"], data=target["fields"], files={"file": (path.name, data, media_type)})
    else:
        sent = httpx.put(target["url"], content=data, headers=target.get("headers", {}))
    assert sent.status_code in (200, 204), sent.text
    asset_id: str = created["asset_id"]
    wait_until(lambda: api.get(f"/v1/assets/{asset_id}").json()["status"] == "AVAILABLE")
    return asset_id


def wait_until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


HEATMAP_ARGS = {"output": "map.png", "no_coastline": True, "no_borders": True, "no_gridlines": True}


@pytest.mark.zyra
def test_a_heatmap_job_runs_from_upload_to_download(api: httpx.Client, npy_file: Path) -> None:
    asset_id = upload(api, npy_file, "application/x-npy")
    submitted = api.post(
        "/v1/jobs",
        json={
            "stage": "visualize",
            "command": "heatmap",
            "args": {"input": f"asset://{asset_id}", **HEATMAP_ARGS},
        },
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert submitted.json()["status"] == "queued"

    wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] not in ("queued", "running"))
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["exit_code"] == 0
    assert [output["name"] for output in job["outputs"]] == ["map.png"]

    logs = api.get(f"/v1/jobs/{job_id}/logs", params={"stream": "stderr"})
    assert logs.status_code == 200
    outputs = api.get(f"/v1/jobs/{job_id}/outputs").json()["items"]
    assert outputs[0]["name"] == "map.png" and outputs[0]["url"]
    download = api.get(f"/v1/jobs/{job_id}/download", follow_redirects=True)
    assert download.status_code == 200
    assert download.content.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.zyra
def test_sync_mode_answers_the_finished_job(api: httpx.Client, npy_file: Path) -> None:
    asset_id = upload(api, npy_file, "application/x-npy")
    response = api.post(
        "/v1/jobs",
        json={
            "stage": "visualize",
            "command": "heatmap",
            "args": {"input": f"asset://{asset_id}", **HEATMAP_ARGS},
            "mode": "sync",
            "wait_s": 25,
        },
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded" and job["exit_code"] == 0
