"""Job events to WebSocket subscribers: snapshot first, then events in order, once, with replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.connections import MAX_PAYLOAD_BYTES, ConnectionGone, SendFailed, encode_message
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.models import JobEvent, JobStatus, utcnow
from jobgate.services.events import MAX_EVENT_BYTES, JobStream, Publisher, SubscriptionService

from tests.integration.conftest import API_KEY, Client
from tests.integration.test_store import new_job
from tests.support.aws import Resources


class FakeConnections:
    """Plays API Gateway's @connections: records what each connection was sent; some are gone.

    `failing[cid] = n` fails the next n sends to that connection (a timeout, a 5xx); `after_send` runs
    after each send, to let another sender act while this one is in the middle of a batch.
    """

    def __init__(self) -> None:
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.gone: set[str] = set()
        self.failing: dict[str, int] = {}
        self.after_send: Callable[[str, dict[str, Any]], None] | None = None

    def send(self, connection_id: str, message: dict[str, Any]) -> None:
        if connection_id in self.gone:
            raise ConnectionGone(connection_id)
        if self.failing.get(connection_id, 0) > 0:
            self.failing[connection_id] -= 1
            raise SendFailed(f"{connection_id}: timed out")
        self.sent.setdefault(connection_id, []).append(message)
        if self.after_send is not None:
            self.after_send(connection_id, message)


@pytest.fixture
def parts(
    resources: Resources,
) -> tuple[JobStore, EventStore, FakeConnections, Publisher, SubscriptionService]:
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    events = EventStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    conns = FakeConnections()
    publisher = Publisher(events, conns)  # type: ignore[arg-type]
    tenants = {"key-a": "acme", "key-b": "other"}
    subs = SubscriptionService(store, events, publisher, lambda key: tenants.get(key or ""))
    return store, events, conns, publisher, subs


def log(job_id: str, text: str) -> JobEvent:
    return JobEvent(type="log", job_id=job_id, stream="stderr", text=text)


def test_subscriber_gets_snapshot_then_new_events_in_order(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    publisher.publish([log(job.job_id, "before\n")])
    assert subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    publisher.publish([log(job.job_id, "one\n"), log(job.job_id, "two\n")])
    publisher.publish([JobEvent(type="progress", job_id=job.job_id, progress=0.5)])
    got = conns.sent["c1"]
    assert got[0]["type"] == "snapshot" and got[0]["seq"] == 1 and got[0]["job"]["status"] == "queued"
    assert "tenant" not in got[0]["job"]
    assert [(m["seq"], m.get("text", m.get("progress"))) for m in got[1:]] == [
        (2, "one\n"),
        (3, "two\n"),
        (4, 0.5),
    ]


def test_reconnect_with_after_seq_replays_what_was_missed_once(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    for i in range(5):
        publisher.publish([log(job.job_id, f"line {i}\n")])
    seen = [m["seq"] for m in conns.sent["c1"][1:]]
    assert seen == [1, 2, 3, 4, 5]
    conns.gone.add("c1")  # the client dropped after seq 2 reached it
    subs.connect("c2", "key-a")
    subs.subscribe("c2", job.job_id, 2)
    publisher.publish([log(job.job_id, "line 5\n")])
    replay = [m["seq"] for m in conns.sent["c2"] if m["type"] != "snapshot"]
    assert replay == [3, 4, 5, 6]


def seqs(conns: FakeConnections, cid: str) -> list[int]:
    return [m["seq"] for m in conns.sent.get(cid, []) if m["type"] != "snapshot"]


def test_a_failed_send_leaves_the_rest_for_the_next_publish(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    conns.failing["c1"] = 0
    conns.after_send = lambda cid, m: conns.failing.update(c1=1) if m.get("seq") == 1 else None
    publisher.publish([log(job.job_id, "one\n"), log(job.job_id, "two\n"), log(job.job_id, "three\n")])
    assert seqs(conns, "c1") == [1]  # the send of 2 failed: 2 and 3 wait for the next delivery
    publisher.publish([JobEvent(type="status", job_id=job.job_id, status=JobStatus.CANCELLED)])
    assert seqs(conns, "c1") == [1, 2, 3, 4]
    assert conns.sent["c1"][-1]["status"] == "cancelled"


def test_a_failed_send_of_the_final_status_is_sent_by_the_next_delivery(parts: Any) -> None:
    store, events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    publisher.publish([log(job.job_id, "work\n")])
    conns.failing["c1"] = 1
    publisher.publish([JobEvent(type="status", job_id=job.job_id, status=JobStatus.CANCELLED)])
    assert seqs(conns, "c1") == [1]
    # Nothing else will be published for an ended job: the subscription still knows where it stands.
    assert [s.delivered_seq for s in events.subscriptions(job.job_id)] == [1]
    publisher.deliver(job.job_id)
    assert seqs(conns, "c1") == [1, 2]


def test_a_sender_publishing_while_another_sends_hands_its_events_over_in_order(parts: Any) -> None:
    store, events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    other = Publisher(events, conns)  # type: ignore[arg-type]  # another worker or the API

    def publish_meanwhile(cid: str, message: dict[str, Any]) -> None:
        if message.get("seq") == 1:
            other.publish([log(job.job_id, "from elsewhere\n")])

    conns.after_send = publish_meanwhile
    publisher.publish([log(job.job_id, "one\n"), log(job.job_id, "two\n")])
    assert seqs(conns, "c1") == [1, 2, 3]
    assert conns.sent["c1"][-1]["text"] == "from elsewhere\n"


def test_a_sender_that_died_holding_a_subscriber_is_taken_over_after_its_lease(parts: Any) -> None:
    store, events, conns, _publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    now = [utcnow()]
    publisher = Publisher(events, conns, clock=lambda: now[0])  # type: ignore[arg-type]
    assert events.take_lease(job.job_id, "c1", "dead-sender", now=now[0]) is not None
    publisher.publish([log(job.job_id, "one\n")])
    assert seqs(conns, "c1") == []  # the holder was told; it never sends
    now[0] += timedelta(seconds=60)
    publisher.publish([log(job.job_id, "two\n")])
    assert seqs(conns, "c1") == [1, 2]


def test_gone_subscriber_is_removed_and_others_still_served(parts: Any) -> None:
    store, events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    for cid in ("c1", "c2"):
        subs.connect(cid, "key-a")
        subs.subscribe(cid, job.job_id, None)
    conns.gone.add("c1")
    publisher.publish([log(job.job_id, "hello\n")])
    assert [s.connection_id for s in events.subscriptions(job.job_id)] == ["c2"]
    assert events.connection_tenant("c1") is None
    assert conns.sent["c2"][-1]["text"] == "hello\n"


def test_bad_key_refused_and_other_tenants_job_is_unknown(parts: Any) -> None:
    store, events, conns, _publisher, subs = parts
    assert not subs.connect("c0", "wrong")
    assert not subs.connect("c0", None)
    job, _ = store.create(new_job(tenant="acme"))
    subs.connect("c1", "key-b")
    subs.subscribe("c1", job.job_id, None)
    assert conns.sent["c1"] == [
        {"type": "error", "code": "not_found", "message": f"No job '{job.job_id}'.", "job_id": job.job_id}
    ]
    assert events.subscriptions(job.job_id) == []


def test_finished_job_gets_snapshot_and_final_status(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    JobStream(job.job_id, publisher).status(running)
    publisher.publish([log(job.job_id, "work\n")])
    from jobgate.models import JobResult

    done = store.finish(
        running,
        attempt=1,
        result=JobResult(status=JobStatus.SUCCEEDED, exit_code=0, stdout_tail="", stderr_tail=""),
        now=now,
    )
    JobStream(job.job_id, publisher).status(done)
    subs.connect("late", "key-a")
    subs.subscribe("late", job.job_id, None)
    got = conns.sent["late"]
    assert got[0]["type"] == "snapshot" and got[0]["job"]["status"] == "succeeded"
    assert got[-1] == {
        "type": "status",
        "job_id": job.job_id,
        "seq": got[0]["seq"],
        "status": "succeeded",
        "exit_code": 0,
    }


def test_stream_batches_lines_reads_progress_and_never_goes_down(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    clock = [0.0]
    stream = JobStream(job.job_id, publisher, interval_s=0.25, monotonic=lambda: clock[0])
    stream.milestone(0.2)
    clock[0] = 1.0
    stream.output("stderr", b"progress: 0.5\nhalf")  # a line split across chunks
    stream.output("stderr", b" done\nprogress: 10%\n")  # lower than before: ignored
    clock[0] = 2.0
    stream.output("stdout", "é".encode()[:1])
    stream.output("stdout", "é".encode()[1:] + b"\n")
    stream.close()
    got = [m for m in conns.sent["c1"] if m["type"] != "snapshot"]
    progress = [m["progress"] for m in got if m["type"] == "progress"]
    assert progress == sorted(progress) and progress[0] == 0.2 and progress[-1] == 0.9
    assert 0.55 in progress  # 0.2 + 0.7 * 0.5
    text = "".join(m["text"] for m in got if m["type"] == "log" and m["stream"] == "stderr")
    assert text == "progress: 0.5\nhalf done\nprogress: 10%\n"
    assert [m["text"] for m in got if m.get("stream") == "stdout"] == ["é\n"]


def test_big_output_is_cut_into_frames_under_32kb(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    stream = JobStream(job.job_id, publisher, interval_s=60)
    stream.output("stdout", (("x" * 99 + "\n") * 1000).encode())  # 100 KB in one chunk
    stream.close()
    logs = [m for m in conns.sent["c1"] if m["type"] == "log"]
    assert len(logs) >= 4
    assert all(len(encode_message(m)) <= MAX_EVENT_BYTES for m in logs)
    assert "".join(m["text"] for m in logs) == ("x" * 99 + "\n") * 1000


def test_log_events_are_cut_by_their_bytes_on_the_wire_never_inside_a_character(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    # 4 bytes a character in UTF-8, 6 bytes for an escaped control character, 2 for a quote.
    text = "\U0001f600" * 16384 + "\x01" * 9000 + '"' * 9000 + "\u00e9\n"
    data = text.encode()
    stream = JobStream(job.job_id, publisher, interval_s=60)
    for start in range(0, len(data), 4093):  # chunks that end inside characters
        stream.output("stderr", data[start : start + 4093])
    stream.close()
    logs = [m for m in conns.sent["c1"] if m["type"] == "log"]
    sizes = [len(encode_message(m)) for m in logs]
    assert max(sizes) <= MAX_EVENT_BYTES <= 32 * 1000
    assert "".join(m["text"] for m in logs) == text
    assert len(logs) <= 6  # cut by bytes, not into a message a character


def test_every_message_fits_api_gateways_payload_limit(parts: Any) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    from jobgate.models import JobError, JobResult

    huge = "\x01" * 16384  # a 16 KiB tail of control characters is 96 KiB as JSON
    done = store.finish(
        running,
        attempt=1,
        result=JobResult(
            status=JobStatus.FAILED,
            exit_code=1,
            stdout_tail=huge,
            stderr_tail=huge,
            error=JobError(type="command", message="\U0001f600" * 40000),
        ),
        now=now,
    )
    JobStream(job.job_id, publisher).status(done)
    subs.connect("late", "key-a")
    subs.subscribe("late", job.job_id, None)
    snapshot, status = conns.sent["late"]
    assert len(encode_message(snapshot)) <= MAX_PAYLOAD_BYTES
    assert len(encode_message(status)) <= MAX_EVENT_BYTES
    assert snapshot["job"]["status"] == status["status"] == "failed"
    assert snapshot["partial"] is True  # the client is told to GET the job for all of it
    assert 0 < len(snapshot["job"]["stderr"]) < len(huge)
    assert snapshot["job"]["stderr"] == huge[-len(snapshot["job"]["stderr"]) :]  # the end is kept
    assert status["error"]["message"].startswith("\U0001f600")


@pytest.mark.zyra
def test_worker_publishes_logs_progress_and_status_of_a_real_job(
    client: Client, make_asset: Callable[..., str], npy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = FakeConnections()
    worker_publisher = client.worker._worker._publisher
    monkeypatch.setattr(worker_publisher, "_connections", conns)
    api_services = client.api._asgi.app.state.services
    monkeypatch.setattr(api_services.publisher, "_connections", conns)
    args = {
        "input": f"asset://{make_asset(npy_file, 'application/x-npy')}",
        "output": "map.png",
        "no_coastline": True,
        "no_borders": True,
        "no_gridlines": True,
    }
    job_id = client.submit({"stage": "visualize", "command": "heatmap", "args": args}).json()["job_id"]
    api_services.subscriptions.connect("c1", API_KEY)
    api_services.subscriptions.subscribe("c1", job_id, None)
    client.run_worker()
    got = conns.sent["c1"]
    assert got[0]["type"] == "snapshot"
    events = got[1:]
    assert [m["seq"] for m in events] == list(range(1, len(events) + 1))
    assert events[0] == {"type": "status", "job_id": job_id, "seq": 1, "status": "running"}
    assert any(m["type"] == "log" and "map.png" in m["text"] for m in events)
    progress = [m["progress"] for m in events if m["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert (
        events[-1]["type"] == "status"
        and events[-1]["status"] == "succeeded"
        and events[-1]["exit_code"] == 0
    )


def test_subscribing_to_a_pipeline_subscribes_to_each_step(
    client: Client, make_asset: Callable[..., str], npy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = FakeConnections()
    api_services = client.api._asgi.app.state.services
    monkeypatch.setattr(api_services.publisher, "_connections", conns)
    args = {"input": f"asset://{make_asset(npy_file, 'application/x-npy')}", "output": "map.png"}
    steps = [
        {"name": "draw", "stage": "visualize", "command": "heatmap", "args": args},
        {
            "name": "copy",
            "stage": "export",
            "command": "local",
            "args": {"input": "step://draw/map.png", "path": "c.png"},
        },
    ]
    pipeline = client.call("POST", "/v1/pipelines", body={"steps": steps}).json()
    api_services.subscriptions.connect("c1", API_KEY)
    api_services.subscriptions.subscribe_pipeline("c1", pipeline["pipeline_id"])
    snapshots = [m for m in conns.sent["c1"] if m["type"] == "snapshot"]
    assert sorted(m["job"]["step"] for m in snapshots) == ["copy", "draw"]
    api_services.subscriptions.connect("c2", "wrong-key")
    assert api_services.events.connection_tenant("c2") is None
