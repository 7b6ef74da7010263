"""Pipelines on the local stack: real zyra steps feed each other; the last output comes back."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.test_stack_jobs import upload

pytestmark = pytest.mark.e2e

FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}
DAYS = ["20261101", "20261102", "20261104"]


def frames(api: httpx.Client, tmp_path: Path) -> list[str]:
    ids = []
    for i, _ in enumerate(DAYS):
        path = tmp_path / f"f{i}.npy"
        np.save(path, np.random.default_rng(i).random((12, 24)))
        ids.append(upload(api, path, "application/x-npy"))
    return ids


def chain(assets: list[str]) -> dict[str, Any]:
    render = {
        "inputs": [f"asset://{a}" for a in assets],
        "output_dir": "frames",
        "output_names": [f"frame_{d}.png" for d in DAYS],
        **FLAGS,
    }
    scan = {"frames_dir": "step://render/frames", "datetime_format": "%Y%m%d", "period_seconds": "86400"}
    pad = {"frames_meta": "step://scan/meta.json", "output_dir": "filled", "fill_mode": "blank"}
    video = {"frames": "step://render/frames", "output": "video.mp4", "fps": "2", "glob": "*.png"}
    return {
        "steps": [
            {"name": "render", "stage": "visualize", "command": "heatmap", "args": render},
            {
                "name": "scan",
                "stage": "process",
                "command": "scan-frames",
                "args": {**scan, "output": "meta.json"},
            },
            {
                "name": "pad",
                "stage": "process",
                "command": "pad-missing",
                "args": pad,
                "files": ["step://render/frames"],
            },
            {
                "name": "video",
                "stage": "visualize",
                "command": "compose-video",
                "args": video,
                "after": ["pad"],
            },
        ]
    }


def finished(api: httpx.Client, pipeline_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = api.get(f"/v1/pipelines/{pipeline_id}").json()
        if all(
            s["job"]["status"] in ("succeeded", "failed", "timed_out", "cancelled") for s in view["steps"]
        ):
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.25)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="compose-video needs ffmpeg")
def test_four_step_chain_ends_with_a_video_to_download(api: httpx.Client, tmp_path: Path) -> None:
    created = api.post("/v1/pipelines", json=chain(frames(api, tmp_path)))
    assert created.status_code == 201, created.text
    view = finished(api, created.json()["pipeline_id"])
    jobs = {s["name"]: s["job"] for s in view["steps"]}
    assert view["status"] == "succeeded", {n: (j["status"], j["stderr"][-300:]) for n, j in jobs.items()}
    assert [o["name"] for o in jobs["pad"]["outputs"]] == ["filled/frame_20261103.png"]
    video = api.get(f"/v1/jobs/{jobs['video']['job_id']}/download", follow_redirects=False)
    assert video.status_code == 307
    data = httpx.get(video.headers["location"]).content
    assert data[4:8] == b"ftyp" and len(data) == jobs["video"]["outputs"][0]["size"]


def test_failed_middle_step_cancels_the_last_with_the_reason(api: httpx.Client, tmp_path: Path) -> None:
    body = chain(frames(api, tmp_path))
    body["steps"][1]["args"]["frames_dir"] = "step://render/frames/frame_20261101.png"  # a file: scan fails
    view = finished(api, api.post("/v1/pipelines", json=body).json()["pipeline_id"])
    jobs = {s["name"]: s["job"] for s in view["steps"]}
    assert jobs["scan"]["status"] == "failed"
    assert jobs["pad"]["status"] == "cancelled"
    assert jobs["pad"]["error"]["message"] == "Step 'scan' it reads from ended failed; it cannot run."
    assert jobs["video"]["status"] == "cancelled" and "Step 'pad'" in jobs["video"]["error"]["message"]
    assert view["status"] == "failed"


def test_zyra_pipeline_yaml_runs_as_steps(api: httpx.Client, tmp_path: Path) -> None:
    field = tmp_path / "field.npy"
    np.save(field, np.random.default_rng(7).random((10, 20)))
    asset = upload(api, field, "application/x-npy")
    pipeline = f"""
stages:
  - stage: visualize
    command: heatmap
    args:
      input: "asset://{asset}"
      output: map.png
      no-coastline: true
      no-borders: true
      no-gridlines: true
  - stage: export
    command: local
    args: {{input: map.png, path: out/copy.png}}
"""
    created = api.post("/v1/pipelines", content=pipeline, headers={"Content-Type": "application/yaml"})
    assert created.status_code == 201, created.text
    view = finished(api, created.json()["pipeline_id"])
    assert view["status"] == "succeeded", view
    last = view["steps"][-1]["job"]
    copy = api.get(f"/v1/jobs/{last['job_id']}/download", follow_redirects=False)
    assert httpx.get(copy.headers["location"]).content.startswith(b"\x89PNG")
