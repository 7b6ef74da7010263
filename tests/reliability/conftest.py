"""The reliability suite's fixtures: one local stack with short timeouts, and a loopback origin server.

The stack is `jobgate dev` as a user starts it, with the per-tenant limits off (the load test's
bursts would be refused with 429 otherwise) and loopback allowed for commands, so that zyra's
`acquire api` can fetch from the origin server below: a command whose behaviour each test picks by
its URL (answers at once, slowly, never, with a 404, or half an answer then nothing).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import numpy as np
import pytest
from boto3.dynamodb.types import TypeDeserializer
from jobgate_local.testing import DevProcess, launch_dev

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY_API_KEY = "reliability-test-key-0123456789abcdef"
# A dead worker's job is handed on by the sweeper once its lease has run out and lost_after_s more have
# passed; here in seconds rather than AWS's minutes (a 10 s lease, 5 s more, the sweeper every 5 s), so
# the take-over tests wait about 20 s. SQS's own redelivery (after the visibility timeout) is the slower
# path: Lambda refuses an SQS event source whose queue's visibility timeout is below the function's
# timeout (as the local stack does), so it is the worker's timeout, 60 s.
LEASE_S = 10
LOST_AFTER_S = 5
SWEEP_EVERY_S = 5
VISIBILITY_TIMEOUT_S = 60
WORKER_TIMEOUT_S = 60  # jobs may then ask for timeout_s up to 30 s on Lambda; longer ones run as tasks
TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
PARTIAL_CHUNK = 9000  # past stdio's 8 KiB buffer, so zyra's output file gets it at once


@pytest.fixture(scope="session")
def reliability_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    args = [
        "--workers",
        "2",
        "--worker-timeout",
        str(WORKER_TIMEOUT_S),
        "--queue-visibility-timeout",
        str(VISIBILITY_TIMEOUT_S),
        "--env",
        f"JOBGATE_LEASE_S={LEASE_S}",
        "--env",
        f"JOBGATE_LOST_AFTER_S={LOST_AFTER_S}",
        "--schedules-every",
        str(SWEEP_EVERY_S),
    ]
    for param in ("RateLimitPerSecond=0", "MaxActiveJobsPerTenant=0", "EgressAllowList=127.0.0.0/8"):
        args += ["--param", param]
    dev = launch_dev(
        template=ROOT / "template.yaml",
        workdir=tmp_path_factory.mktemp("jobgate-reliability"),
        args=args,
        env={**os.environ, "JOBGATE_DEV_API_KEY": RELIABILITY_API_KEY},
        timeout=180,
    )
    yield dev
    assert dev.stop() == 0, dev.log()[-5000:]


@pytest.fixture(scope="session")
def api(reliability_stack: DevProcess) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    with httpx.Client(
        base_url=reliability_stack.http_url,
        headers={"X-API-Key": reliability_stack.api_key},
        timeout=60,
        limits=limits,
    ) as client:
        yield client


@dataclass
class Origin:
    """A loopback HTTP server for zyra's `acquire api`; counts the requests each path got."""

    url: str
    hits: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, path: str) -> None:
        with self.lock:
            self.hits[path] += 1

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]


