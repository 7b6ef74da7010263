"""One attempt at a job, from claim to finish, under a lease of its own: staging and uploads included.

Each test reproduces what a real deployment sees: a slow transfer while a duplicate message arrives, a
worker that cannot renew its lease while another takes the job over and finishes first, a command that
exits 0 without writing what it was asked to write, a runtime killed before it could clean up.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.errors import StoreError
from jobgate.models import Job, JobStatus, utcnow
from jobgate.services import worker as worker_module
from jobgate.services.jobs import output_key
from jobgate.services.registry import CommandContract, ParamSpec, Registry
from jobgate.services.worker import LeaseLost, WorkerConfig, WorkerService
from ulid import ULID

from tests.support.aws import Resources

Behaviour = Callable[[list[str]], int]


class Scripted:
    """A command set whose one command writes what the test says; `--output` names its output file."""

    name = "scripted"

    def __init__(self, behaviour: Behaviour, *, optional_output: bool = False) -> None:
        self._behaviour = behaviour
        self._optional = optional_output

    def contracts(self) -> list[CommandContract]:
        output = ParamSpec(
            dest="output", flags=["--output"], kind="option", role="output", optional=self._optional
        )
        return [CommandContract(command_set=self.name, stage="test", command="write", params=[output])]

    def warm(self) -> None:
        pass

    def run(self, argv: list[str]) -> int:
        return self._behaviour(argv)


def write_unique(argv: list[str]) -> int:
    """Writes bytes no other attempt writes: a second attempt's file differs from the first's."""
    path = next(word for word in argv if word.startswith("--output=")).split("=", 1)[1]
    Path(path).write_bytes(f"written by pid {os.getpid()} at {time.time_ns()}\n".encode() * 64)
    return 0


class SlowBlobs(BlobStore):
    """S3 whose first upload of an output blocks until the test lets it go: a slow network."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(aws_clients.s3(), inner.bucket)
        self.uploading = threading.Event()
        self.release = threading.Event()

    def upload_file(self, path: Path, key: str, content_type: str) -> None:
        if key.startswith("results/") and not self.uploading.is_set():
            self.uploading.set()
            assert self.release.wait(60), "the test never let the upload go"
        super().upload_file(path, key, content_type)


class UnreachableHeartbeats(JobStore):
    """The table as one worker sees it while its network fails: every lease renewal fails."""

    def heartbeat(self, job_id: str, **kwargs: Any) -> Job:
        raise StoreError("DynamoDB unreachable: connect timeout")


@pytest.fixture
def store(resources: Resources) -> JobStore:
    return JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))


@pytest.fixture
def blobs(resources: Resources) -> BlobStore:
    return BlobStore(aws_clients.s3(), resources.bucket_name)


@pytest.fixture
def new_job(store: JobStore) -> Callable[..., Job]:
    def create(output: str = "out.txt") -> Job:
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

    return create


@pytest.fixture
def worker_for(tmp_path: Path) -> Callable[..., WorkerService]:
    def build(store: JobStore, blobs: BlobStore, behaviour: Behaviour, **config: Any) -> WorkerService:
        settings: dict[str, Any] = {"lease_s": 2, "pulse_s": 0.2, "work_root": tmp_path / "work"}
        settings.update(config)
        return WorkerService(
            store,
            blobs,
            Registry.from_command_sets(
                [Scripted(behaviour, optional_output=settings.pop("optional", False))]
            ),
            WorkerConfig(**settings),
            parent_env={"PATH": os.environ["PATH"]},
        )

    return build


class InThread:
    """`worker.handle` on a thread of its own, as a second Lambda sandbox would run it."""

    def __init__(self, worker: WorkerService, job_id: str) -> None:
        self.result: Job | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(worker, job_id), daemon=True)
        self._thread.start()

    def _run(self, worker: WorkerService, job_id: str) -> None:
        try:
            self.result = worker.handle(job_id, remaining_s=lambda: 120.0)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive()


@pytest.fixture
def threads() -> Iterator[list[SlowBlobs]]:
    slow: list[SlowBlobs] = []
    yield slow
    for blobs in slow:  # never leave a worker thread blocked
        blobs.release.set()


