"""`watch`: WebSocket events with reconnects that resume from `after_seq`, and polling when no socket answers.

The WebSocket side is a real websockets server on loopback that plays jobgate's protocol and drops
the first connection in the middle of the stream.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from jobgate.client import JobEvent, NotFound
from jobgate.client._watch import Tracker
from jobgate.client.models import Job
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.unit.client_fakes import JOB_ID, KEY, async_client_for, client_for, job_doc, problem

RUNNING = job_doc(status="running", progress=0.2, started_at="2026-11-22T02:00:01Z")
DONE = job_doc(status="succeeded", progress=1.0, exit_code=0, stderr="frame 1\nframe 2\n")


class FakeSocketApi:
    """jobgate's WebSocket API for one job; each connection plays the next script, then drops."""

    def __init__(self, scripts: list[list[dict[str, Any]]]) -> None:
        self.scripts = scripts
        self.subscriptions: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.pause = 0.0  # between messages
        self.keep_alive = False  # after the script, chatter until the client leaves
        self.resubscribe_s = 0.0  # after the script, how long to wait for another subscribe on it
        self.server: Server | None = None

    def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        self.queries.append(connection.request.path)
        self.subscriptions.append(json.loads(connection.recv(timeout=5)))
        while True:
            for message in self.scripts.pop(0) if self.scripts else []:
                connection.send(json.dumps(message))
                time.sleep(self.pause)
            if not (self.resubscribe_s and self.scripts):
                break
            try:  # a client that asks again on this connection gets the next script here
                self.subscriptions.append(json.loads(connection.recv(timeout=self.resubscribe_s)))
            except TimeoutError:
                break
        while self.keep_alive:
            try:
                connection.send(json.dumps({"type": "keepalive", "job_id": JOB_ID}))
            except ConnectionClosed:
                return
            time.sleep(0.01)
        if self.scripts:
            # Dropped mid-stream, without a close frame, as a lost network does it.
            connection.socket.shutdown(socket.SHUT_RDWR)
        else:
            connection.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/v1"


@pytest.fixture
def socket_api() -> Iterator[Callable[[list[list[dict[str, Any]]]], FakeSocketApi]]:
    started: list[tuple[Server, threading.Thread]] = []

    def start(scripts: list[list[dict[str, Any]]]) -> FakeSocketApi:
        fake = FakeSocketApi(scripts)
        fake.server = serve(fake.handle, "127.0.0.1", 0)
        thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
        thread.start()
        started.append((fake.server, thread))
        return fake

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(5)


def event(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "job_id": JOB_ID, "seq": seq, **fields}


FIRST = [
    {"type": "snapshot", "job_id": JOB_ID, "seq": 0, "job": RUNNING},
    event("log", 1, stream="stderr", text="frame 1\n"),
    event("progress", 2, progress=0.4),
]
SECOND = [
    {"type": "snapshot", "job_id": JOB_ID, "seq": 3, "job": RUNNING},
    event("progress", 2, progress=0.4),  # a repeat the client must not pass on
    event("log", 3, stream="stderr", text="frame 2\n"),
    event("status", 4, status="succeeded", exit_code=0),
]


def api_with_socket(url: str | None) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        links = {**RUNNING["links"], "websocket": url}
        return httpx.Response(200, json={**RUNNING, "links": links})

    return handle


def summary(events: list[JobEvent]) -> list[tuple[Any, ...]]:
    return [(e.type, e.seq, e.text or e.progress or e.status) for e in events]


EXPECTED = [
    ("snapshot", 0, 0.2),
    ("log", 1, "frame 1\n"),
    ("progress", 2, 0.4),
    ("log", 3, "frame 2\n"),
    ("status", 4, "succeeded"),
]


def test_watch_reconnects_after_a_drop_and_resumes_after_the_last_seq(socket_api: Any) -> None:
    fake = socket_api([FIRST, SECOND])
    client, recorder = client_for(api_with_socket(fake.url))
    events = list(client.watch(JOB_ID))
    assert summary(events) == EXPECTED
    assert fake.subscriptions == [
        {"action": "subscribe", "job_id": JOB_ID, "after_seq": 0},
        {"action": "subscribe", "job_id": JOB_ID, "after_seq": 2},
    ]
    assert all(e.source == "websocket" for e in events)
    assert fake.queries[0] == f"/v1?api_key={KEY}"
    assert recorder.seen() == [f"GET /v1/jobs/{JOB_ID}"]  # no polling while the socket works


def test_async_watch_reconnects_after_a_drop_and_resumes_after_the_last_seq(socket_api: Any) -> None:
    fake = socket_api([FIRST, SECOND])

    async def watch() -> list[JobEvent]:
        client, _ = async_client_for(api_with_socket(fake.url))
        async with client:
            return [e async for e in client.watch(JOB_ID)]

    assert summary(asyncio.run(watch())) == EXPECTED
    assert [s.get("after_seq") for s in fake.subscriptions] == [0, 2]


