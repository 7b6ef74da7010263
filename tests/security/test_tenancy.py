"""Tenancy: another tenant's job, asset, log, output or download is as unknown as one that never existed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
import pytest
from jobgate.adapters.dynamo import JobStore
from jobgate.models import JobResult, JobStatus, Output, utcnow
from jobgate.services.jobs import log_key, output_key

from tests.security.conftest import Api, assert_problem
from tests.support.lambdas import HttpAnswer

UNKNOWN_ID = "01JD7Q9A1B2C3D4E5F6G7H8J9K"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class Owned:
    """What tenant acme owns: a finished job with a log and an output, and an uploaded asset."""

    job_id: str
    asset_id: str


def _finish(store: JobStore, api: Api, job_id: str, tenant: str) -> None:
    """Leave the job as a worker does: running, then succeeded, with its output and logs in S3."""
    job = store.get(job_id)
    now = utcnow()
    job = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    s3 = boto3.client("s3")
    bucket = api.resources.bucket_name
    s3.put_object(
        Bucket=bucket,
        Key=output_key(tenant, job_id, job.attempts, "map.png"),
        Body=PNG,
        ContentType="image/png",
    )
    for stream in ("stdout", "stderr"):
        s3.put_object(
            Bucket=bucket, Key=log_key(tenant, job_id, job.attempts, stream), Body=b"acme's secret log line\n"
        )
    result = JobResult(
        status=JobStatus.SUCCEEDED,
        exit_code=0,
        stdout_tail="acme's secret log line\n",
        stderr_tail="",
        outputs=[Output(name="map.png", size=len(PNG), media_type="image/png")],
    )
    store.finish(job, attempt=job.attempts, result=result, now=utcnow())


@pytest.fixture
def owned(api: Api, keys: dict[str, str], store: JobStore, make_asset: Callable[..., str]) -> Owned:
    asset_id = make_asset("acme")
    body = {
        "stage": "visualize",
        "command": "heatmap",
        "args": {"input": f"asset://{asset_id}", "output": "map.png"},
        "run_id": "nightly-1",
    }
    submitted = api.call("POST", "/v1/jobs", keys["acme"], body=body)
    assert submitted.status == 202, submitted.body
    job_id = submitted.json()["job_id"]
    _finish(store, api, job_id, "acme")
    return Owned(job_id=job_id, asset_id=asset_id)


def _reads(owned: Owned) -> list[tuple[str, str, dict[str, Any]]]:
    """Every request that reads or changes one job or asset, as (method, path, call kwargs)."""
    job, asset = owned.job_id, owned.asset_id
    return [
        ("GET", f"/v1/jobs/{job}", {}),
        ("GET", f"/v1/jobs/{job}/logs", {"query": {"stream": "stdout"}}),
        ("GET", f"/v1/jobs/{job}/logs", {"query": {"stream": "stderr"}}),
        ("GET", f"/v1/jobs/{job}/outputs", {}),
        ("GET", f"/v1/jobs/{job}/download", {}),
        ("GET", f"/v1/jobs/{job}/download", {"query": {"name": "map.png"}}),
        ("DELETE", f"/v1/jobs/{job}", {}),
        ("GET", f"/v1/assets/{asset}", {}),
        ("GET", f"/v1/assets/{asset}/download", {}),
        ("POST", f"/v1/uploads/{asset}/complete", {"body": {"parts": [{"part_number": 1, "etag": "x"}]}}),
    ]


def _same_as_unknown(answer: HttpAnswer, unknown: HttpAnswer, real_id: str) -> None:
    """The answer for another tenant's id, with the id swapped, is the answer for an unknown id."""
    body = assert_problem(answer, 404, "not-found")
    expected = assert_problem(unknown, 404, "not-found")
    swapped = {k: v.replace(real_id, UNKNOWN_ID) if isinstance(v, str) else v for k, v in body.items()}
    assert swapped == expected
    assert set(answer.headers) == set(unknown.headers)


def test_the_owner_reads_everything(api: Api, keys: dict[str, str], owned: Owned) -> None:
    # Without this, the 404s below could come from a broken fixture rather than from tenancy.
    expected = {
        f"/v1/jobs/{owned.job_id}": 200,
        f"/v1/jobs/{owned.job_id}/logs": 200,
        f"/v1/jobs/{owned.job_id}/outputs": 200,
        f"/v1/jobs/{owned.job_id}/download": 307,
        f"/v1/assets/{owned.asset_id}": 200,
        f"/v1/assets/{owned.asset_id}/download": 307,
    }
    for path, status in expected.items():
        assert api.call("GET", path, keys["acme"]).status == status, path
    logs = api.call("GET", f"/v1/jobs/{owned.job_id}/logs", keys["acme"])
    assert b"acme's secret log line" in logs.body


