"""Following a real zyra job over the local stack's WebSocket API, with real WebSocket clients.

One multi-frame heatmap job (a frame a few tenths of a second, each logged as ``INFO: <path>``) is
watched by several clients at once: one from the start, one that joins mid-job with ``after_seq``, and
two that leave mid-job (one closes, one just drops). What each saw is checked by the tests below.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import websockets
from jobgate_local.testing import DevProcess
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]

logger = logging.getLogger(__name__)

FRAMES = 24
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
AWS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


# -- what a client sees ---------------------------------------------------------------------------------


@dataclass
class Watcher:
    """Everything one WebSocket client received, with when it arrived."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [message for _, message in self.received]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] in ("log", "progress", "status")]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def finished(self) -> bool:
        return any(m.get("status") in TERMINAL for m in self.of("status"))

    async def take(self, ws: ClientConnection, count: int = 1) -> None:
        for _ in range(count):
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            except TimeoutError:
                seen = [(m["type"], m.get("seq")) for m in self.messages]
                raise AssertionError(f"nothing came for 60 s after {seen}") from None
            self.received.append((time.time(), message))

    async def follow(self, ws: ClientConnection) -> None:
        while not self.finished:
            await self.take(ws)


async def subscribe(url: str, job_id: str, after_seq: int | None = None) -> ClientConnection:
    ws = await websockets.connect(url)
    message: dict[str, Any] = {"action": "subscribe", "job_id": job_id}
    if after_seq is not None:
        message["after_seq"] = after_seq
    await ws.send(json.dumps(message))
    return ws


