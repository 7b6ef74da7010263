"""A command cannot reach the worker's AWS credentials: not in its environment, /proc, or inherited memory.

The worker runs in a process of its own, started the way Lambda starts one: the credentials are in its
exec-time environment (and so in /proc/<pid>/environ whatever it does to os.environ later), and boto3
holds them in memory. A probe command then looks everywhere a command could. Both ways the worker can
run are covered: as root (its jobs then run as an unprivileged user) and as an unprivileged user, as on
Lambda (its jobs then share its uid, and only the worker's non-dumpable state keeps them out).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Job, JobStatus, utcnow
from jobgate_local.identities import assume
from ulid import ULID

from tests.support.aws import ROOT, create_resources
from tests.support.strict import StrictAws
from tests.support.worker_process import worker_command

pytestmark = pytest.mark.timeout(180)

NOBODY = 65534


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str

    @classmethod
    def fresh(cls, strict: StrictAws) -> Credentials:
        """A new session of the worker's role: keys no other process has seen, which the local AWS
        accepts as the worker's own (its IAM is checked as on AWS)."""
        env = assume(strict.endpoint_url, strict.roles["worker"].arn, f"isolation-{secrets.token_hex(4)}")
        return cls(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"])

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }

    def reversed(self) -> str:
        """What the probe is told: never the secrets themselves, which it would then hold."""
        return ",".join(value[::-1] for value in self.env().values())


def python_for(uid: int | None) -> str | None:
    """An interpreter of this Python version that the user can run and import from, or None.

    This venv's interpreter may sit in a folder only root can enter; a system Python of the same
    version reads the same site-packages.
    """
    for candidate in dict.fromkeys([sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]):
        if not candidate:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-I", "-c", "import encodings.idna, sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                user=uid,
                group=uid,
                extra_groups=[] if uid is not None else None,
                check=False,
            )
        except OSError:  # it cannot even be started
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


@dataclass
class WorkerProcess:
    """Runs jobs in a worker process of its own with fresh credentials, as root or as another user."""

    store: JobStore
    endpoint: str
    resources_env: dict[str, str]
    scratch: Path
    credentials: Credentials

    def job(self, target: str, value: str | None = None, timeout_s: int = 30) -> Job:
        args = {"target": target} if value is None else {"target": target, "value": value}
        job = Job(
            job_id=str(ULID()),
            tenant="acme",
            stage="test",
            command="run",
            args=args,
            timeout_s=timeout_s,
            request_hash="h",
            created_at=utcnow(),
        )
        self.store.create(job)
        return job

    def start(self, job_ids: list[str], *, uid: int | None) -> subprocess.Popen[str]:
        # As root, the worker's jobs switch to an unprivileged user, who must be able to read the
        # interpreter (otherwise the zygote keeps them as root, and says so).
        reader = NOBODY if os.geteuid() == 0 else None
        python = python_for(reader)
        if python is None:
            pytest.skip(f"no Python {sys.version_info[:2]} that uid {reader} can run here")
        home = Path(tempfile.mkdtemp(prefix="worker-", dir=self.scratch))
        home.chmod(0o755)  # the job's user must be able to reach its work folder under it
        if uid is not None:
            os.chown(home, uid, uid)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "TMPDIR": str(home),  # the worker's work folders go under it
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            **self.credentials.env(),
            **self.resources_env,
            "JOBGATE_WARM_COMMAND_SETS": "false",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        return subprocess.Popen(
            [*worker_command(python), *job_ids],
            env=env,
            cwd=ROOT,
            user=uid,
            group=uid,
            extra_groups=[] if uid is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, target: str, value: str | None = None, *, uid: int | None) -> Job:
        job = self.job(target, value)
        proc = self.start([job.job_id], uid=uid)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output[-3000:]
        return self.store.get(job.job_id)


@pytest.fixture
def worker_process(aws: StrictAws, http_aws: str) -> Iterator[WorkerProcess]:
    resources = create_resources()  # the names the roles' policies name
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    # Under /tmp, searchable by every user (a pytest tmp_path sits in a folder only root can enter).
    scratch = Path(tempfile.mkdtemp(prefix="jobgate-creds-"))
    scratch.chmod(0o755)
    yield WorkerProcess(store, http_aws, resources.env(), scratch, Credentials.fresh(aws))
    shutil.rmtree(scratch, ignore_errors=True)