def test_another_tenant_gets_404_for_each_job_and_asset_endpoint(
    api: Api, keys: dict[str, str], owned: Owned
) -> None:
    for method, path, kwargs in _reads(owned):
        answer = api.call(method, path, keys["globex"], **kwargs)
        real_id = owned.job_id if path.startswith("/v1/jobs/") else owned.asset_id
        unknown = api.call(method, path.replace(real_id, UNKNOWN_ID), keys["globex"], **kwargs)
        _same_as_unknown(answer, unknown, real_id)
        assert b"acme" not in answer.body and b"secret" not in answer.body, path
    # The DELETE changed nothing: acme's job is still its finished self.
    assert api.call("GET", f"/v1/jobs/{owned.job_id}", keys["acme"]).json()["status"] == "succeeded"


def test_another_tenants_asset_cannot_be_a_job_input(api: Api, keys: dict[str, str], owned: Owned) -> None:
    queued = api.queued_messages()
    body = {"stage": "visualize", "command": "heatmap", "args": {"input": f"asset://{owned.asset_id}"}}
    answer = api.call(
        "POST", "/v1/jobs", keys["globex"], body={**body, "args": {**body["args"], "output": "m.png"}}
    )
    problem = assert_problem(answer, 404, "not-found")
    assert owned.asset_id in problem["detail"] and "does not exist" in problem["detail"]
    assert api.queued_messages() == queued


def test_lists_hold_only_the_callers_own(api: Api, keys: dict[str, str], owned: Owned) -> None:
    assert api.call("GET", "/v1/jobs", keys["globex"]).json()["items"] == []
    succeeded = api.call("GET", "/v1/jobs", keys["globex"], query={"status": "succeeded"})
    assert succeeded.json()["items"] == []
    assert api.call("GET", "/v1/assets", keys["globex"]).json()["items"] == []
    # The owner's lists do hold them.
    assert [j["job_id"] for j in api.call("GET", "/v1/jobs", keys["acme"]).json()["items"]] == [owned.job_id]
    assets = api.call("GET", "/v1/assets", keys["acme"]).json()["items"]
    assert [a["asset_id"] for a in assets] == [owned.asset_id]


def test_a_cursor_from_another_tenants_list_is_refused(
    api: Api, keys: dict[str, str], owned: Owned, make_asset: Callable[..., str]
) -> None:
    make_asset("acme")
    page = api.call("GET", "/v1/assets", keys["acme"], query={"limit": "1"}).json()
    assert page["next_cursor"]
    answer = api.call("GET", "/v1/assets", keys["globex"], query={"cursor": page["next_cursor"]})
    assert_problem(answer, 422, "validation")
    body = {"stage": "visualize", "command": "heatmap", "args": {"output": "second.png"}}
    assert api.call("POST", "/v1/jobs", keys["acme"], body=body).status == 202
    jobs_page = api.call("GET", "/v1/jobs", keys["acme"], query={"limit": "1"}).json()
    assert jobs_page["next_cursor"]
    answer = api.call("GET", "/v1/jobs", keys["globex"], query={"cursor": jobs_page["next_cursor"]})
    assert_problem(answer, 422, "validation")


def test_a_run_id_is_per_tenant(api: Api, keys: dict[str, str], owned: Owned) -> None:
    # globex reuses acme's run_id with another request: a new job of its own, not a 409 naming acme's.
    body = {
        "stage": "visualize",
        "command": "heatmap",
        "args": {"output": "other.png"},
        "run_id": "nightly-1",
    }
    answer = api.call("POST", "/v1/jobs", keys["globex"], body=body)
    assert answer.status == 202, answer.body
    assert answer.json()["job_id"] != owned.job_id
    assert owned.job_id.encode() not in answer.body


def test_presigned_links_point_into_the_owners_prefix_only(
    api: Api, keys: dict[str, str], owned: Owned
) -> None:
    (output,) = api.call("GET", f"/v1/jobs/{owned.job_id}/outputs", keys["acme"]).json()["items"]
    assert f"/results/acme/{owned.job_id}/a1/map.png" in output["url"]
    location = api.call("GET", f"/v1/assets/{owned.asset_id}/download", keys["acme"]).headers["location"]
    assert re.search(rf"/uploads/acme/{owned.asset_id}/", location)