async def eventually(
    condition: Callable[[], Any], what: str, timeout: float = 30.0, *, blocking: bool = False
) -> None:
    """Wait for a condition; a ``blocking`` one (a table call) runs off the loop, which keeps receiving."""
    deadline = time.monotonic() + timeout
    while not (await asyncio.to_thread(condition) if blocking else condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# -- the stack: uploads, the table, keys -----------------------------------------------------------------


def call(api: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """An API call as a polite client makes it: waits out 429s as Retry-After says."""
    for _ in range(20):
        response = api.request(method, url, **kwargs)
        if response.status_code != 429:
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError(f"{method} {url} stayed rate limited")


def upload(api: httpx.Client, path: Path) -> str:
    data = path.read_bytes()
    answer = call(
        api,
        "POST",
        "/v1/uploads",
        json={"filename": path.name, "media_type": "application/x-npy", "size": len(data)},
    )
    assert answer.status_code == 201, answer.text
    target = answer.json()["upload"]
    sent = httpx.post(
        target["url"], data=target["fields"], files={"file": (path.name, data, "application/x-npy")}
    )
    assert sent.status_code in (200, 204), sent.text
    return str(answer.json()["asset_id"])


def table(dev: DevProcess) -> Any:
    return boto3.resource("dynamodb", endpoint_url=dev.aws_endpoint_url, **AWS).Table(
        dev.resources["JobsTable"]
    )


def subscriber_ids(dev: DevProcess, job_id: str) -> set[str]:
    items = table(dev).query(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :sub)",
        ExpressionAttributeValues={":pk": f"JOB#{job_id}", ":sub": "SUB#"},
        ConsistentRead=True,
    )["Items"]
    return {str(item["connection_id"]) for item in items}


def connection_known(dev: DevProcess, connection_id: str) -> bool:
    return "Item" in table(dev).get_item(
        Key={"pk": f"CONN#{connection_id}", "sk": "CONN"}, ConsistentRead=True
    )


# -- the watched job -------------------------------------------------------------------------------------


@dataclass
class Watched:
    job_id: str
    first: Watcher  # subscribed from the start
    late: Watcher  # joined mid-job with after_seq
    late_after_seq: int
    leavers: dict[str, str]  # "closed" / "dropped" -> its connection id
    left_while_running: bool  # the leavers' records were gone before the job ended
    job: dict[str, Any]
    frames_written: dict[str, float]  # frame path -> when the command wrote it (its mtime)


async def _watch(dev: DevProcess, api: httpx.Client, job_id: str) -> Watched:
    url = f"{dev.websocket_url}?api_key={dev.api_key}"
    first, late, closed, dropped = Watcher(), Watcher(), Watcher(), Watcher()
    frames: dict[str, float] = {}
    watching_frames = asyncio.create_task(_frame_times(job_id, frames))
    ws_first = await subscribe(url, job_id)
    following = asyncio.create_task(first.follow(ws_first))
    await eventually(lambda: subscriber_ids(dev, job_id), "the first subscription", blocking=True)
    known = await asyncio.to_thread(subscriber_ids, dev, job_id)

    # Mid-job: the command has written frames and has many more to write.
    await eventually(
        lambda: any(e["type"] == "progress" and e["progress"] > 0.2 for e in first.events), "a frame"
    )
    assert not first.finished, "the job ended before anyone could join it mid-job"
    leavers: dict[str, str] = {}
    sockets: dict[str, ClientConnection] = {}
    for name, watcher in (("closed", closed), ("dropped", dropped)):
        sockets[name] = await subscribe(url, job_id)
        await watcher.take(sockets[name], 2)  # the snapshot and what came next
        (leavers[name],) = await asyncio.to_thread(subscriber_ids, dev, job_id) - known
        known.add(leavers[name])
    late_after_seq = 1
    ws_late = await subscribe(url, job_id, after_seq=late_after_seq)
    following_late = asyncio.create_task(late.follow(ws_late))

    await sockets["closed"].close()
    sockets["dropped"].transport.abort()  # no close frame: the client is simply gone
    gone = set(leavers.values())
    await eventually(
        lambda: not any(connection_known(dev, c) for c in gone),
        "the leavers' connections to go",
        15,
        blocking=True,
    )
    await eventually(
        lambda: not subscriber_ids(dev, job_id) & gone, "the leavers' subscriptions to go", 15, blocking=True
    )
    left_while_running = not first.finished

    await asyncio.wait_for(asyncio.gather(following, following_late), 90)
    watching_frames.cancel()
    for ws in (ws_first, ws_late):
        await ws.close()
    job = call(api, "GET", f"/v1/jobs/{job_id}").json()
    return Watched(job_id, first, late, late_after_seq, leavers, left_while_running, job, frames)


async def _frame_times(job_id: str, frames: dict[str, float]) -> None:
    """When each frame was written, read from the worker's work folder (the local stack runs here)."""
    folder = Path(tempfile.gettempdir()) / "jobgate" / f"{job_id}-1"
    while True:
        for path in folder.glob("frames/*.png"):
            name = str(path.relative_to(folder))
            if name not in frames:
                try:
                    frames[name] = path.stat().st_mtime
                except FileNotFoundError:
                    pass
        await asyncio.sleep(0.005)


@pytest.fixture(scope="module")
def watched(local_stack: DevProcess, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Watched:
    folder = tmp_path_factory.mktemp("frames")
    y, x = np.mgrid[0:24, 0:48]
    assets = []
    for index in range(FRAMES):
        path = folder / f"f{index:02d}.npy"
        np.save(path, np.sin(x / 6.0 + index / 4) * np.cos(y / 5.0))
        assets.append(f"asset://{upload(api, path)}")
    args = {
        "inputs": assets,
        "output_dir": "frames",
        "width": 3072,  # large frames: a few tenths of a second each, so there is time to join mid-job
        "height": 1536,
        "no_coastline": True,
        "no_borders": True,
        "no_gridlines": True,
    }
    submitted = call(api, "POST", "/v1/jobs", json={"stage": "visualize", "command": "heatmap", "args": args})
    assert submitted.status_code == 202, submitted.text
    try:
        return asyncio.run(_watch(local_stack, api, submitted.json()["job_id"]))
    except Exception as exc:
        complaints = [line for line in local_stack.log().splitlines() if "WARNING" in line or "ERROR" in line]
        raise AssertionError(f"{exc}\nthe stack said:\n" + "\n".join(complaints[-20:])) from exc


# -- the tests -------------------------------------------------------------------------------------------


def test_a_subscriber_sees_the_snapshot_log_lines_rising_progress_and_the_final_status(
    watched: Watched,
) -> None:
    messages = watched.first.messages
    snapshot = messages[0]
    assert snapshot["type"] == "snapshot" and snapshot["job_id"] == watched.job_id
    assert snapshot["job"]["job_id"] == watched.job_id and snapshot["job"]["status"] in ("queued", "running")
    events = messages[1:]
    # Every event after the snapshot's seq, each once, in order.
    assert [e["seq"] for e in events] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(events)))
    logs = "".join(e["text"] for e in events if e["type"] == "log")
    assert all(f"INFO: frames/f{i:02d}.png" in logs for i in range(FRAMES)), logs
    progress = [snapshot["job"]["progress"]] + [e["progress"] for e in events if e["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    # Between "command started" (0.2) and "command exited" (0.9) it rose with the frames written.
    assert len({p for p in progress if 0.2 < p < 0.9}) >= 3
    final = events[-1]
    assert final["type"] == "status" and final["status"] == "succeeded" and final["exit_code"] == 0
    assert watched.job["status"] == "succeeded" and watched.job["exit_code"] == 0
    assert all(len(json.dumps(m).encode()) < 32 * 1024 for m in messages)


def test_a_client_joining_mid_job_with_after_seq_gets_every_event_it_missed_once_in_order(
    watched: Watched,
) -> None:
    snapshot, *events = watched.late.messages
    assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "running"
    assert snapshot["seq"] > watched.late_after_seq + 1  # it joined late: there was something to miss
    expected = [e for e in watched.first.events if e["seq"] > watched.late_after_seq]
    assert events == expected


def test_subscribers_that_leave_mid_job_are_forgotten_and_the_job_still_ends_normally(
    watched: Watched,
) -> None:
    assert set(watched.leavers) == {"closed", "dropped"}
    assert watched.left_while_running  # their connection and subscription records went while it ran
    assert watched.job["status"] == "succeeded" and watched.job["exit_code"] == 0
    assert len(watched.job["outputs"]) == FRAMES


def test_lines_reach_subscribers_well_within_a_second(watched: Watched) -> None:
    arrived: dict[str, float] = {}
    for at, message in watched.first.received:
        for line in message.get("text", "").splitlines():
            if line.startswith("INFO: frames/"):
                arrived.setdefault(line.removeprefix("INFO: "), at)
    latencies = [
        arrived[name] - written for name, written in watched.frames_written.items() if name in arrived
    ]
    if len(latencies) < FRAMES // 2:
        pytest.skip("the worker's work folder was not visible from here")
    median = statistics.median(latencies)
    logger.info(
        "line written -> client: median %.0f ms, min %.0f, max %.0f (%d lines)",
        median * 1000,
        min(latencies) * 1000,
        max(latencies) * 1000,
        len(latencies),
    )
    assert median < 1.0, sorted(latencies)


def test_a_finished_jobs_subscriber_gets_its_snapshot_and_final_status_and_nothing_hangs(
    local_stack: DevProcess, watched: Watched
) -> None:
    async def scenario() -> Watcher:
        seen = Watcher()
        async with await subscribe(
            f"{local_stack.websocket_url}?api_key={local_stack.api_key}", watched.job_id
        ) as ws:
            await seen.take(ws, 2)
            with pytest.raises(TimeoutError):  # and nothing more
                await asyncio.wait_for(ws.recv(), 0.5)
            await ws.send(json.dumps({"action": "unsubscribe", "job_id": watched.job_id}))
            await seen.take(ws)  # still served: the connection is alive
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), 30))
    snapshot, status, unsubscribed = seen.messages
    assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "succeeded"
    assert status == watched.first.events[-1]
    assert status["seq"] == snapshot["seq"]
    assert unsubscribed == {"type": "unsubscribed", "job_id": watched.job_id}


