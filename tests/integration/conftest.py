"""The functions' real handlers, each as its role, on the strict local AWS, driven with API Gateway and SQS
events."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Asset, AssetStatus, utcnow
from ulid import ULID

from tests.support.aws import Resources
from tests.support.lambdas import HttpAnswer, call_api, load_handler, pump

API_KEY = "integration-test-key-0123456789"
TENANT = "default"


@pytest.fixture
def stack_env(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Resources:
    for key, value in resources.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JOBGATE_API_KEY", API_KEY)
    monkeypatch.setenv("JOBGATE_WORKER_TIMEOUT_S", "120")
    monkeypatch.setenv("JOBGATE_LEASE_S", "5")
    monkeypatch.setenv("JOBGATE_CANCEL_POLL_S", "0.2")
    monkeypatch.setenv("JOBGATE_SYNC_POLL_S", "0.01")
    # The hanging-command tests fetch from a loopback listener, which the egress policy refuses
    # unless allow-listed; the rate limiter stays on, well above what the tests send.
    monkeypatch.setenv("JOBGATE_EGRESS_ALLOW", "127.0.0.0/8")
    monkeypatch.setenv("JOBGATE_RATE_LIMIT_PER_S", "1000")
    monkeypatch.setenv("JOBGATE_RATE_LIMIT_BURST", "1000")
    return resources


@pytest.fixture
def api_fn(stack_env: Resources) -> ModuleType:
    return load_handler("api")


@pytest.fixture
def worker_fn(stack_env: Resources) -> ModuleType:
    return load_handler("worker")


@pytest.fixture
def store(stack_env: Resources) -> JobStore:
    return JobStore(aws_clients.dynamodb(), stack_env.table_name, timedelta(days=1))


class Client:
    """What a client sees: the API handler's answers to API Gateway events."""

    def __init__(self, api: ModuleType, worker: ModuleType, resources: Resources) -> None:
        self.api = api
        self.worker = worker
        self.resources = resources

    def call(self, method: str, path: str, *, key: str | None = API_KEY, **kwargs: object) -> HttpAnswer:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if key is not None:
            headers["X-API-Key"] = key
        return call_api(self.api, method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def submit(self, body: dict[str, object]) -> HttpAnswer:
        return self.call("POST", "/v1/jobs", body=body)

    def run_worker(self, timeout_s: float = 120) -> int:
        return pump(self.worker, self.resources.queue_url, timeout_s=timeout_s)


@pytest.fixture
def client(api_fn: ModuleType, worker_fn: ModuleType, stack_env: Resources) -> Client:
    return Client(api_fn, worker_fn, stack_env)


@pytest.fixture
def make_asset(store: JobStore, stack_env: Resources) -> Callable[..., str]:
    """An uploaded input, as the upload flow leaves it: the object in S3 and an AVAILABLE record."""

    def make(path: Path, media_type: str, status: AssetStatus = AssetStatus.AVAILABLE) -> str:
        asset_id = str(ULID())
        key = f"uploads/{TENANT}/{asset_id}/{path.name}"
        data = path.read_bytes()
        boto3.client("s3").put_object(
            Bucket=stack_env.bucket_name, Key=key, Body=data, ContentType=media_type
        )
        asset = Asset(
            asset_id=asset_id,
            tenant=TENANT,
            filename=path.name,
            media_type=media_type,
            size=len(data),
            status=status,
            key=key,
            created_at=utcnow(),
        )
        store.put_asset(asset)
        return asset_id

    return make


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback HTTP endpoint that accepts connections and never answers: a command that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/never"
    sock.close()
