"""Pipelines: steps feed each other as jobs; a step runs when its inputs exist, or is cancelled."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from tests.integration.conftest import Client
from tests.support.lambdas import load_handler

pytestmark = pytest.mark.zyra

FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}
DAYS = ["20261101", "20261102", "20261104"]  # 20261103 is missing: pad-missing fills it


def frames_assets(make_asset: Callable[..., str], tmp_path: Path) -> list[str]:
    ids = []
    for i, _ in enumerate(DAYS):
        path = tmp_path / f"f{i}.npy"
        np.save(path, np.random.default_rng(i).random((12, 24)))
        ids.append(make_asset(path, "application/x-npy"))
    return ids


def chain(assets: list[str]) -> dict[str, Any]:
    return {
        "steps": [
            {
                "name": "render",
                "stage": "visualize",
                "command": "heatmap",
                "args": {
                    "inputs": [f"asset://{a}" for a in assets],
                    "output_dir": "frames",
                    "output_names": [f"frame_{d}.png" for d in DAYS],
                    **FLAGS,
                },
            },
            {
                "name": "scan",
                "stage": "process",
                "command": "scan-frames",
                "args": {
                    "frames_dir": "step://render/frames",
                    "datetime_format": "%Y%m%d",
                    "period_seconds": "86400",
                    "output": "meta.json",
                },
            },
            {
                "name": "pad",
                "stage": "process",
                "command": "pad-missing",
                "args": {
                    "frames_meta": "step://scan/meta.json",
                    "output_dir": "filled",
                    "fill_mode": "blank",
                },
                # meta.json names the frames where scan saw them: stage them at the same place.
                "files": ["step://render/frames"],
            },
            {
                "name": "video",
                "stage": "visualize",
                "command": "compose-video",
                "args": {
                    "frames": "step://render/frames",
                    "output": "video.mp4",
                    "fps": "2",
                    "glob": "*.png",
                },
                "after": ["pad"],
            },
        ]
    }


def drain(client: Client, rounds: int = 10) -> None:
    """Run the worker until the queue is empty: each finished step queues the next."""
    for _ in range(rounds):
        if client.run_worker() == 0:
            return


def steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s["job"] for s in view["steps"]}


def test_a_video_step_on_a_worker_without_ffmpeg_fails_instead_of_succeeding_empty(
    client: Client, make_asset: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zyra's compose-video prints "ffmpeg/ffprobe not available; skipping" and exits 0 when it finds no
    # ffmpeg: the job must not end `succeeded` with nothing to show.
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # the command finds no program at all
    client.worker = load_handler("worker")  # a cold start whose commands see that PATH
    created = client.call("POST", "/v1/pipelines", body=chain(frames_assets(make_asset, tmp_path)))
    assert created.status == 201, created.body
    drain(client)
    jobs = steps(client.call("GET", f"/v1/pipelines/{created.json()['pipeline_id']}").json())
    assert {n: jobs[n]["status"] for n in ("render", "scan", "pad")} == dict.fromkeys(
        ("render", "scan", "pad"), "succeeded"
    )
    video = jobs["video"]
    assert video["status"] == "failed" and video["exit_code"] == 0, video
    assert video["error"]["type"] == "missing_output"
    assert "'video.mp4' (--output)" in video["error"]["message"]
    assert "skipping video composition" in video["stderr"]
    assert video["outputs"] == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="compose-video needs ffmpeg")
def test_four_zyra_steps_run_in_order_and_the_video_comes_out(
    client: Client, make_asset: Callable[..., str], tmp_path: Path
) -> None:
    created = client.call("POST", "/v1/pipelines", body=chain(frames_assets(make_asset, tmp_path)))
    assert created.status == 201, created.body
    view = created.json()
    by_name = steps(view)
    assert by_name["render"]["status"] == "queued"
    assert {by_name[n]["status"] for n in ("scan", "pad", "video")} == {"blocked"}
    assert [s["after"] for s in view["steps"]] == [[], ["render"], ["render", "scan"], ["pad", "render"]]

    drain(client)
    done = client.call("GET", f"/v1/pipelines/{view['pipeline_id']}").json()
    jobs = steps(done)
    assert done["status"] == "succeeded", {n: (j["status"], j["stderr"][-300:]) for n, j in jobs.items()}
    assert done["progress"] == 1.0
    assert [o["name"] for o in jobs["pad"]["outputs"]] == ["filled/frame_20261103.png"]
    video = jobs["video"]["outputs"]
    assert [o["name"] for o in video] == ["video.mp4"] and video[0]["media_type"] == "video/mp4"
    key = f"results/default/{jobs['video']['job_id']}/a1/video.mp4"
    data = boto3.client("s3").get_object(Bucket=client.resources.bucket_name, Key=key)["Body"].read()
    assert data[4:8] == b"ftyp"
    # Staged inputs are not outputs: the video step's only output is its video.
    assert jobs["scan"]["outputs"] == [
        {
            "name": "meta.json",
            "size": jobs["scan"]["outputs"][0]["size"],
            "media_type": "application/json",
            "sha256": jobs["scan"]["outputs"][0]["sha256"],
        }
    ]


def test_failed_middle_step_cancels_what_depends_on_it(
    client: Client, make_asset: Callable[..., str], tmp_path: Path
) -> None:
    body = chain(frames_assets(make_asset, tmp_path))
    # A single frame where scan-frames wants a folder: zyra itself fails.
    body["steps"][1]["args"]["frames_dir"] = "step://render/frames/frame_20261101.png"
    view = client.call("POST", "/v1/pipelines", body=body).json()
    drain(client)
    done = client.call("GET", f"/v1/pipelines/{view['pipeline_id']}").json()
    jobs = steps(done)
    assert jobs["render"]["status"] == "succeeded"
    assert jobs["scan"]["status"] == "failed" and jobs["scan"]["exit_code"] != 0
    assert jobs["pad"]["status"] == "cancelled"
    assert jobs["pad"]["error"]["message"] == "Step 'scan' it reads from ended failed; it cannot run."
    assert jobs["video"]["status"] == "cancelled"
    assert "Step 'pad'" in jobs["video"]["error"]["message"]
    assert jobs["video"]["attempts"] == 0
    assert done["status"] == "failed"


def test_zyra_pipeline_file_runs_as_steps(
    client: Client, make_asset: Callable[..., str], npy_file: Path
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    yaml_text = f"""
stages:
  - stage: visualize
    command: heatmap
    args:
      input: asset://{asset}
      output: map.png
      no-coastline: true
      no-borders: true
      no-gridlines: true
  - stage: export
    command: local
    args:
      input: map.png
      path: out/copy.png
