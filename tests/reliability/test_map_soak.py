"""A map of many chunks completes on the local stack: every chunk once, the merge whole, every list paged.

`make soak` runs 1,000 chunks (JOBGATE_MAP_SOAK_CHUNKS); `make test` skips it (it takes minutes).
Its figures go to JOBGATE_MAP_SOAK_REPORT when set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import wait_for

CHUNKS = int(os.environ.get("JOBGATE_MAP_SOAK_CHUNKS", "0"))
ROWS = 20
SCHEMA = {"fields": [{"name": "id", "type": "int", "unique": True, "min": 0, "max": 10**9}]}

pytestmark = [
    pytest.mark.skipif(CHUNKS <= 0, reason="set JOBGATE_MAP_SOAK_CHUNKS (make soak: 1,000)"),
    pytest.mark.timeout(max(600, CHUNKS * 4)),
]


def _upload_schema(api: httpx.Client) -> str:
    body = json.dumps(SCHEMA).encode()
    meta = {"filename": "schema.json", "media_type": "application/json", "size": len(body)}
    answer = api.post("/v1/uploads", json=meta)
    assert answer.status_code == 201, answer.text
    ticket = answer.json()
    target = ticket["upload"]
    files = {"file": ("schema.json", body, "application/json")}
    sent = httpx.post(target["url"], data=target["fields"], files=files, timeout=60)
    assert sent.status_code in (200, 204), sent.text
    asset_id: str = ticket["asset_id"]
    wait_for(lambda: api.get(f"/v1/assets/{asset_id}").json()["status"] == "AVAILABLE", timeout=60)
    return f"asset://{asset_id}"


def test_a_map_of_many_chunks_completes_with_every_list_paged(api: httpx.Client) -> None:
    started = time.monotonic()
    body = {
        "stage": "synth",
        "command": "generate",
        "args": {"schema": _upload_schema(api), "rows": ROWS, "seed": 3, "output": "part.csv"},
        "over": "chunk",
        "items": {"range": [0, CHUNKS]},
        "max_parallel": 50,
        "merge": {"concat": "csv"},
    }
    created = api.post("/v1/maps", json=body, timeout=120)
    submitted_s = time.monotonic() - started
    assert created.status_code == 201, created.text
    map_id = created.json()["map_id"]

    deadline = time.monotonic() + max(600, CHUNKS * 3)
    refused: list[str] = []  # answers other than 200 while polling (a 503 is for the client to retry)
    while True:
        answer = api.get(f"/v1/maps/{map_id}")
        if answer.status_code != 200:
            refused.append(f"{answer.status_code} {answer.text[:300]}")
            print(f"map soak: GET answered {refused[-1]}", flush=True)  # noqa: T201
            assert answer.status_code == 503 and len(refused) < max(20, CHUNKS // 20), refused
            time.sleep(15)  # each read of the map reads every chunk's state: not too often
            continue
        view = answer.json()
        merge = view.get("merge") or {}
        if view["status"] in ("succeeded", "failed", "cancelled") and merge.get("status") in (
            "succeeded",
            "failed",
            "cancelled",
            None,
        ):
            if view["status"] != "succeeded" or merge.get("status") == "succeeded":
                break
        assert time.monotonic() < deadline, view
        print(f"map soak: {time.monotonic() - started:.0f} s, {view['counts']}", flush=True)  # noqa: T201
        time.sleep(15)  # each read of the map reads every chunk's state: not too often
    done_s = time.monotonic() - started
    assert view["status"] == "succeeded" and view["counts"]["succeeded"] == CHUNKS, view["counts"]
    assert merge["status"] == "succeeded", merge

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/v1/maps/{map_id}/chunks", params=params).json()
        pages += 1
        seen.extend(c["chunk"] for c in page["items"] if c["job"]["status"] == "succeeded")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(CHUNKS)) and pages == -(-CHUNKS // 100)
    failed = api.get(f"/v1/maps/{map_id}/chunks", params={"status": "failed"}).json()
    assert failed["items"] == []

    download = api.get(f"/v1/maps/{map_id}/download")
    assert download.status_code == 307, download.text
    text = httpx.get(download.headers["location"], timeout=120).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id"] and len(rows) == CHUNKS * ROWS + 1
    assert len({r[0] for r in rows[1:]}) == CHUNKS * ROWS

    report = os.environ.get("JOBGATE_MAP_SOAK_REPORT")
    if report:
        figures = {"chunks": CHUNKS, "rows": CHUNKS * ROWS, "submit_s": round(submitted_s, 2)}
        figures.update(done_s=round(done_s, 1), chunk_pages=pages, refused_polls=refused)
        Path(report).write_text(json.dumps(figures, indent=2) + "\n")
