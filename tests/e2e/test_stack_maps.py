"""Maps on the local stack over real HTTP: the CLI and the SDK as a user drives them."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from jobgate.client import Client
from jobgate_local.testing import DevProcess

from tests.e2e.test_cli import jobgate

SCHEMA = {
    "fields": [
        {"name": "id", "type": "int", "unique": True, "min": 1, "max": 100_000_000},
        {"name": "who", "type": "name"},
        {"name": "signup", "type": "date", "min": "2020-01-01", "max": "2025-12-31"},
        {"name": "score", "type": "float", "min": 0, "max": 100, "nullable": True},
    ]
}
FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}


def test_jobgate_map_synth_over_a_range_merges_10000_rows_with_one_header(
    local_stack: DevProcess, tmp_path: Path
) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    done = jobgate(
        local_stack,
        tmp_path,
        "map",
        "synth",
        "generate",
        "--over",
        "chunk",
        "--range",
        "0",
        "8",
        "--merge-concat",
        "csv",
        "--max-parallel",
        "4",
        "--wait",
        "--json",
        "--schema",
        "schema.json",
        "--rows",
        "1250",
        "--seed",
        "42",
        "--output",
        "part.csv",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["status"] == "succeeded" and found["counts"]["succeeded"] == 8
    assert found["merge"]["status"] == "succeeded"

    got = jobgate(local_stack, tmp_path, "maps", "download", found["map_id"], "--out", "out")
    assert got.returncode == 0, got.stderr
    merged = tmp_path / got.stdout.strip()
    assert merged == tmp_path / "out" / "merged.csv"
    with merged.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "who", "signup", "score"]
    assert len(rows) == 10_001 and sum(r == rows[0] for r in rows) == 1
    assert len({r[0] for r in rows[1:]}) == 10_000

    status = jobgate(local_stack, tmp_path, "maps", "status", found["map_id"])
    assert status.returncode == 0 and "succeeded 8" in status.stdout, status.stdout


def test_pause_resume_and_a_chunk_retry_through_the_sdk(local_stack: DevProcess, tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    with Client(local_stack.http_url, local_stack.api_key) as jg:
        schema = jg.upload(tmp_path / "schema.json").ref
        args = {"schema": schema, "rows": 20, "seed": 1, "output": "part.jsonl"}
        started = jg.submit_map("synth", "generate", args, over="chunk", range_=(0, 3), max_parallel=1)
        paused = jg.pause_map(started.map_id)
        assert paused.status == "paused"
        deadline = time.monotonic() + 60
        while jg.get_map(started.map_id).counts.succeeded < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # time enough for a release that should not happen
        held = jg.get_map(started.map_id)
        assert (held.status, held.counts.succeeded, held.counts.waiting) == ("paused", 1, 2)

        jg.resume_map(started.map_id)
        ended = jg.wait_map(started.map_id, timeout=120, poll_interval=0.2)
        assert ended.status == "succeeded" and ended.counts.succeeded == 3

        first = next(c for c in jg.map_chunks(started.map_id) if c.chunk == 1).job
        retry = jg.retry_chunk(started.map_id, 1)
        assert retry.job_id != first.job_id
        assert jg.wait(retry.job_id, timeout=120).status == "succeeded"
        chunks = list(jg.map_chunks(started.map_id))
        assert [c.chunk for c in chunks] == [0, 1, 2] and chunks[1].job.job_id == retry.job_id


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="compose-video needs ffmpeg")
def test_heatmaps_over_frame_assets_merged_by_compose_video_into_an_mp4(
    local_stack: DevProcess, tmp_path: Path
) -> None:
    frames = []
    for i in range(4):
        path = tmp_path / f"f{i}.npy"
        np.save(path, np.random.default_rng(i).random((12, 24)))
        frames.append(path)
    with Client(local_stack.http_url, local_stack.api_key) as jg:
        refs = [jg.upload(path).ref for path in frames]
        video = {"frames": "chunks", "output": "video.mp4", "fps": 2, "glob": "*.png"}
        started = jg.submit_map(
            "visualize",
            "heatmap",
            {"output": "frame.png", **FLAGS},
            over="input",
            items=refs,
            max_parallel=2,
            merge={"stage": "visualize", "command": "compose-video", "args": video},
        )
        ended = jg.wait_map(started.map_id, timeout=300, poll_interval=0.5)
        assert ended.status == "succeeded" and ended.counts.succeeded == 4
        assert ended.merge is not None and ended.merge.status == "succeeded", ended.merge
        out = jg.download_map(started.map_id, tmp_path / "video.mp4")
    data = out.read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 1000


def test_jobgate_map_uploads_local_files_given_as_items_of_an_input(
    local_stack: DevProcess, tmp_path: Path
) -> None:
    for i in range(2):
        np.save(tmp_path / f"f{i}.npy", np.random.default_rng(i).random((12, 24)))
    done = jobgate(
        local_stack,
        tmp_path,
        "map",
        "visualize",
        "heatmap",
        "--over",
        "input",
        "--items",
        "f0.npy",
        "f1.npy",
        "--output",
        "frame.png",
        "--no-coastline",
        "--no-borders",
        "--no-gridlines",
        "--wait",
        "--json",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["status"] == "succeeded" and found["counts"]["succeeded"] == 2
    refused = jobgate(
        local_stack, tmp_path, "map", "visualize", "heatmap", "--over", "input", "--output", "x.png"
    )
    assert refused.returncode == 2 and "--items or --range" in refused.stderr