"""
    created = client.call(
        "POST", "/v1/pipelines", body=yaml_text.encode(), headers={"Content-Type": "application/yaml"}
    )
    assert created.status == 201, created.body
    view = created.json()
    names = [s["name"] for s in view["steps"]]
    assert names == ["1-visualize-heatmap", "2-export-local"]
    assert view["steps"][1]["job"]["args"]["input"] == "step://1-visualize-heatmap/map.png"
    drain(client)
    done = client.call("GET", f"/v1/pipelines/{view['pipeline_id']}").json()
    assert done["status"] == "succeeded", done
    copy = steps(done)["2-export-local"]["outputs"]
    assert [o["name"] for o in copy] == ["out/copy.png"]


@pytest.mark.parametrize(
    ("mutate", "msg"),
    [
        (
            lambda b: b["steps"][1]["args"].update(frames_dir="step://nowhere/frames"),
            "no step named 'nowhere'",
        ),
        (
            lambda b: b["steps"][2]["args"].update(frames_meta="step://scan/other.json"),
            "does not write 'other.json'",
        ),
        (lambda b: b["steps"][0].update(after=["video"]), "cycle"),
        (lambda b: b["steps"][3].update(after=["ghost"]), "no step named 'ghost'"),
    ],
)
def test_pipeline_is_checked_whole_before_anything_queues(
    client: Client,
    make_asset: Callable[..., str],
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    msg: str,
) -> None:
    body = chain(frames_assets(make_asset, tmp_path))
    mutate(body)
    answer = client.call("POST", "/v1/pipelines", body=body)
    assert answer.status == 422, answer.body
    assert answer.headers["content-type"] == "application/problem+json"
    assert any(msg in e["msg"] for e in answer.json()["errors"]), answer.json()
    assert client.run_worker() == 0  # nothing was queued


def test_cancel_pipeline_cancels_what_has_not_ended(
    client: Client, make_asset: Callable[..., str], tmp_path: Path
) -> None:
    view = client.call("POST", "/v1/pipelines", body=chain(frames_assets(make_asset, tmp_path))).json()
    cancelled = client.call("DELETE", f"/v1/pipelines/{view['pipeline_id']}").json()
    assert {j["status"] for j in steps(cancelled).values()} == {"cancelled"}
    assert cancelled["status"] == "cancelled"
    drain(client)
    assert steps(client.call("GET", f"/v1/pipelines/{view['pipeline_id']}").json())["render"]["attempts"] == 0
    listed = client.call("GET", "/v1/pipelines").json()
    assert [p["pipeline_id"] for p in listed["items"]] == [view["pipeline_id"]]


def test_same_run_id_returns_the_same_pipeline(
    client: Client, make_asset: Callable[..., str], tmp_path: Path
) -> None:
    body = {**chain(frames_assets(make_asset, tmp_path)), "run_id": "nightly-frames"}
    first = client.call("POST", "/v1/pipelines", body=body)
    again = client.call("POST", "/v1/pipelines", body=body)
    assert (first.status, again.status) == (201, 200)
    assert again.json()["pipeline_id"] == first.json()["pipeline_id"]
    body["steps"][0]["args"]["output_dir"] = "other"
    assert client.call("POST", "/v1/pipelines", body=body).status in (409, 422)


def test_retry_makes_a_linked_job_and_refuses_unfinished_ones(client: Client) -> None:
    job = client.submit(
        {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "nowhere"}}
    ).json()
    assert client.call("POST", f"/v1/jobs/{job['job_id']}/retry").status == 409  # still queued
    client.run_worker()
    retry = client.call("POST", f"/v1/jobs/{job['job_id']}/retry")
    assert retry.status == 202
    assert retry.json()["retry_of"] == job["job_id"]
    assert client.call("GET", f"/v1/jobs/{job['job_id']}").json()["retried_by"] == retry.json()["job_id"]


def test_non_zero_exit_is_retried_only_when_asked(client: Client) -> None:
    body = {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "nowhere"}}
    plain = client.submit(body).json()["job_id"]
    asked = client.submit({**body, "max_attempts": 2, "retry_on_exit": True}).json()["job_id"]
    # The retry is sent with a short delay (2 s after the first attempt): keep the worker going.
    deadline = time.monotonic() + 15
    while (
        client.call("GET", f"/v1/jobs/{asked}").json()["status"] != "failed" and time.monotonic() < deadline
    ):
        client.run_worker()
        time.sleep(0.5)
    assert client.call("GET", f"/v1/jobs/{plain}").json()["attempts"] == 1
    retried = client.call("GET", f"/v1/jobs/{asked}").json()
    assert retried["status"] == "failed" and retried["attempts"] == 2