GAPPED = [
    {"type": "snapshot", "job_id": JOB_ID, "seq": 0, "job": RUNNING},
    event("log", 1, stream="stderr", text="frame 1\n"),
    event("log", 3, stream="stderr", text="frame 2\n"),  # 2 was lost on the way
    event("status", 4, status="succeeded", exit_code=0),
]
REPLAYED = [
    {"type": "snapshot", "job_id": JOB_ID, "seq": 4, "job": RUNNING},
    event("progress", 2, progress=0.4),
    event("log", 3, stream="stderr", text="frame 2\n"),
    event("status", 4, status="succeeded", exit_code=0),
]


def test_watch_notices_a_missing_seq_and_asks_for_a_replay_from_it(socket_api: Any) -> None:
    fake = socket_api([GAPPED, REPLAYED])
    fake.resubscribe_s = 1.0
    client, _ = client_for(api_with_socket(fake.url))
    events = list(client.watch(JOB_ID))
    assert summary(events) == EXPECTED
    assert [s.get("after_seq") for s in fake.subscriptions] == [0, 1]
    assert len(fake.queries) == 1  # asked again on the same connection


def test_async_watch_notices_a_missing_seq_and_asks_for_a_replay_from_it(socket_api: Any) -> None:
    fake = socket_api([GAPPED, REPLAYED])
    fake.resubscribe_s = 1.0

    async def watch() -> list[JobEvent]:
        client, _ = async_client_for(api_with_socket(fake.url))
        async with client:
            return [e async for e in client.watch(JOB_ID)]

    assert summary(asyncio.run(watch())) == EXPECTED
    assert [s.get("after_seq") for s in fake.subscriptions] == [0, 1]


def test_a_seq_the_server_no_longer_has_is_skipped_after_a_few_replays() -> None:
    tracker = Tracker(JOB_ID)
    snapshot = json.dumps({"type": "snapshot", "job_id": JOB_ID, "seq": 0, "job": RUNNING})
    tracker.from_socket(snapshot)
    assert [e.seq for e in tracker.from_socket(json.dumps(event("log", 1, stream="stderr", text="a\n")))] == [
        1
    ]
    asked = []
    for _ in range(10):
        got = tracker.from_socket(json.dumps(event("log", 3, stream="stderr", text="c\n")))
        request = tracker.replay_request()
        if request is not None:
            asked.append(json.loads(request)["after_seq"])
            tracker.from_socket(snapshot.replace('"seq": 0', '"seq": 3'))
        if got:
            break
    assert asked == [1, 1, 1]  # then the gap is accepted, not asked for forever
    assert [e.seq for e in got] == [3]


def test_watch_from_now_sends_no_after_seq_and_then_resumes_from_the_snapshot(socket_api: Any) -> None:
    fake = socket_api(
        [FIRST[:1], [event("log", 1, stream="stderr", text="x\n"), event("status", 2, status="failed")]]
    )
    client, _ = client_for(api_with_socket(fake.url))
    events = list(client.watch(JOB_ID, after_seq=None))
    assert [e.type for e in events] == ["snapshot", "log", "status"]
    assert fake.subscriptions[0] == {"action": "subscribe", "job_id": JOB_ID}
    assert fake.subscriptions[1]["after_seq"] == 0  # the snapshot's seq: what was sent up to then


def test_an_unknown_job_on_the_socket_is_not_found(socket_api: Any) -> None:
    fake = socket_api(
        [[{"type": "error", "code": "not_found", "message": f"No job '{JOB_ID}'.", "job_id": JOB_ID}]]
    )
    client, _ = client_for(api_with_socket(fake.url))
    with pytest.raises(NotFound, match="No job"):
        list(client.watch(JOB_ID))


