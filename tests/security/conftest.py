"""The API handler against an in-process moto, with two real tenants holding keys from the admin CLI."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from jobgate import admin_cli
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Asset, AssetStatus, utcnow
from jobgate.wiring import ApiServices
from ulid import ULID

from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, HttpAnswer, call_api, load_handler

BOOTSTRAP_KEY = "security-bootstrap-key-0123456789"
PROBLEM = "application/problem+json"

# What every test starts from; a test changes what it exercises through `api_with(...)`.
BASE_ENV = {
    "JOBGATE_API_KEY": BOOTSTRAP_KEY,
    "JOBGATE_WORKER_TIMEOUT_S": "120",
    "JOBGATE_LEASE_S": "5",
    "JOBGATE_SYNC_POLL_S": "0.01",
    "JOBGATE_RATE_LIMIT_PER_S": "1000",
    "JOBGATE_RATE_LIMIT_BURST": "1000",
}


@dataclass
class Api:
    """What a client sees: the API handler's answers to API Gateway events."""

    module: ModuleType
    resources: Resources

    @property
    def services(self) -> ApiServices:
        services: ApiServices = self.module._asgi.app.state.services
        return services

    def call(self, method: str, path: str, key: str | None, **kwargs: Any) -> HttpAnswer:
        headers = dict(kwargs.pop("headers", None) or {})
        if key is not None:
            headers["X-API-Key"] = key
        return call_api(self.module, method, path, headers=headers, **kwargs)

    def send(self, event: dict[str, Any]) -> HttpAnswer:
        """Hand the function an event built by the test (e.g. with an authorizer's claims)."""
        out = self.module.handler(event, FakeContext(function_name="api", timeout_s=29))
        body = out.get("body") or ""
        raw = base64.b64decode(body) if out.get("isBase64Encoded") else body.encode()
        return HttpAnswer(
            status=out["statusCode"], headers={k.lower(): v for k, v in out["headers"].items()}, body=raw
        )

    def queued_messages(self) -> int:
        attrs = boto3.client("sqs").get_queue_attributes(
            QueueUrl=self.resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


@pytest.fixture
def api_with(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Api]:
    """The API function after a cold start with these JOBGATE_* settings on top of the base ones."""

    def start(**settings: str) -> Api:
        env = {**resources.env(), **BASE_ENV, **{f"JOBGATE_{k.upper()}": v for k, v in settings.items()}}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Api(load_handler("api"), resources)

    return start


@pytest.fixture
def api(api_with: Callable[..., Api]) -> Api:
    return api_with()


def admin(*argv: str) -> tuple[int, str, str]:
    """`jobgate keys ...` as an operator runs it; answers (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = admin_cli.main(["keys", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def create_key(tenant: str, *extra: str) -> str:
    code, out, err = admin("create", "--tenant", tenant, "--json", *extra)
    assert code == 0, err
    key: str = json.loads(out)["api_key"]
    return key


@pytest.fixture
def keys(api: Api) -> dict[str, str]:
    """Two tenants, each with its own key, made with the admin CLI against the stack's table."""
    return {"acme": create_key("acme", "--name", "ci"), "globex": create_key("globex", "--name", "ci")}


@pytest.fixture
def store(resources: Resources, api: Api) -> JobStore:
    return JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))


@pytest.fixture
def make_asset(store: JobStore, resources: Resources) -> Callable[..., str]:
    """An uploaded input of a tenant, as the upload flow leaves it: its object in S3, AVAILABLE."""

    def make(tenant: str, name: str = "field.npy", data: bytes = b"\x93NUMPY", media_type: str = "") -> str:
        asset_id = str(ULID())
        key = f"uploads/{tenant}/{asset_id}/{name}"
        media_type = media_type or "application/x-npy"
        boto3.client("s3").put_object(
            Bucket=resources.bucket_name, Key=key, Body=data, ContentType=media_type
        )
        store.put_asset(
            Asset(
                asset_id=asset_id,
                tenant=tenant,
                filename=name,
                media_type=media_type,
                size=len(data),
                status=AssetStatus.AVAILABLE,
                key=key,
                created_at=utcnow(),
            )
        )
        return asset_id

    return make


def assert_problem(answer: HttpAnswer, status: int, slug: str | None = None) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    if slug is not None:
        assert body["type"] == f"urn:jobgate:problem:{slug}"
    return body
