"""What a job costs on its path: the AWS requests from its claim to its end, the event log written with the
job's own writes, logs stored apart only when the record cannot hold them, the lease renewed by thirds."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.models import Job, JobEvent, JobStatus, Subscription, utcnow
from jobgate.services.events import AttemptLog, JobStream, Publisher
from jobgate.services.registry import Registry
from jobgate.services.worker import WorkerConfig, WorkerService
from ulid import ULID

from tests.integration.conftest import Client
from tests.integration.test_job_events import FakeConnections
from tests.integration.test_worker_attempts import Scripted
from tests.support.aws import Resources
from tests.support.lambdas import load_handler

HEATMAP = {"output": "map.png", "no_coastline": True, "no_borders": True, "no_gridlines": True}


class Requests:
    """Every request a client sends, in order, as `service.Operation`."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.sent.append(f"{service}.{operation}")


@pytest.fixture
def worker_requests() -> Iterator[Requests]:
    """The requests of the workers' clients (their own time budget, so clients of their own)."""
    seen = Requests()
    clients = [
        make(aws_clients.BACKGROUND) for make in (aws_clients.dynamodb, aws_clients.s3, aws_clients.sqs)
    ]
    for client in clients:
        client.meta.events.register("before-send", seen, unique_id="test-job-path")
    yield seen
    for client in clients:
        client.meta.events.unregister("before-send", unique_id="test-job-path")