def worker_users() -> list[Any]:
    """The test's own user (root here, usually), and an unprivileged one when the test may switch to it."""
    users: list[Any] = [pytest.param(None, id="worker-as-this-user")]
    can_switch = os.geteuid() == 0
    users.append(
        pytest.param(
            NOBODY,
            id="worker-as-unprivileged-user",
            marks=pytest.mark.skipif(not can_switch, reason="switching users needs root"),
        )
    )
    return users


@pytest.mark.parametrize("uid", worker_users())
def test_a_command_finds_none_of_the_workers_credentials(
    worker_process: WorkerProcess, uid: int | None
) -> None:
    job = worker_process.run("probe_credentials", worker_process.credentials.reversed(), uid=uid)

    assert job.status == JobStatus.SUCCEEDED, job.stderr
    report = json.loads(job.stdout)
    assert report["self_environ"] is False, "its own /proc/self/environ holds them"
    assert report["parent_environ"] is False, "its parent's /proc/<pid>/environ holds them"
    assert report["environ_of"] == [], "another process's environ it can read holds them"
    assert report["memory_of"] == [], "its own or an ancestor's memory holds them"
    assert report["credential_objects"] == [], "botocore credential objects are in its memory"
    assert report["readable_ancestor_memory"] == [], "it can read the memory of a process above it"
    if os.geteuid() == 0:
        assert report["uid"] == NOBODY  # as root, the worker runs its jobs as an unprivileged user


@pytest.mark.parametrize("uid", worker_users())
def test_the_zygote_and_every_job_process_die_with_the_worker(
    worker_process: WorkerProcess, uid: int | None
) -> None:
    drop = worker_process.scratch / "drop"  # where the job, whatever its user, can leave its pids
    drop.mkdir(mode=0o777)
    drop.chmod(0o777)
    pid_file = drop / "descendants.json"
    job = worker_process.job("spawn_descendants", f"wait {pid_file}")
    worker = worker_process.start([job.job_id], uid=uid)
    try:
        pids = _wait_for_json(pid_file, worker)
        worker.send_signal(signal.SIGKILL)  # as Lambda ends an environment that timed out
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    zygote = pids["parent"]
    processes = {"zygote": zygote, **{k: pids[k] for k in ("job", "in_group", "new_session", "daemon")}}
    left = {name: pid for name, pid in processes.items() if not _gone(pid, within_s=5.0)}
    for pid in left.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the worker was killed: {left}"


@pytest.mark.parametrize("uid", worker_users())
def test_what_a_job_started_is_gone_before_the_next_job_of_the_worker_runs(
    worker_process: WorkerProcess, uid: int | None
) -> None:
    drop = worker_process.scratch / "drop"
    drop.mkdir(mode=0o777)
    drop.chmod(0o777)
    first = worker_process.job("spawn_descendants", f"return {drop / 'first.json'}")
    second = worker_process.job("sleep", f"5 {drop / 'second.json'}")
    worker = worker_process.start([first.job_id, second.job_id], uid=uid)
    try:
        running = _wait_for_json(drop / "second.json", worker)  # the worker is alive, on its next job
        started = json.loads((drop / "first.json").read_text())
        left = {n: started[n] for n in ("in_group", "new_session", "daemon") if not _gone(started[n], 0.5)}
        assert running["parent"] == started["parent"]  # one zygote served both
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert not left, f"still running while the next job ran: {left}"
    assert worker_process.store.get(second.job_id).status == JobStatus.SUCCEEDED


def _wait_for_json(path: Path, proc: subprocess.Popen[str]) -> dict[str, int]:
    give_up_at = time.monotonic() + 60
    while time.monotonic() < give_up_at:
        if path.exists():
            pids: dict[str, int] = json.loads(path.read_text())
            return pids
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the worker ended before the job started: {output[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("the job never started")


def _gone(pid: int, within_s: float) -> bool:
    give_up_at = time.monotonic() + within_s
    while time.monotonic() < give_up_at:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False