def test_a_bad_key_is_refused_at_the_handshake(local_stack: DevProcess) -> None:
    async def status_of(url: str) -> int:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url)
        return refused.value.response.status_code

    assert asyncio.run(status_of(f"{local_stack.websocket_url}?api_key=not-a-key")) == 401
    assert asyncio.run(status_of(local_stack.websocket_url)) == 401


@pytest.fixture(scope="module")
def other_tenant_key(local_stack: DevProcess) -> Iterator[str]:
    """A key of another tenant, made as an operator makes one: `keys create --tenant`."""
    if importlib.util.find_spec("jobgate.admin_cli") is None:
        pytest.skip("per-tenant keys are not there yet (tests/integration/test_job_events.py covers tenancy)")
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": local_stack.aws_endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "JOBGATE_TABLE_NAME": local_stack.resources["JobsTable"],
    }
    command = [sys.executable, "-m", "jobgate.admin_cli", "keys", "create", "--tenant", "other", "--json"]
    made = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    yield str(json.loads(made.stdout)["api_key"])


def test_another_tenants_job_is_as_unknown_as_a_missing_one(
    local_stack: DevProcess, watched: Watched, other_tenant_key: str
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        seen = Watcher()
        async with await subscribe(
            f"{local_stack.websocket_url}?api_key={other_tenant_key}", watched.job_id
        ) as ws:
            await seen.take(ws)
            await ws.send(json.dumps({"action": "subscribe", "job_id": "01JD7Q9A1B2C3D4E5F6G7H8J9K"}))
            await seen.take(ws)
        return seen.messages

    foreign, missing = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert (
        foreign["type"] == "error" and foreign["code"] == "not_found" and foreign["job_id"] == watched.job_id
    )
    assert "job" not in foreign
    assert {k: v for k, v in foreign.items() if k not in ("job_id", "message")} == {
        k: v for k, v in missing.items() if k not in ("job_id", "message")
    }
