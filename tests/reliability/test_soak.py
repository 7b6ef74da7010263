"""The soak: jobs from 20 clients while AWS misbehaves and workers die.

A fraction of the functions' AWS calls fail as AWS calls fail (throttled, a 500, the connection reset
before the call or dropped after it was applied, the answer held late, S3 bodies slowed), and worker
sandboxes are SIGKILLed in the middle of jobs. Every accepted job must end exactly once, in the state its
command calls for, and every output its record lists must be, byte for byte, the object in S3.

Clients behave as the SDK does: a submission carries a run_id and is sent again on a 5xx or a transport
error; reads and cancels are sent again too. `make test` runs a short soak (JOBGATE_SOAK_JOBS, 30 jobs)
under faults only: a killed worker's job waits minutes for its lease and the sweeper, and
test_faults_stack.py already kills workers. `make soak` runs 500 jobs and kills one worker in 25 jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobgate_local.testing import DevProcess, launch_dev

from tests.reliability.conftest import (
    RELIABILITY_API_KEY,
    ROOT,
    TERMINAL,
    Origin,
    fetch,
    heatmap,
    job_events,
    parent_pid,
    status_events,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.zyra, pytest.mark.timeout(3600)]

JOBS = int(os.environ.get("JOBGATE_SOAK_JOBS", "30"))
KILLS = JOBS // 25 if JOBS >= 100 else 0
CLIENTS = 20
FAULT_RATE = 0.05
# A held answer comes late (3 s) rather than never: a worker's 20 s read timeout waits it out, the API's
# 2 s one does not and retries. S3 bodies that are slowed move at 4 KiB/s: a map takes several seconds.
FAULT_ARGS = ["--faults", str(FAULT_RATE), "--faults-seed", "20261129", "--faults-stall", "3"]
FAULT_ARGS += ["--faults-slow-s3", "4096"]
KINDS = ["map", "map", "map", "map", "fetch", "fail", "fail", "timeout", "cancel", "cancel"]
EXPECTED = {"map": "succeeded", "fetch": "succeeded", "fail": "failed", "timeout": "timed_out"}
EXPECTED["cancel"] = "cancelled"
RETRIED = frozenset({429, 500, 502, 503, 504})


@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    args = ["--workers", "2", "--worker-timeout", "60", "--queue-visibility-timeout", "360", *FAULT_ARGS]
    for param in ("RateLimitPerSecond=0", "MaxActiveJobsPerTenant=0", "EgressAllowList=127.0.0.0/8"):
        args += ["--param", param]
    dev = launch_dev(
        template=ROOT / "template.yaml",
        workdir=tmp_path_factory.mktemp("jobgate-soak"),
        args=args,
        env={**os.environ, "JOBGATE_DEV_API_KEY": RELIABILITY_API_KEY},
        timeout=180,
    )
    yield dev
    assert dev.stop() == 0, dev.log()[-5000:]


class Api:
    """A client that sends again what a 5xx, a 429 or a transport error answered, as the SDK does."""

    def __init__(self, stack: DevProcess) -> None:
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
        headers = {"X-API-Key": stack.api_key}
        self.http = httpx.Client(base_url=stack.http_url, headers=headers, timeout=60, limits=limits)
        self.retried = Counter[str]()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer: httpx.Response | None = None
        for attempt in range(8):
            try:
                answer = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                self.retried[type(exc).__name__] += 1
                if attempt == 7:
                    raise
            else:
                if answer.status_code not in RETRIED:
                    return answer
                self.retried[str(answer.status_code)] += 1
            time.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))
        assert answer is not None
        return answer

    def listed(self) -> dict[str, list[str]]:
        """Each status's job ids, every page: what a client listing this tenant's jobs sees."""
        return {
            status: [job["job_id"] for job in self.every_page("/v1/jobs", status=status, limit=100)]
            for status in ("queued", "running", *sorted(TERMINAL))
        }

    def every_page(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.call("GET", path, params={**params, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if not cursor:
                return items


@dataclass
class Submitted:
    kind: str
    path: str | None
    run_id: str
    job_id: str | None = None
    answers: list[int] = field(default_factory=list)


@dataclass
class Killer:
    """SIGKILLs, now and then, the worker sandbox running some job: a crashed or OOM-killed Lambda."""

    stack: DevProcess
    budget: int
    every_s: float = 5.0  # at least this long between two kills
    killed: dict[str, int] = field(default_factory=dict)  # job id -> the sandbox pid killed
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        next_kill = 0.0
        while self.budget > len(self.killed) and not self.stop.wait(0.1):
            if time.monotonic() < next_kill:
                continue
            running = [(job_id, pid) for job_id, pid in _running_jobs() if job_id not in self.killed]
            if not running:
                continue
            job_id, child = random.choice(running)
            try:
                sandbox = parent_pid(parent_pid(child))  # the child's parent is the sandbox's zygote
                if parent_pid(sandbox) != self.stack.process.pid:
                    continue  # another stack's job, on a shared machine
                os.kill(sandbox, signal.SIGKILL)
            except (LookupError, OSError):
                continue  # it ended meanwhile
            self.killed[job_id] = sandbox
            next_kill = time.monotonic() + self.every_s


def _running_jobs() -> list[tuple[str, int]]:
    """(job id, pid) of every job child running now: a process whose cwd is a job's work folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        name = cwd.name
        if cwd.parent.name == "jobgate" and len(name) > 27 and name[26] == "-":
            found.append((name[:26], int(entry.name)))
    return found


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


