"""Bench 9: a map of 200 heatmaps (one request, chunks released as workers free up) against the same 200
heatmaps submitted as 200 jobs, on the same local stack (2 workers), wall time side by side.

Each side's wall time runs from its first request to its last job's recorded end (`finished_at`); every
job must have succeeded and written its PNG. The map runs with max_parallel at 200, so the only
difference is how the jobs are submitted and released: 200 requests from 4 client threads, or one request
whose chunks are written blocked and released by each chunk's end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import (
    HEATMAP_FLAGS,
    BenchResult,
    Figure,
    api_client,
    dev_stack,
    median,
    run_bench,
    upload,
    wait_terminal,
)

ITEMS = 200
CLIENT_THREADS = 4


def main(args: argparse.Namespace) -> BenchResult:
    count = 40 if args.quick else ITEMS
    runs = 1  # 200 heatmaps a side take minutes here; one run each, taking turns after a warm-up
    result = BenchResult("maps", f"9. A map of {count} heatmaps vs {count} jobs (2 workers)")
    maps: list[dict[str, float]] = []
    jobs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-maps-") as tmp_name, dev_stack(workers=2) as dev:
        tmp = Path(tmp_name)
        with api_client(dev) as api:
            refs = []
            for i in range(count):
                path = tmp / f"frame{i:03d}.npy"
                np.save(path, np.random.default_rng(i).random((12, 24)))
                refs.append(f"asset://{upload(api, path, 'application/x-npy')}")
            _jobs_run(api, refs[:4])  # warm both workers and the API sandboxes
            for _ in range(runs):
                maps.append(_map_run(api, refs))
                jobs.append(_jobs_run(api, refs))
    ours = median([r["wall_s"] for r in maps])
    result.figures += [
        Figure(
            f"map of {count} heatmaps, wall time",
            ours,
            "s",
            peer_label=f"{count} jobs submitted one by one, wall time",
            peer_value=median([r["wall_s"] for r in jobs]),
        ),
        Figure(
            "map: time to accept the request",
            median([r["accept_s"] for r in maps]),
            "s",
            peer_label=f"jobs: time to accept all {count}",
            peer_value=median([r["accept_s"] for r in jobs]),
        ),
    ]
    result.details = {"runs": runs, "items": count, "map": maps, "jobs": jobs}
    result.notes.append(
        f"Every chunk and job of every run succeeded with its PNG. The map is one request that checks and "
        f"writes {count} chunk jobs (BatchWriteItem, 25 a call) and releases them; each chunk's end "
        "releases the next (one conditional write on the map record), so its wall time counts that too."
    )
    return result


def _finished(job: dict[str, Any]) -> float:
    return datetime.fromisoformat(job["finished_at"]).timestamp()


def _check(job: dict[str, Any]) -> None:
    if job["status"] != "succeeded" or [o["name"] for o in job["outputs"]] != ["frame.png"]:
        raise RuntimeError(f"job {job['job_id']} ended {job['status']}: {job.get('error')}")


def _map_run(api: httpx.Client, refs: list[str]) -> dict[str, float]:
    body = {
        "stage": "visualize",
        "command": "heatmap",
        "args": {"output": "frame.png", **HEATMAP_FLAGS},
        "over": "input",
        "items": refs,
        "max_parallel": len(refs),
    }
    started_wall = time.time()
    started = time.perf_counter()
    answer = api.post("/v1/maps", json=body, timeout=120)
    if answer.status_code != 201:
        raise RuntimeError(f"map submit answered {answer.status_code}: {answer.text[:300]}")
    accept_s = time.perf_counter() - started
    map_id = answer.json()["map_id"]
    deadline = time.monotonic() + 900
    while api.get(f"/v1/maps/{map_id}").json()["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"map {map_id} had not ended after 900 s")
        time.sleep(1.0)
    chunks: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/v1/maps/{map_id}/chunks", params=params).json()
        chunks.extend(c["job"] for c in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    for job in chunks:
        _check(job)
    return {"accept_s": accept_s, "wall_s": max(_finished(j) for j in chunks) - started_wall}


def _jobs_run(api: httpx.Client, refs: list[str]) -> dict[str, float]:
    def submit(ref: str) -> str:
        body = {"stage": "visualize", "command": "heatmap", "args": {"input": ref, "output": "frame.png"}}
        body["args"].update(HEATMAP_FLAGS)
        answer = api.post("/v1/jobs", json=body)
        if answer.status_code != 202:
            raise RuntimeError(f"submit answered {answer.status_code}: {answer.text[:300]}")
        job_id: str = answer.json()["job_id"]
        return job_id

    started_wall = time.time()
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        ids = list(pool.map(submit, refs))
    accept_s = time.perf_counter() - started
    done = wait_terminal(api, ids, timeout=900, every_s=1.0)
    for job in done.values():
        _check(job)
    return {"accept_s": accept_s, "wall_s": max(_finished(j) for j in done.values()) - started_wall}


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
