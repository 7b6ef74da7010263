"""Secrets for commands on the local stack: an operator installs a command set (`keyed`, a distribution
with an entry point, on the stack's PYTHONPATH) and maps its secrets to SSM parameters; the command that
declares a secret sees it, masked wherever it prints it, and another command of the set does not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from jobgate_local.strict import ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY
from jobgate_local.testing import DevProcess

from tests.e2e.conftest import DATA_TOKEN_ARN, SHARED_KEY_ARN
from tests.e2e.test_stack_jobs import wait_until

pytestmark = [pytest.mark.e2e]
TOKEN = "tok-e2e-7d1c9a0b5e3f2468"
SHARED = "shared-e2e-0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def client(egress_stack: DevProcess) -> Iterator[httpx.Client]:
    ssm = boto3.client(
        "ssm",
        endpoint_url=egress_stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_ACCESS_KEY,
        aws_secret_access_key=ADMIN_SECRET_KEY,
    )
    for arn, value in ((DATA_TOKEN_ARN, TOKEN), (SHARED_KEY_ARN, SHARED)):  # the operator's two parameters
        name = arn.split(":parameter", 1)[1]
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    with httpx.Client(
        base_url=egress_stack.http_url, headers={"X-API-Key": egress_stack.api_key}, timeout=60
    ) as http:
        yield http


def _run(client: httpx.Client, command: str, printed: str) -> dict[str, Any]:
    body = {"stage": "keyed", "command": command, "args": {"print": printed}}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] not in ("queued", "running"), 60)
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    return job


def _logs(client: httpx.Client, job: dict[str, Any]) -> str:
    """The job's whole stored stdout and stderr (a large log's answer redirects to S3)."""
    return "".join(
        client.get(f"/v1/jobs/{job['job_id']}/logs", params={"stream": stream}, follow_redirects=True).text
        for stream in ("stdout", "stderr")
    )


def test_the_declaring_command_sees_its_secret_masked_and_another_command_does_not(
    client: httpx.Client,
) -> None:
    declared = [client.get(f"/v1/commands/keyed/{name}").json()["secrets"] for name in ("fetch", "plain")]
    assert declared == [["DATA_TOKEN", "SHARED_KEY"], ["SHARED_KEY"]]

    fetched = _run(client, "fetch", "DATA_TOKEN")
    seen = fetched["stdout"].splitlines()[0].split()
    assert {"DATA_TOKEN", "SHARED_KEY"} <= set(seen)
    assert "value: *** end" in fetched["stdout"]  # printed in two halves, masked whole
    assert "also on stderr: ***" in fetched["stderr"]

    plain = _run(client, "plain", "DATA_TOKEN")
    seen = plain["stdout"].splitlines()[0].split()
    assert "SHARED_KEY" in seen and "DATA_TOKEN" not in seen
    assert "value:  end" in plain["stdout"]  # it has no such variable

    shared = _run(client, "plain", "SHARED_KEY")
    assert "value: *** end" in shared["stdout"]
    for job in (fetched, plain, shared):  # nowhere a client can read: the record, the stored logs
        assert TOKEN not in str(job) + _logs(client, job)
        assert SHARED not in str(job) + _logs(client, job)