def _client(index: int, api: Api, asset_id: str, origin: Origin) -> Submitted:
    kind = KINDS[index % len(KINDS)]
    body, path = _request(kind, asset_id, origin)
    submitted = Submitted(kind, path, run_id=f"soak-{uuid.uuid4().hex}")
    answer = api.call("POST", "/v1/jobs", json={**body, "run_id": submitted.run_id})
    submitted.answers.append(answer.status_code)
    if answer.status_code in (200, 202):
        submitted.job_id = answer.json()["job_id"]
    if kind == "cancel" and submitted.job_id is not None:
        time.sleep((index % 3) * 0.5)  # some are cancelled while queued, some while running
        cancelled = api.call("DELETE", f"/v1/jobs/{submitted.job_id}")
        submitted.answers.append(cancelled.status_code)
    return submitted


def _sha256_of(url: str) -> str:
    with httpx.stream("GET", url, timeout=60) as answer:
        answer.raise_for_status()
        digest = hashlib.sha256()
        for chunk in answer.iter_bytes():
            digest.update(chunk)
    return digest.hexdigest()


def test_soak_every_job_ends_once_as_it_should_and_every_output_is_what_s3_holds(
    soak_stack: DevProcess, origin: Origin, tmp_path: Path, report: Callable[[dict[str, Any]], None]
) -> None:
    api = Api(soak_stack)
    asset_id = _upload_field(api, tmp_path)
    killer = Killer(soak_stack, budget=KILLS)
    killing = threading.Thread(target=killer.run, daemon=True)
    started = time.monotonic()
    killing.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        submitted = list(pool.map(lambda i: _client(i, api, asset_id, origin), range(JOBS)))
    assert all(s.job_id is not None for s in submitted), [s.answers for s in submitted if s.job_id is None]
    ids = {s.job_id: s for s in submitted if s.job_id is not None}

    def all_ended() -> bool:
        listed = api.listed()
        return not ({*listed["queued"], *listed["running"]} & set(ids))

    wait_for(all_ended, timeout=300 + JOBS * 3.0, every=2.0)
    elapsed = time.monotonic() - started
    killer.stop.set()
    killing.join(10)

    listed = api.listed()
    wrong: list[str] = []
    attempts = Counter[int]()
    outputs_checked = 0
    for job_id, sub in ids.items():
        job = api.call("GET", f"/v1/jobs/{job_id}").json()
        attempts[job["attempts"]] += 1
        lists = [status for status, members in listed.items() if job_id in members]
        problems = _check(sub, job, lists, status_events(soak_stack, job_id))
        if problems:  # what the job's event log holds tells how it came to be wrong
            log = [
                {k: e.get(k) for k in ("sk", "type", "status", "seq", "exit_code") if e.get(k) is not None}
                for e in job_events(soak_stack, job_id)
                if e.get("type") != "log"
            ]
            problems.append(f"events {log}")
            problems.append(f"its functions logged {_story(soak_stack, job_id)}")
        for output in api.every_page(f"/v1/jobs/{job_id}/outputs"):
            outputs_checked += 1
            if _sha256_of(output["url"]) != output["sha256"]:
                problems.append(f"output {output['name']}: the object in S3 is not what the record says")
        wrong += [f"{sub.kind} {job_id} (killed: {job_id in killer.killed}): {p}" for p in problems]
    faults = soak_stack.faults()
    report(
        {
            "jobs": len(ids),
            "clients": CLIENTS,
            "fault_rate": FAULT_RATE,
            "faults_injected": faults.get("injected", {}),
            "workers_killed": len(killer.killed),
            "client_retries": dict(api.retried),
            "attempts": dict(sorted(attempts.items())),
            "outputs_checked": outputs_checked,
            "seconds": round(elapsed, 1),
            "wrong": len(wrong),
            "wrong_examples": wrong[:5],
            "kinds": dict(sorted(Counter(sub.kind for sub in ids.values()).items())),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": _commit(),
        }
    )
    assert sum(faults.get("injected", {}).values()) > 0, faults  # the soak did meet faults
    assert len(killer.killed) == KILLS, f"{len(killer.killed)} workers killed mid-job, not {KILLS}"
    assert not wrong, "\n".join(wrong[:30])


