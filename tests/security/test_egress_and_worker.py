"""What a job may reach and leave behind: no private addresses, no credentials, no links out of its folder."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Job, JobStatus, utcnow
from jobgate.services.egress import EgressPolicy
from jobgate.services.registry import CommandContract, ParamSpec, Registry
from jobgate.services.worker import WorkerConfig, WorkerService
from ulid import ULID

from tests.security.conftest import Api, assert_problem, create_key
from tests.support.aws import Resources

Behaviour = Callable[[list[str]], int]

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


# -- the worker's child: sockets, environment and what it leaves in its folder ------------------------


class HostileCommands:
    """A command set whose one command does whatever the test hands it, in the job's forked child."""

    name = "hostile"

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour

    def contracts(self) -> list[CommandContract]:
        target = ParamSpec(dest="target", flags=["--target"], kind="option")
        return [CommandContract(command_set=self.name, stage="test", command="run", params=[target])]

    def warm(self) -> None:
        pass

    def run(self, argv: list[str]) -> int:
        return self._behaviour(argv)


@pytest.fixture
def run_job(resources: Resources, tmp_path: Path) -> Callable[..., Job]:
    """Run one job of HostileCommands through the real worker service, against moto."""

    def run(
        behaviour: Behaviour, *, egress: EgressPolicy | None = None, env: dict[str, str] | None = None
    ) -> Job:
        store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
        blobs = BlobStore(aws_clients.s3(), resources.bucket_name)
        job = Job(
            job_id=str(ULID()),
            tenant="acme",
            stage="test",
            command="run",
            args={"target": "x"},
            timeout_s=30,
            request_hash="h",
            created_at=utcnow(),
        )
        store.create(job)
        worker = WorkerService(
            store,
            blobs,
            Registry.from_command_sets([HostileCommands(behaviour)]),
            WorkerConfig(lease_s=10, work_root=tmp_path / "work"),
            parent_env={"PATH": os.environ["PATH"], **(env or {})},
            egress=egress,
        )
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
    port = listener.getsockname()[1]

    def connect(argv: list[str]) -> int:
        codes = [
            socket.socket().connect_ex(("169.254.169.254", 80)),
            socket.socket().connect_ex(("localhost", port)),
        ]
        sys.stdout.write(json.dumps(codes) + "\n")
        socket.create_connection(("127.0.0.1", port), timeout=2)
        return 0

    job = run_job(connect)
    assert job.status == JobStatus.FAILED and job.exit_code == 1
    assert json.loads(job.stdout) == [errno.EACCES, errno.EACCES]
    assert "egress policy" in job.stderr and "PermissionError" in job.stderr
    assert not _connects(listener)


def test_an_allow_listed_network_is_reachable(run_job: Callable[..., Job], listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    def connect(argv: list[str]) -> int:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return 0

    job = run_job(connect, egress=EgressPolicy(["127.0.0.0/8"]))
    assert job.status == JobStatus.SUCCEEDED, job.stderr
    assert _connects(listener)


def test_the_command_sees_no_credentials_and_none_of_the_workers_environment(
    run_job: Callable[..., Job],
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAWORKER",
        "AWS_SECRET_ACCESS_KEY": "worker-secret",
        "AWS_SESSION_TOKEN": "worker-token",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "JOBGATE_API_KEY": "bootstrap-secret",
        "JOBGATE_TABLE_NAME": "jobs",
    }

    def dump_env(argv: list[str]) -> int:
        sys.stdout.write(json.dumps(dict(os.environ)))
        return 0

    job = run_job(dump_env, env=secrets)
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

    def leave_traps(argv: list[str]) -> int:
        Path("result.txt").write_text("fine\n")
        os.symlink(outside / "secret.txt", "secret.txt")
        os.symlink(outside, "escape")
        os.symlink("/etc/passwd", "passwd")
        Path("sub").mkdir()
        os.symlink("../secret.txt", "sub/again.txt")
        os.mkfifo("pipe")
        return 0

    job = run_job(leave_traps)
    assert job.status == JobStatus.SUCCEEDED, job.stderr
    assert [o.name for o in job.outputs] == ["result.txt"]
    listed = boto3.client("s3").list_objects_v2(Bucket=resources.bucket_name, Prefix="results/")
    assert [o["Key"] for o in listed["Contents"]] == [f"results/acme/{job.job_id}/a{job.attempts}/result.txt"]
