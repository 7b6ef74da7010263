"""The worker as deployed: commands in a zygote, logs capped and streamed to S3, a lost zygote survived."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.errors import RunnerUnavailable
from jobgate.models import LOG_TAIL_BYTES, Job, JobStatus, utcnow
from jobgate.services.jobs import log_key
from jobgate.services.registry import Registry
from jobgate.services.worker import WorkerService
from jobgate.settings import Settings
from jobgate.wiring import build_worker
from ulid import ULID

from tests.support.aws import Resources, create_resources
from tests.support.commands import Probes, flood_lines, private_work_root
from tests.support.strict import StrictAws

pytestmark = pytest.mark.timeout(120)
MARKER = re.compile(rb"\n?\[jobgate: (\d+) bytes of this stream were cut here; [^\]]*\]\n")


class Worker:
    """A worker built as the function builds it (`build_worker`), running `Probes` jobs."""

    def __init__(self, resources: Resources, **settings: Any) -> None:
        self.resources = resources
        self.store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
        config = Settings(
            table_name=resources.table_name,
            queue_url=resources.queue_url,
            bucket_name=resources.bucket_name,
            lease_s=10,
            warm_command_sets=False,
            **settings,
        )
        self.service = build_worker(config, Registry.from_command_sets([Probes()]))

    def submit(self, target: str, value: str) -> Job:
        job = Job(
            job_id=str(ULID()),
            tenant="acme",
            stage="test",
            command="run",
            args={"target": target, "value": value},
            timeout_s=60,
            request_hash="h",
            created_at=utcnow(),
        )
        self.store.create(job)
        return job

    def handle(self, job: Job) -> Job:
        self.service.handle(job.job_id, remaining_s=lambda: 120.0)
        return self.store.get(job.job_id)

    def stored_log(self, job: Job, stream: str) -> bytes:
        key = log_key("acme", job.job_id, job.attempts, stream)
        body: bytes = boto3.client("s3").get_object(Bucket=self.resources.bucket_name, Key=key)["Body"].read()
        return body


@pytest.fixture(autouse=True)
def work_root(aws: StrictAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = private_work_root(monkeypatch)  # after `aws`, whose own work root it replaces
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def drop() -> Iterator[Path]:
    """A folder any job user can write its pid file to."""
    path = Path(tempfile.mkdtemp(prefix="jobgate-drop-"))
    path.chmod(0o777)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_a_zygote_lost_during_a_job_releases_it_and_the_next_delivery_runs_it(
    resources: Resources, drop: Path
) -> None:
    worker = Worker(resources)
    pid_file = drop / "pids.json"
    job = worker.submit("sleep", f"1.5 {pid_file}")

    def kill_the_zygote() -> None:
        give_up_at = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < give_up_at:
            time.sleep(0.01)
        os.kill(json.loads(pid_file.read_text())["parent"], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_zygote, daemon=True)
    killer.start()
    with pytest.raises(RunnerUnavailable):
        worker.service.handle(job.job_id, remaining_s=lambda: 120.0)
    killer.join(5)
    released = worker.store.get(job.job_id)
    assert released.status == JobStatus.RUNNING and released.attempts == 1
    assert released.lease_until is not None and released.lease_until <= time.time() * 1000  # free to take

    pid_file.unlink()
    done = worker.handle(job)  # the message's next delivery, on the same worker: a new zygote
    assert done.status == JobStatus.SUCCEEDED, done.stderr
    assert done.attempts == 2


def test_a_log_past_its_cap_keeps_head_and_tail_and_the_record_keeps_the_real_tail(
    resources: Resources,
) -> None:
    worker = Worker(resources, max_log_bytes=64 * 1024)
    lines = 20_000  # 2 MB
    done = worker.handle(worker.submit("flood", str(lines)))

    assert done.status == JobStatus.SUCCEEDED, done.stderr
    printed = flood_lines(lines)
    stored = worker.stored_log(done, "stdout")
    marker = MARKER.search(stored)
    assert marker is not None, stored[:200]
    assert stored[: marker.start()] == printed[: 32 * 1024]
    assert stored[marker.end() :] == printed[-32 * 1024 :]
    assert int(marker.group(1)) == len(printed) - 64 * 1024
    assert done.stdout == printed[-LOG_TAIL_BYTES:].decode()
    # A log the record holds whole is kept there only: no object of its own (the logs endpoint answers
    # the record's text for it).
    assert done.stderr == "flood done\n"
    with pytest.raises(ClientError, match="NoSuchKey"):
        worker.stored_log(done, "stderr")


@pytest.fixture
def http_resources(http_aws: str) -> Resources:
    """Resources on the moto server: an upload's bytes then live in that process, not in this one."""
    return create_resources(suffix=secrets.token_hex(4))


def test_logs_are_uploaded_from_disk_without_being_read_whole(
    http_resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    peaks: list[int] = []
    store_logs: Callable[..., tuple[str, str]] = WorkerService._store_logs

    def measured(self: WorkerService, job: Job, logs: Path) -> tuple[str, str]:
        tracemalloc.start()
        try:
            return store_logs(self, job, logs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(WorkerService, "_store_logs", measured)
    worker = Worker(http_resources)
    lines = 200_000  # 20 MB, under the default cap: stored whole
    done = worker.handle(worker.submit("flood", str(lines)))

    assert done.status == JobStatus.SUCCEEDED, done.stderr
    assert len(worker.stored_log(done, "stdout")) == lines * 100
    assert peaks and peaks[0] < 8 * 1024 * 1024, f"storing the logs held {peaks[0]} bytes"
