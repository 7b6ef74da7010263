"""What a job may reach and leave behind: no private addresses, no credentials, no links out of its folder,
no process running once it has ended."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Job, JobStatus, utcnow
from jobgate.services.egress import EgressPolicy
from jobgate.services.registry import Registry
from jobgate.settings import Settings
from jobgate.wiring import build_worker
from ulid import ULID

from tests.security.conftest import Api, assert_problem, create_key
from tests.support.aws import Resources
from tests.support.commands import Probes, private_work_root
from tests.support.strict import StrictAws

# -- the API refuses URLs to addresses a job may not reach --------------------------------------------

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # the metadata service
    "http://[fd00:ec2::254]/latest/meta-data/",  # its IPv6 address
    "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",  # Lambda's runtime API
    "http://localhost/",
    "https://10.0.0.5/data.nc",
    "https://172.16.3.4/",
    "https://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0:8080/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://0x7f.1/",  # 127.0.0.1 in hex
    "http://169.254.169.254.nip.invalid/",  # a name that does not resolve
    "file:///etc/passwd",
]


def test_urls_to_private_loopback_and_link_local_addresses_are_a_422(api: Api) -> None:
    key = create_key("acme")
    for url in REFUSED_URLS:
        body = {"stage": "acquire", "command": "http", "args": {"url": url, "output": "x.bin"}}
        problem = assert_problem(api.call("POST", "/v1/jobs", key, body=body), 422, "validation")
        (error,) = problem["errors"]
        assert error["loc"] == ["body", "args", "url"], url
        assert api.queued_messages() == 0, url
    # A URL in a list argument is checked item by item.
    body = {"stage": "acquire", "command": "http", "args": {"url": "https://93.184.216.34/", "output": "x",
            "inputs": ["https://93.184.216.34/a", "http://169.254.169.254/b"]}}  # fmt: skip
    problem = assert_problem(api.call("POST", "/v1/jobs", key, body=body), 422, "validation")
    assert [e["loc"] for e in problem["errors"]] == [["body", "args", "inputs", 1]]


def test_a_public_address_is_accepted(api: Api) -> None:
    key = create_key("acme")
    body = {
        "stage": "acquire",
        "command": "http",
        "args": {"url": "https://93.184.216.34/x.nc", "output": "x"},
    }
    assert api.call("POST", "/v1/jobs", key, body=body).status == 202


def test_allow_listed_networks_are_accepted(api_with: Callable[..., Api]) -> None:
    api = api_with(egress_allow="127.0.0.0/8,10.1.0.0/16")
    key = create_key("acme")
    for url, status in (
        ("http://127.0.0.1:8080/x", 202),
        ("http://10.1.2.3/x", 202),
        ("http://10.2.0.1/", 422),
    ):
        body = {"stage": "acquire", "command": "http", "args": {"url": url, "output": "x.bin"}}
        assert api.call("POST", "/v1/jobs", key, body=body).status == status, url
    refused = {
        "stage": "acquire",
        "command": "http",
        "args": {"url": "http://169.254.169.254/", "output": "x"},
    }
    assert api.call("POST", "/v1/jobs", key, body=refused).status == 422


def test_host_names_are_judged_by_every_address_they_resolve_to() -> None:
    dns = {
        "data.example.org": ["93.184.216.34"],
        "split.example.org": ["93.184.216.34", "10.0.0.7"],  # one private answer is enough to refuse
        "internal.example.org": ["10.0.0.7"],
        "nat64.example.org": ["64:ff9b::a9fe:a9fe"],  # 169.254.169.254 through NAT64
    }

    def resolver(host: str) -> list[str]:
        if host not in dns:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return dns[host]

    policy = EgressPolicy(resolver=resolver)
    assert policy.url_problem("https://data.example.org/x") is None
    for host in ("split.example.org", "internal.example.org", "nat64.example.org", "gone.example.org"):
        assert policy.url_problem(f"https://{host}/x") is not None, host
    allowed = EgressPolicy(["internal.example.org"], resolver=resolver)
    assert allowed.url_problem("https://internal.example.org/x") is None
    assert allowed.url_problem("https://split.example.org/x") is not None
    assert policy.url_problem("not a url") is None
    # s3:// names buckets, not hosts: only allow-listed (public) buckets, whatever they resolve to.
    assert policy.url_problem("s3://bucket/key") is not None
    assert EgressPolicy(s3_buckets=["bucket"], resolver=resolver).url_problem("s3://bucket/key") is None


# -- the job's child: sockets, environment and what it leaves in its folder ----------------------------


@pytest.fixture
def work_root(aws: StrictAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = private_work_root(monkeypatch)  # after `aws`, whose own work root it replaces
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run_job(resources: Resources, work_root: Path) -> Callable[..., Job]:
    """Run one job of the `Probes` command set through the worker as deployed (its zygote), against moto."""

    def run(target: str, value: str | None = None, *, timeout_s: int = 30, **settings: Any) -> Job:
        store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
        config = Settings(
            table_name=resources.table_name,
            queue_url=resources.queue_url,
            bucket_name=resources.bucket_name,
            lease_s=10,
            warm_command_sets=False,
            **settings,
        )
        worker = build_worker(config, Registry.from_command_sets([Probes()]))
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
        store.create(job)
        worker.handle(job.job_id, remaining_s=lambda: 120.0)
        return store.get(job.job_id)

    return run


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener: had a command connected, it would have a connection to accept."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.5)
    yield sock
    sock.close()


def _connects(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except TimeoutError:
        return False
    return True


def test_the_command_cannot_connect_to_a_loopback_or_metadata_address(
    run_job: Callable[..., Job], listener: socket.socket
) -> None:
    job = run_job("connect_private", str(listener.getsockname()[1]))
    assert job.status == JobStatus.FAILED and job.exit_code == 1
    assert json.loads(job.stdout) == [errno.EACCES, errno.EACCES]
    assert "egress policy" in job.stderr and "PermissionError" in job.stderr
    assert not _connects(listener)


def test_an_allow_listed_network_is_reachable(run_job: Callable[..., Job], listener: socket.socket) -> None:
    job = run_job("connect_loopback", str(listener.getsockname()[1]), egress_allow="127.0.0.0/8")
    assert job.status == JobStatus.SUCCEEDED, job.stderr
    assert _connects(listener)


def test_the_command_sees_no_credentials_and_none_of_the_workers_environment(
    run_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAWORKER",
        "AWS_SECRET_ACCESS_KEY": "worker-secret",
        "AWS_SESSION_TOKEN": "worker-token",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "JOBGATE_API_KEY": "bootstrap-secret",
        "JOBGATE_TABLE_NAME": "jobs",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)

    job = run_job("dump_env")
    assert job.status == JobStatus.SUCCEEDED, job.stderr
    seen = json.loads(job.stdout)
    assert not set(secrets) & set(seen)
    assert not any(value in job.stdout for value in secrets.values())
    assert seen["HOME"].startswith(str(Path(seen["TMPDIR"]).parent))  # its home is its work folder


def test_links_and_devices_the_command_makes_are_not_outputs(
    run_job: Callable[..., Job], tmp_path: Path, resources: Resources
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("worker secret\n")

    job = run_job("leave_traps", str(outside))
    assert job.status == JobStatus.SUCCEEDED, job.stderr
    assert [o.name for o in job.outputs] == ["result.txt"]
    listed = boto3.client("s3").list_objects_v2(Bucket=resources.bucket_name, Prefix="results/")
    assert [o["Key"] for o in listed["Contents"]] == [f"results/acme/{job.job_id}/a{job.attempts}/result.txt"]


# -- what a job leaves running ------------------------------------------------------------------------


def _gone(pid: int, within_s: float = 1.0) -> bool:
    """True once pid no longer runs (a zombie counts as gone)."""
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


def test_every_process_a_job_started_ends_with_it_even_in_a_new_session(run_job: Callable[..., Job]) -> None:
    job = run_job("spawn_descendants")
    assert job.status == JobStatus.SUCCEEDED, job.stderr
    pids = json.loads(job.stdout)
    left = {name: pids[name] for name in ("in_group", "new_session", "daemon") if not _gone(pids[name])}
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the job ended: {left}"


def test_a_timed_out_job_leaves_no_process_behind(run_job: Callable[..., Job]) -> None:
    job = run_job("spawn_descendants", "wait", timeout_s=2)
    assert job.status == JobStatus.TIMED_OUT, job.stderr
    pids = json.loads(job.stdout)
    left = {name: pids[name] for name in ("in_group", "new_session", "daemon") if not _gone(pids[name])}
    for pid in left.values():
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the job timed out: {left}"