def polled(states: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """An API without the event long poll (an older one): only the job itself can be read."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return problem(404, "not-found", f"No route for GET {request.url.path}.")
        return httpx.Response(200, json=states.pop(0) if len(states) > 1 else states[0])

    return handle


def long_polled(
    job: dict[str, Any], pages: list[dict[str, Any]], asked: list[dict[str, str]]
) -> Callable[[httpx.Request], httpx.Response]:
    """An API with the event long poll: the job once, then each page of events in turn."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            asked.append(dict(request.url.params))
            return httpx.Response(200, json=pages.pop(0))
        return httpx.Response(200, json=job)

    return handle


def test_watch_follows_the_event_long_poll_when_no_websocket_answers() -> None:
    links = {**RUNNING["links"], "websocket": closed_port()}
    log = {"type": "log", "job_id": JOB_ID, "stream": "stderr", "text": "frame 1\n"}
    pages = [
        {
            "events": [{**log, "seq": 1}, {"type": "progress", "job_id": JOB_ID, "seq": 2, "progress": 0.5}],
            "next_after_seq": 2,
            "done": False,
        },
        {"events": [], "next_after_seq": 2, "done": False},  # the wait passed with nothing new
        {
            "events": [
                {**log, "seq": 2, "text": "again"},  # a repeat is dropped
                {"type": "status", "job_id": JOB_ID, "seq": 3, "status": "succeeded", "exit_code": 0},
            ],
            "next_after_seq": 3,
            "done": True,
        },
    ]
    asked: list[dict[str, str]] = []
    client, recorder = client_for(long_polled({**RUNNING, "links": links}, pages, asked))
    events = list(client.watch(JOB_ID))
    assert summary(events) == [
        ("snapshot", None, 0.2),
        ("log", 1, "frame 1\n"),
        ("progress", 2, 0.5),
        ("status", 3, "succeeded"),
    ]
    assert [e.source for e in events] == ["poll", "events", "events", "events"]
    assert asked == [
        {"after_seq": "0", "wait_s": "20.0"},
        {"after_seq": "2", "wait_s": "20.0"},
        {"after_seq": "2", "wait_s": "20.0"},
    ]
    assert recorder.sleeps == []  # the server waits, not the client


def test_the_async_watch_follows_the_event_long_poll_too() -> None:
    pages = [
        {
            "events": [{"type": "status", "job_id": JOB_ID, "seq": 1, "status": "failed", "exit_code": 2}],
            "next_after_seq": 1,
            "done": True,
        },
    ]
    asked: list[dict[str, str]] = []

    async def scenario() -> list[JobEvent]:
        client, _ = async_client_for(long_polled(RUNNING, pages, asked))
        return [event async for event in client.watch(JOB_ID, after_seq=None)]

    events = asyncio.run(scenario())
    assert [(e.type, e.status) for e in events] == [("snapshot", "running"), ("status", "failed")]
    assert asked == [{"wait_s": "20.0"}]  # no after_seq: from now on


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.mark.parametrize("websocket", [closed_port(), None], ids=["unreachable", "no-link"])
def test_watch_polls_the_job_when_no_websocket_answers_and_the_api_has_no_long_poll(
    websocket: str | None,
) -> None:
    links = {**RUNNING["links"], "websocket": websocket}
    states = [
        {**RUNNING, "links": links, "stderr": "frame 1\n"},
        {**RUNNING, "links": links, "stderr": "frame 1\n", "progress": 0.5},
        {**RUNNING, "links": links, "stderr": "frame 1\nframe 2\n", "progress": 0.7},
        {**DONE, "links": links},
    ]
    client, recorder = client_for(polled(states))
    events = list(client.watch(JOB_ID, poll_interval=0.5))
    assert summary(events) == [
        ("snapshot", None, 0.2),
        ("log", None, "frame 1\n"),
        ("progress", None, 0.5),
        ("log", None, "frame 2\n"),
        ("progress", None, 0.7),
        ("progress", None, 1.0),
        ("status", None, "succeeded"),
    ]
    assert events[-1].exit_code == 0 and events[-1].terminal
    assert all(e.source == "poll" for e in events)
    asked_events = [r for r in recorder.requests if r.url.path.endswith("/events")]
    assert len(asked_events) == 1  # tried once; the API has none
    assert len(recorder.requests) == 5
    assert recorder.sleeps == [0.25, 0.5]  # fast at first, then every poll_interval


def test_a_watch_that_is_stopped_leaves_the_job_alone() -> None:
    client, recorder = client_for(polled([RUNNING]))
    events = client.watch(JOB_ID)
    assert next(events).type == "snapshot"
    events.close()
    assert recorder.seen("DELETE") == []


def test_switching_from_socket_to_polling_repeats_no_log_text() -> None:
    tracker = Tracker(JOB_ID)
    tracker.from_socket(json.dumps({"type": "snapshot", "job_id": JOB_ID, "seq": 0, "job": RUNNING}))
    tracker.from_socket(json.dumps(event("log", 1, stream="stderr", text="frame 1\n")))
    job = Job.model_validate({**RUNNING, "stderr": "frame 1\nframe 2\n"})
    assert [(e.type, e.text) for e in tracker.from_job(job)] == [("log", "frame 2\n")]


def test_a_log_tail_that_slid_past_its_start_still_yields_only_new_text() -> None:
    tracker = Tracker(JOB_ID)
    old = "".join(f"line {n:05d}\n" for n in range(1500))  # 16.5 kB: only the tail is kept
    tracker.from_job(Job.model_validate({**RUNNING, "stdout": old[-16384:]}))
    longer = old + "line 01500\nline 01501\n"
    new = tracker.from_job(Job.model_validate({**RUNNING, "stdout": longer[-16384:]}))
    assert [(e.type, e.text) for e in new] == [("log", "line 01500\nline 01501\n")]


def test_a_socket_that_only_keeps_alive_does_not_hide_the_end_of_the_job(socket_api: Any) -> None:
    fake = socket_api([FIRST[:2]])
    fake.keep_alive = True  # messages all the time, never an event again
    answers = [RUNNING, {**DONE, "stderr": "frame 1\n"}]

    def handle(request: httpx.Request) -> httpx.Response:
        job = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(200, json={**job, "links": {**job["links"], "websocket": fake.url}})

    client, _ = client_for(handle)
    events = list(client.watch(JOB_ID, idle_s=0.5))
    assert summary(events) == [
        ("snapshot", 0, 0.2),
        ("log", 1, "frame 1\n"),
        ("progress", None, 1.0),
        ("status", None, "succeeded"),
    ]