def _origin_handler(origin: Origin) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            origin.hit(parts.path)
            kind = parts.path.strip("/").split("/", 1)[0]
            delay = float(parse_qs(parts.query).get("s", ["0"])[0])
            if kind == "hang":
                origin.stop.wait(300)
                return
            if kind == "missing":
                self._answer(404, b"no such thing\n")
            elif kind == "partial":
                self._partial()
            else:  # ok, slow
                origin.stop.wait(delay)
                self._answer(200, f"payload of {parts.path}\n".encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _partial(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(2):
                chunk = bytes([65 + i]) * PARTIAL_CHUNK
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            origin.stop.wait(300)  # and then nothing: the command waits until it is killed

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _origin_handler(Origin("")))
    origin = Origin(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _origin_handler(origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield origin
    origin.stop.set()
    server.shutdown()
    server.server_close()


def fetch(
    origin: Origin, path: str, *, output: str | None = None, timeout_s: int | None = None
) -> dict[str, Any]:
    """A job running zyra's `acquire api` on one of the origin's paths.

    `--stream` always: zyra's buffered path refuses plain http (it wants HTTPS), its streaming path
    copies the answer to the output as it arrives.
    """
    args: dict[str, Any] = {"url": f"{origin.url}{path}", "stream": True}
    if output is not None:
        args["output"] = output
    body: dict[str, Any] = {"stage": "acquire", "command": "api", "args": args}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return body


@pytest.fixture(scope="session")
def heatmap_asset(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small field uploaded as a client does (presigned POST straight to S3), AVAILABLE."""
    path = tmp_path_factory.mktemp("inputs") / "field.npy"
    y, x = np.mgrid[0:24, 0:48]
    np.save(path, np.sin(x / 6.0) * np.cos(y / 5.0))
    data = path.read_bytes()
    answer = api.post(
        "/v1/uploads", json={"filename": path.name, "media_type": "application/x-npy", "size": len(data)}
    )
    assert answer.status_code == 201, answer.text
    ticket = answer.json()
    target = ticket["upload"]
    sent = httpx.post(
        target["url"], data=target["fields"], files={"file": (path.name, data, "application/x-npy")}
    )
    assert sent.status_code in (200, 204), sent.text
    asset_id: str = ticket["asset_id"]
    wait_for(lambda: api.get(f"/v1/assets/{asset_id}").json()["status"] == "AVAILABLE", timeout=60)
    return asset_id


def heatmap(asset_id: str) -> dict[str, Any]:
    return {
        "stage": "visualize",
        "command": "heatmap",
        "args": {
            "input": f"asset://{asset_id}",
            "output": "map.png",
            "no_coastline": True,
            "no_borders": True,
            "no_gridlines": True,
        },
    }


def wait_for(condition: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll until ``condition()`` is truthy; answer it. Fails the test when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout:.0f} s")
        time.sleep(every)


def wait_terminal(api: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in TERMINAL else None

    result: dict[str, Any] = wait_for(ended, timeout)
    return result


def job_child_pid(job_id: str) -> int | None:
    """The forked child running a job: the process whose working folder is the job's work folder."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if Path(cwd).name.startswith(f"{job_id}-"):
            return int(entry.name)
    return None


def parent_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise LookupError(pid)


def jobs_by_status(api: httpx.Client) -> dict[str, list[str]]:
    """Each status's list of this tenant's jobs, every page: what a client listing them would see."""
    listed: dict[str, list[str]] = {}
    for status in ("queued", "running", *sorted(TERMINAL)):
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/v1/jobs", params=params)
            assert page.status_code == 200, page.text
            ids += [job["job_id"] for job in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if not cursor:
                break
        listed[status] = ids
    return listed


def job_events(stack: DevProcess, job_id: str) -> list[dict[str, Any]]:
    """The job's event log as stored (what a WebSocket subscriber replays), in order."""
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    query: dict[str, Any] = {
        "TableName": stack.resources["JobsTable"],
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :evt)",
        "ExpressionAttributeValues": {":pk": {"S": f"JOB#{job_id}"}, ":evt": {"S": "EVT#"}},
        "ConsistentRead": True,
    }
    events: list[dict[str, Any]] = []
    while True:
        page = ddb.query(**query)
        for item in page["Items"]:
            # Events written together are one item (a page keyed by its last event's number); records
            # written before pages hold one event each.
            stored = item["events"] if "events" in item else {"L": [item["event"]]}
            for event in TypeDeserializer().deserialize(stored):
                events.append({"sk": item["sk"]["S"], **event})
        if "LastEvaluatedKey" not in page:
            return events
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def status_events(stack: DevProcess, job_id: str) -> list[str]:
    """The statuses the job's event stream announced."""
    return [str(e["status"]) for e in job_events(stack, job_id) if e.get("type") == "status"]
