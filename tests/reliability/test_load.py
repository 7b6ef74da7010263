"""Load: 20 concurrent clients submit a mix of jobs over real HTTP; every accepted job ends exactly once,
in the state that matches what its command did.

CI runs ~60 jobs; `make soak` runs 500 (JOBGATE_RELIABILITY_JOBS).
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from jobgate_local.testing import DevProcess

from tests.reliability.conftest import (
    TERMINAL,
    Origin,
    fetch,
    heatmap,
    jobs_by_status,
    status_events,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.zyra, pytest.mark.timeout(1800)]

JOBS = int(os.environ.get("JOBGATE_RELIABILITY_JOBS", "60"))
CLIENTS = 20
# What each job does, by its index modulo 10: what a user would submit in a busy hour.
KINDS = ["map", "map", "map", "map", "fetch", "fail", "fail", "timeout", "cancel", "cancel"]
EXPECTED = {
    "map": "succeeded",
    "fetch": "succeeded",
    "fail": "failed",
    "timeout": "timed_out",
    "cancel": "cancelled",
}


@dataclass
class Submitted:
    kind: str
    path: str | None
    job_id: str | None = None
    answers: list[int] = field(default_factory=list)  # every HTTP status this client got for it


def _request(kind: str, asset_id: str, origin: Origin) -> tuple[dict[str, Any], str | None]:
    token = uuid.uuid4().hex
    if kind == "map":
        return heatmap(asset_id), None
    if kind == "fetch":
        return fetch(origin, f"/ok/{token}", output="page.txt"), f"/ok/{token}"
    if kind == "fail":
        return fetch(origin, f"/missing/{token}"), f"/missing/{token}"
    if kind == "timeout":
        return fetch(origin, f"/hang/{token}", timeout_s=2), f"/hang/{token}"
    return fetch(origin, f"/hang/{token}", timeout_s=30), f"/hang/{token}"


def _client(index: int, api: httpx.Client, asset_id: str, origin: Origin) -> Submitted:
    kind = KINDS[index % len(KINDS)]
    body, path = _request(kind, asset_id, origin)
    submitted = Submitted(kind, path)
    answer = api.post("/v1/jobs", json=body)
    submitted.answers.append(answer.status_code)
    if answer.status_code == 202:
        submitted.job_id = answer.json()["job_id"]
    if kind == "cancel" and submitted.job_id is not None:
        time.sleep((index % 3) * 0.5)  # some are cancelled while queued, some while running
        cancelled = api.delete(f"/v1/jobs/{submitted.job_id}")
        submitted.answers.append(cancelled.status_code)
    return submitted


def test_concurrent_clients_every_job_ends_once_as_it_should(
    api: httpx.Client, reliability_stack: DevProcess, origin: Origin, heatmap_asset: str
) -> None:
    with ThreadPoolExecutor(CLIENTS) as pool:
        submitted = list(pool.map(lambda i: _client(i, api, heatmap_asset, origin), range(JOBS)))

    answers = [code for s in submitted for code in s.answers]
    assert not [code for code in answers if code >= 500], f"server errors: {answers}"
    assert all(s.job_id is not None for s in submitted), [s.answers for s in submitted if s.job_id is None]
    ids = {s.job_id: s for s in submitted if s.job_id is not None}

    def all_ended() -> bool:
        listed = jobs_by_status(api)
        return not ({*listed["queued"], *listed["running"]} & set(ids))

    wait_for(all_ended, timeout=60 + JOBS * 2.0, every=1.0)

    listed = jobs_by_status(api)
    wrong: list[str] = []
    for job_id, sub in ids.items():
        job = api.get(f"/v1/jobs/{job_id}").json()
        lists = [status for status, members in listed.items() if job_id in members]
        statuses = status_events(reliability_stack, job_id)
        ran = origin.count(sub.path) if sub.path else None
        problems = _check(sub, job, lists, statuses, ran)
        wrong += [f"{sub.kind} {job_id}: {p}" for p in problems]
    assert not wrong, "\n".join(wrong[:30])


def _check(
    sub: Submitted, job: dict[str, Any], lists: list[str], statuses: list[str], ran: int | None
) -> list[str]:
    """What is wrong with one job, as a client sees it; nothing when all is right."""
    problems = []
    expected = EXPECTED[sub.kind]
    if job["status"] != expected:
        problems.append(f"status {job['status']} (error {job['error']}), expected {expected}")
    if lists != [job["status"]]:
        problems.append(f"listed under {lists}, expected exactly [{job['status']}]")
    terminal_events = [s for s in statuses if s in TERMINAL]
    if terminal_events != [job["status"]]:
        problems.append(f"announced terminal statuses {terminal_events}")
    if job["attempts"] > 1 or (ran is not None and ran > 1):
        problems.append(f"ran more than once: attempts {job['attempts']}, origin fetched {ran} times")
    if sub.kind == "map" and [o["name"] for o in job["outputs"]] != ["map.png"]:
        problems.append(f"outputs {job['outputs']}")
    if sub.kind == "fetch" and [o["name"] for o in job["outputs"]] != ["page.txt"]:
        problems.append(f"outputs {job['outputs']}")
    if sub.kind == "fail" and (job["exit_code"] in (0, None) or (job["error"] or {}).get("type") != "exit"):
        problems.append(f"exit {job['exit_code']}, error {job['error']}")
    if sub.kind == "timeout" and (job["error"] or {}).get("type") != "timeout":
        problems.append(f"error {job['error']}")
    if sub.kind == "cancel" and sub.answers[-1] not in (200, 202):
        problems.append(f"cancel answered {sub.answers[-1]}")
    return problems