@pytest.fixture
def quiet_worker(stack_env: Resources, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The worker handler as deployed for a job shorter than its intervals, however slow this machine
    is today: no read between renewals, no renewal, no event write before the end."""
    monkeypatch.setenv("JOBGATE_CANCEL_POLL_S", "30")
    monkeypatch.setenv("JOBGATE_LEASE_S", "90")
    monkeypatch.setattr(AttemptLog, "UNWATCHED_EVERY_S", 30.0)
    return load_handler("worker")


@pytest.mark.zyra
def test_a_small_job_makes_four_aws_requests_from_its_claim_to_its_end(
    api_fn: ModuleType,
    quiet_worker: ModuleType,
    stack_env: Resources,
    make_asset: Callable[..., str],
    npy_file: Path,
    worker_requests: Requests,
) -> None:
    client = Client(api_fn, quiet_worker, stack_env)
    asset = make_asset(npy_file, "application/x-npy")
    job_id = client.submit(
        {"stage": "visualize", "command": "heatmap", "args": {"input": f"asset://{asset}", **HEATMAP}}
    ).json()["job_id"]
    worker_requests.sent.clear()
    assert client.run_worker() == 1
    # The claim answers the job (no read first), the input is fetched in one GET (its key and size are
    # on the record: no asset read, no HEAD), the PNG is put, and the end is one write carrying the
    # events; the logs fit the record, so no object is written for them.
    assert worker_requests.sent == [
        "dynamodb.UpdateItem",
        "s3.GetObject",
        "s3.PutObject",
        "dynamodb.TransactWriteItems",
    ]
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "succeeded" and "map.png" in done["stderr"]


@pytest.mark.zyra
def test_the_event_log_is_whole_before_the_end_is_visible(
    client: Client, make_asset: Callable[..., str], npy_file: Path, stack_env: Resources
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    job_id = client.submit(
        {"stage": "visualize", "command": "heatmap", "args": {"input": f"asset://{asset}", **HEATMAP}}
    ).json()["job_id"]
    reader = boto3.session.Session().client("dynamodb")  # a client of its own, not the worker's
    store = JobStore(reader, stack_env.table_name, timedelta(days=1))
    events = EventStore(reader, stack_env.table_name, timedelta(days=1))
    seen_at_end: list[list[JobEvent]] = []

    def after_write(**_: Any) -> None:
        if not seen_at_end and store.get(job_id).terminal:
            seen_at_end.append(events.after(job_id, 0))  # the first moment anyone can read the end

    worker_db = aws_clients.dynamodb(aws_clients.BACKGROUND)
    worker_db.meta.events.register("after-call.dynamodb", after_write, unique_id="test-log-whole")
    try:
        assert client.run_worker() == 1
    finally:
        worker_db.meta.events.unregister("after-call.dynamodb", unique_id="test-log-whole")
    (log,) = seen_at_end
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert log[0].type == "status" and log[0].status == JobStatus.RUNNING
    assert log[-1].type == "status" and log[-1].status == JobStatus.SUCCEEDED
    assert store.get(job_id).event_seq == len(log)


@pytest.mark.zyra
def test_a_log_that_fits_the_record_gets_no_object_and_is_answered_from_the_record(
    client: Client, make_asset: Callable[..., str], npy_file: Path, stack_env: Resources
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    job_id = client.submit(
        {"stage": "visualize", "command": "heatmap", "args": {"input": f"asset://{asset}", **HEATMAP}}
    ).json()["job_id"]
    client.run_worker()
    stored = boto3.client("s3").list_objects_v2(
        Bucket=stack_env.bucket_name, Prefix=f"logs/default/{job_id}/"
    )
    assert stored.get("KeyCount", 0) == 0
    stderr = client.call("GET", f"/v1/jobs/{job_id}/logs", query={"stream": "stderr"})
    assert stderr.status == 200 and "INFO: map.png" in stderr.body.decode()
    stdout = client.call("GET", f"/v1/jobs/{job_id}/logs", query={"stream": "stdout"})
    assert stdout.status == 200 and stdout.body == b""  # an empty log answers empty text


# -- the worker service with a scripted command ----------------------------------------------------


@pytest.fixture
def store(resources: Resources) -> JobStore:
    return JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))


@pytest.fixture
def events(resources: Resources) -> EventStore:
    return EventStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))


def _job(store: JobStore, output: str = "out.txt") -> Job:
    job = Job(
        job_id=str(ULID()),
        tenant="acme",
        stage="test",
        command="write",
        args={"output": output},
        timeout_s=30,
        request_hash="h",
        created_at=utcnow(),
    )
    store.create(job)
    return job


def _worker(
    store: JobStore,
    resources: Resources,
    behaviour: Callable[[list[str]], int],
    tmp_path: Path,
    **config: Any,
) -> WorkerService:
    conns = FakeConnections()
    events = EventStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    return WorkerService(
        store,
        BlobStore(aws_clients.s3(), resources.bucket_name),
        Registry.from_command_sets([Scripted(behaviour)]),
        WorkerConfig(**{"lease_s": 3, "pulse_s": 0.2, "work_root": tmp_path / "work", **config}),
        parent_env={"PATH": os.environ["PATH"]},
        publisher=Publisher(events, conns),  # type: ignore[arg-type]
    )


def _output_path(argv: list[str]) -> Path:
    return Path(next(word for word in argv if word.startswith("--output=")).split("=", 1)[1])


def test_a_long_log_is_stored_whole_and_answered_from_its_object(
    store: JobStore, resources: Resources, tmp_path: Path
) -> None:
    line = "a line of a long log, one of many\n"

    def chatty(argv: list[str]) -> int:
        os.write(1, (line * 2000).encode())  # 68 KB, more than the record's 16 KiB tail
        _output_path(argv).write_text("done\n")
        return 0

    job = _job(store)
    done = _worker(store, resources, chatty, tmp_path).handle(
        job.job_id, remaining_s=lambda: 120.0, tenant="acme"
    )
    assert done is not None and done.status == JobStatus.SUCCEEDED
    key = f"logs/acme/{job.job_id}/a1/stdout.log"
    body = boto3.client("s3").get_object(Bucket=resources.bucket_name, Key=key)["Body"].read()
    assert body.decode() == line * 2000
    assert len(done.stdout.encode()) <= 16 * 1024 and (line * 2000).endswith(done.stdout)


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_the_lease_is_renewed_by_thirds_and_a_cancel_is_learned_between_renewals(
    store: JobStore, resources: Resources, tmp_path: Path
) -> None:
    started = tmp_path / "started"  # the command runs in a child: files are how it signals

    def waits(argv: list[str]) -> int:
        started.touch()
        time.sleep(20)  # killed by the cancel long before
        return 0

    job = _job(store)
    renewals: list[float] = []

    class Counting(JobStore):
        def heartbeat(self, job_id: str, **kwargs: Any) -> Job:
            renewals.append(time.monotonic())
            return super().heartbeat(job_id, **kwargs)

    counting = Counting(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    worker = _worker(counting, resources, waits, tmp_path, lease_s=3, pulse_s=0.2)
    result: list[Job | None] = []
    thread = threading.Thread(
        target=lambda: result.append(worker.handle(job.job_id, remaining_s=lambda: 120.0, tenant="acme"))
    )
    begun = time.monotonic()
    thread.start()
    _wait_for(started)
    time.sleep(2.6)
    cancelled_at = time.monotonic()
    store.cancel(store.get(job.job_id), now=utcnow())
    thread.join(30)
    learned_s = time.monotonic() - cancelled_at
    ran_s = cancelled_at - begun
    (done,) = result
    assert done is not None and done.status == JobStatus.CANCELLED
    # Renewed every lease/3 = 1 s (not every pulse), and the cancel still learned within a few pulses.
    assert 1 <= len(renewals) <= ran_s / 1.0 + 1
    assert learned_s < 1.5


def test_a_subscriber_who_comes_while_the_job_runs_gets_its_events_as_they_come(
    store: JobStore, resources: Resources, tmp_path: Path
) -> None:
    go_on = tmp_path / "go-on"  # the command runs in a child: files are how it is signalled

    def two_halves(argv: list[str]) -> int:
        os.write(1, b"first half\n")
        _wait_for(go_on)
        os.write(1, b"second half\n")
        time.sleep(3.0)  # the second line reaches the subscriber long before the job ends
        _output_path(argv).write_text("done\n")
        return 0

    job = _job(store)
    worker = _worker(store, resources, two_halves, tmp_path)
    publisher = worker._publisher
    assert publisher is not None
    conns: FakeConnections = publisher._connections  # type: ignore[assignment]
    ended: list[float] = []
    thread = threading.Thread(
        target=lambda: (
            worker.handle(job.job_id, remaining_s=lambda: 120.0, tenant="acme"),
            ended.append(time.monotonic()),
        )
    )
    thread.start()
    events = publisher.events
    deadline = time.monotonic() + 30
    while not any(e.type == "log" for e in events.after(job.job_id, 0)):  # the first half is in the log
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # A subscription as the WebSocket handler makes it: counted on the job, then caught up from the log.
    sub = Subscription(job_id=job.job_id, connection_id="late", delivered_seq=0)
    events.put_subscription(sub, utcnow())
    publisher.deliver(job.job_id, only=sub)
    go_on.touch()
    arrived: dict[str, float] = {}
    while not ended:
        for message in conns.sent.get("late", []):
            if message.get("type") == "log" and "second half" in message.get("text", ""):
                arrived.setdefault("second", time.monotonic())
        time.sleep(0.02)
    thread.join(30)
    sent = conns.sent["late"]
    assert [m["seq"] for m in sent] == list(range(1, len(sent) + 1))  # all of them, in order, once
    # Live: the worker learned of the subscriber (a read between renewals, or the write it made miss).
    assert "second" in arrived and arrived["second"] < ended[0] - 1.5
    assert sent[-1]["type"] == "status" and sent[-1]["status"] == "succeeded"


def test_an_attempt_that_lost_its_job_writes_no_event(
    store: JobStore, events: EventStore, resources: Resources
) -> None:
    job = _job(store)
    now = utcnow()
    first = store.claim_delivered(
        job.job_id, tenant="acme", now=now, lease_until=now + timedelta(seconds=1), max_attempts=3
    )
    later = now + timedelta(seconds=5)  # its lease ran out: another delivery takes the job over
    second = store.claim_delivered(
        job.job_id, tenant="acme", now=later, lease_until=later + timedelta(seconds=30), max_attempts=3
    )
    assert (first.attempts, second.attempts) == (1, 2)
    publisher = Publisher(events, None)
    stream = JobStream(job.job_id, None)
    log = AttemptLog(store, events, publisher, stream, first, 1)
    stream.output("stdout", b"written by the attempt that lost its job\n")
    log.flush()
    assert events.after(job.job_id, 0) == []
    assert store.get(job.job_id).event_seq == 0
    # The attempt holding the job writes its events from where the counter stands.
    stream = JobStream(job.job_id, None)
    log = AttemptLog(store, events, publisher, stream, second, 2)
    stream.output("stdout", b"written by the attempt holding the job\n")
    log.flush()
    (event,) = events.after(job.job_id, 0)
    assert event.seq == 1 and event.text == "written by the attempt holding the job\n"
    assert store.get(job.job_id).event_seq == 1


@pytest.mark.zyra
def test_an_input_whose_file_is_gone_fails_the_job_as_an_input_error(
    client: Client, make_asset: Callable[..., str], npy_file: Path, stack_env: Resources
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    job_id = client.submit(
        {"stage": "visualize", "command": "heatmap", "args": {"input": f"asset://{asset}", **HEATMAP}}
    ).json()["job_id"]
    s3 = boto3.client("s3")
    s3.delete_object(Bucket=stack_env.bucket_name, Key=f"uploads/default/{asset}/{npy_file.name}")
    client.run_worker()
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "failed" and done["error"]["type"] == "input", json.dumps(done)