def _object_sha256(resources: Resources, key: str) -> str:
    body = boto3.client("s3").get_object(Bucket=resources.bucket_name, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def test_the_lease_is_renewed_while_outputs_upload_so_a_duplicate_delivery_runs_nothing(
    store: JobStore,
    blobs: BlobStore,
    new_job: Callable[..., Job],
    worker_for: Callable[..., WorkerService],
    resources: Resources,
    threads: list[SlowBlobs],
) -> None:
    job = new_job()
    slow = SlowBlobs(blobs)
    threads.append(slow)
    first = InThread(worker_for(store, slow, write_unique), job.job_id)
    assert slow.uploading.wait(30)
    time.sleep(3 * 2)  # three lease lengths into a slow upload
    duplicate = worker_for(store, blobs, write_unique).handle(job.job_id, remaining_s=lambda: 120.0)
    assert duplicate is None  # the first attempt still holds its lease: nothing ran twice
    slow.release.set()
    first.join()
    assert first.error is None, first.error
    done = store.get(job.job_id)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 1
    (output,) = done.outputs
    assert output.sha256 == _object_sha256(resources, output_key("acme", job.job_id, 1, "out.txt"))


def test_a_superseded_attempt_cannot_change_the_outputs_the_record_points_at(
    store: JobStore,
    blobs: BlobStore,
    new_job: Callable[..., Job],
    worker_for: Callable[..., WorkerService],
    resources: Resources,
    threads: list[SlowBlobs],
) -> None:
    job = new_job()
    slow = SlowBlobs(blobs)
    threads.append(slow)
    cut_off = UnreachableHeartbeats(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    first = InThread(worker_for(cut_off, slow, write_unique), job.job_id)
    assert slow.uploading.wait(30)
    while (store.get(job.job_id).lease_until or 0) >= epoch_ms(utcnow()):
        time.sleep(0.1)  # the first attempt's lease runs out: it could not renew it
    second = worker_for(store, blobs, write_unique).handle(job.job_id, remaining_s=lambda: 120.0)
    assert second is not None and second.status == JobStatus.SUCCEEDED and second.attempts == 2
    slow.release.set()  # the first attempt's upload lands late
    first.join()
    assert isinstance(first.error, LeaseLost)  # it noticed, and recorded nothing
    done = store.get(job.job_id)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2
    (output,) = done.outputs
    assert output.sha256 == _object_sha256(resources, output_key("acme", job.job_id, 2, "out.txt"))
    late = _object_sha256(resources, output_key("acme", job.job_id, 1, "out.txt"))
    assert late != output.sha256  # what the late attempt wrote is beside the record, not under it


def test_the_lease_is_renewed_while_inputs_stage(
    store: JobStore,
    new_job: Callable[..., Job],
    worker_for: Callable[..., WorkerService],
    resources: Resources,
) -> None:
    job = new_job()
    staging = threading.Event()
    go_on = threading.Event()

    class SlowStaging(WorkerService):
        def _stage_inputs(self, *args: Any) -> Any:
            staging.set()
            assert go_on.wait(60)
            return super()._stage_inputs(*args)

    blobs = BlobStore(aws_clients.s3(), resources.bucket_name)
    plain = worker_for(store, blobs, write_unique)
    slow = SlowStaging(
        store,
        blobs,
        plain._registry,
        plain._config,
        parent_env={"PATH": os.environ["PATH"]},
    )
    first = InThread(slow, job.job_id)
    try:
        assert staging.wait(30)
        time.sleep(3 * 2)
        assert worker_for(store, blobs, write_unique).handle(job.job_id, remaining_s=lambda: 120.0) is None
    finally:
        go_on.set()
    first.join()
    done = store.get(job.job_id)
    assert first.error is None and done.status == JobStatus.SUCCEEDED and done.attempts == 1


def test_a_command_that_exits_0_without_writing_its_output_fails_naming_the_file(
    store: JobStore, blobs: BlobStore, new_job: Callable[..., Job], worker_for: Callable[..., WorkerService]
) -> None:
    def writes_nothing(argv: list[str]) -> int:
        print("nothing to do; skipping")  # noqa: T201 - the command's own output
        return 0

    job = new_job("video.mp4")
    done = worker_for(store, blobs, writes_nothing).handle(job.job_id, remaining_s=lambda: 120.0)
    assert done is not None and done.status == JobStatus.FAILED and done.exit_code == 0
    assert done.error is not None and done.error.type == "missing_output"
    assert "'video.mp4' (--output)" in done.error.message
    assert "skipping" in done.stdout


def test_an_output_the_contract_marks_optional_may_stay_unwritten(
    store: JobStore, blobs: BlobStore, new_job: Callable[..., Job], worker_for: Callable[..., WorkerService]
) -> None:
    job = new_job("maybe.json")
    worker = worker_for(store, blobs, lambda argv: 0, optional=True)
    done = worker.handle(job.job_id, remaining_s=lambda: 120.0)
    assert done is not None and done.status == JobStatus.SUCCEEDED and done.outputs == []


def test_uploads_that_would_run_past_the_deadline_end_the_job_timed_out(
    store: JobStore,
    blobs: BlobStore,
    new_job: Callable[..., Job],
    worker_for: Callable[..., WorkerService],
    threads: list[SlowBlobs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def writes_two(argv: list[str]) -> int:
        Path("second.txt").write_text("the file after the slow one\n")
        return write_unique(argv)

    # The margin kept for the uploads, shortened from its 20 s: the scenario is the same, sooner.
    monkeypatch.setattr(worker_module, "FINISH_MARGIN_S", 8.0)
    job = new_job()
    slow = SlowBlobs(blobs)
    threads.append(slow)
    ends_at = time.monotonic() + 16.0  # the finish margin plus a few seconds for the command
    worker = worker_for(store, slow, writes_two, lease_s=30)
    box = InThread.__new__(InThread)
    box.result, box.error = None, None

    def run() -> None:
        try:
            box.result = worker.handle(job.job_id, remaining_s=lambda: ends_at - time.monotonic())
        except BaseException as exc:  # noqa: BLE001
            box.error = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert slow.uploading.wait(30)
    # The first upload takes until 4 s are left: the second would start inside the recording margin.
    time.sleep(max(0.0, ends_at - time.monotonic() - 4.0))
    slow.release.set()
    thread.join(30)
    assert box.error is None, box.error
    done = store.get(job.job_id)
    assert done.status == JobStatus.TIMED_OUT, done
    assert done.error is not None and done.error.type == "timeout"
    assert "Uploading the outputs" in done.error.message and done.outputs == []


def test_work_folders_a_killed_runtime_left_behind_are_removed_at_cold_start(
    store: JobStore, blobs: BlobStore, worker_for: Callable[..., WorkerService], tmp_path: Path
) -> None:
    left = tmp_path / "work" / "01JOBKILLEDBYATIMEOUT0000-1"
    (left / "inputs").mkdir(parents=True)
    (left / "inputs" / "big.nc").write_bytes(b"\0" * 4096)
    (tmp_path / "work" / "01JOBKILLEDBYATIMEOUT0000-1.logs").mkdir()
    worker_for(store, blobs, write_unique).prepare()
    assert list((tmp_path / "work").iterdir()) == []