def _commit() -> str:
    import subprocess

    argv = ["git", "rev-parse", "--short", "HEAD"]
    found = subprocess.run(argv, capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


def _story(stack: DevProcess, job_id: str) -> list[str]:
    """What the functions logged about one job, in order: each line's message and its function."""
    story = []
    for line in stack.log().splitlines():
        if job_id not in line or "{" not in line:
            continue
        try:
            record = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        story.append(f"{record.get('function_name', '?')}: {record.get('message')}")
    return story[:60]


def _check(sub: Submitted, job: dict[str, Any], lists: list[str], statuses: list[str]) -> list[str]:
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
    names = {"map": ["map.png"], "fetch": ["page.txt"]}.get(sub.kind)
    if names is not None and [o["name"] for o in job["outputs"]] != names:
        problems.append(f"outputs {job['outputs']}")
    if sub.kind == "fail" and (job["exit_code"] in (0, None) or (job["error"] or {}).get("type") != "exit"):
        problems.append(f"exit {job['exit_code']}, error {job['error']}")
    if sub.kind == "timeout" and (job["error"] or {}).get("type") != "timeout":
        problems.append(f"error {job['error']}")
    if sub.kind == "cancel" and sub.answers[-1] not in (200, 202):
        problems.append(f"cancel answered {sub.answers[-1]}")
    return problems


def _upload_field(api: Api, tmp_path: Path) -> str:
    """A small field uploaded as a client does (presigned POST straight to S3), AVAILABLE."""
    import numpy as np

    path = tmp_path / "field.npy"
    y, x = np.mgrid[0:24, 0:48]
    np.save(path, np.sin(x / 6.0) * np.cos(y / 5.0))
    data = path.read_bytes()
    declared = {"filename": path.name, "media_type": "application/x-npy", "size": len(data)}
    ticket = api.call("POST", "/v1/uploads", json=declared)
    assert ticket.status_code == 201, ticket.text
    target = ticket.json()["upload"]
    sent = httpx.post(
        target["url"], data=target["fields"], files={"file": (path.name, data, "application/x-npy")}
    )
    assert sent.status_code in (200, 204), sent.text
    asset_id: str = ticket.json()["asset_id"]
    wait_for(lambda: api.call("GET", f"/v1/assets/{asset_id}").json()["status"] == "AVAILABLE", timeout=120)
    return asset_id


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    """Where the soak's figures go: a JSON file beside the log (JOBGATE_SOAK_REPORT), and the test log."""

    def write(figures: dict[str, Any]) -> None:
        text = json.dumps(figures, indent=2, sort_keys=True)
        target = os.environ.get("JOBGATE_SOAK_REPORT")
        if target:
            Path(target).write_text(text + "\n")
        request.node.add_report_section("call", "soak", text)

    return write
