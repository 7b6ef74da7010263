"""Secrets for commands on the strict local AWS: read by the worker's role from moto's Secrets Manager
and SSM, given to the declaring command's child only, masked wherever the command prints them."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.errors import ValidationFailed
from jobgate.models import Job, JobRequest, JobStatus, utcnow
from jobgate.services.registry import Registry
from jobgate.settings import Settings
from jobgate.wiring import ApiServices, build_worker
from jobgate_local.identities import assume, create_roles, role_specs
from jobgate_local.template import load_template
from ulid import ULID

from tests.conftest import TEST_RESOURCES
from tests.support.aws import Resources
from tests.support.commands import Keyed, private_work_root
from tests.support.strict import TEMPLATE, StrictAws, calling_as, resolver_for

pytestmark = pytest.mark.timeout(120)

TOKEN = "tok-5f0c1d2e3a4b5c6d7e8f"
SHARED = "shared-9a8b7c6d5e4f"
UNGRANTED = "ungranted-1122334455"


@dataclasses.dataclass
class Secrets:
    token_arn: str
    shared_arn: str
    ungranted_arn: str
    worker: dict[str, str]  # the worker role's credentials, from the template with the two ARNs granted


@pytest.fixture
def secrets(aws: StrictAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Secrets]:
    root = private_work_root(monkeypatch)
    manager, ssm = boto3.client("secretsmanager"), boto3.client("ssm")
    suffix = str(ULID())[-8:].lower()
    token_arn = manager.create_secret(Name=f"jobgate/token-{suffix}", SecretString=TOKEN)["ARN"]
    ungranted_arn = manager.create_secret(Name=f"jobgate/other-{suffix}", SecretString=UNGRANTED)["ARN"]
    ssm.put_parameter(Name=f"/jobgate/shared-{suffix}", Value=SHARED, Type="SecureString")
    shared_arn = ssm.get_parameter(Name=f"/jobgate/shared-{suffix}")["Parameter"]["ARN"]
    # The worker's role as the template makes it when these two are mapped (not the third).
    template = load_template(
        TEMPLATE,
        {
            "ApiKey": "integration-test-key-0123456789",
            "CommandSecrets": f"DATA_TOKEN={token_arn},SHARED_KEY={shared_arn}",
            "CommandSecretArns": f"{token_arn},{shared_arn}",
        },
    )
    spec = role_specs(template, resolver_for(template, aws.endpoint_url, TEST_RESOURCES))["WorkerFunction"]
    spec = dataclasses.replace(spec, name=f"worker-secrets-{suffix}")
    create_roles(aws.endpoint_url, {"WorkerFunction": spec})
    yield Secrets(token_arn, shared_arn, ungranted_arn, assume(aws.endpoint_url, spec.arn, "worker-secrets"))
    shutil.rmtree(root, ignore_errors=True)


def _settings(resources: Resources, mapping: str) -> Settings:
    return Settings(
        table_name=resources.table_name,
        queue_url=resources.queue_url,
        bucket_name=resources.bucket_name,
        lease_s=10,
        warm_command_sets=False,
        command_secrets=mapping,
    )


def _run(resources: Resources, secrets: Secrets, mapping: str, command: str, printed: str) -> Job:
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    job = Job(
        job_id=str(ULID()),
        tenant="acme",
        stage="keyed",
        command=command,
        args={"print": printed},
        timeout_s=60,
        request_hash="h",
        created_at=utcnow(),
    )
    store.create(job)
    worker = build_worker(_settings(resources, mapping), Registry.from_command_sets([Keyed()]))
    with calling_as(secrets.worker):
        worker.handle(job.job_id, remaining_s=lambda: 120.0)
    return store.get(job.job_id)


def _everything_stored(resources: Resources) -> str:
    """Every item of the table (jobs, their events) and every object of the bucket, as text."""
    items = boto3.client("dynamodb").scan(TableName=resources.table_name)["Items"]
    s3 = boto3.client("s3")
    objects = s3.list_objects_v2(Bucket=resources.bucket_name).get("Contents", [])
    bodies = [s3.get_object(Bucket=resources.bucket_name, Key=o["Key"])["Body"].read() for o in objects]
    return json.dumps(items) + "".join(b.decode(errors="replace") for b in bodies)


def test_the_declaring_command_sees_its_secrets_masked_and_another_sees_only_the_shared_one(
    resources: Resources, secrets: Secrets, capfd: pytest.CaptureFixture[str]
) -> None:
    mapping = f"DATA_TOKEN={secrets.token_arn},SHARED_KEY={secrets.shared_arn}"
    done = _run(resources, secrets, mapping, "fetch", "DATA_TOKEN")

    assert done.status == JobStatus.SUCCEEDED, (done.error, done.stderr)
    names = done.stdout.splitlines()[0].split()
    assert {"DATA_TOKEN", "SHARED_KEY"} <= set(names)
    assert not any(name.startswith("AWS_") for name in names)
    # It printed the value (in two writes, apart): the log says *** where it was.
    assert "value: *** end" in done.stdout
    assert "also on stderr: ***" in done.stderr

    plain = _run(resources, secrets, mapping, "plain", "SHARED_KEY")
    assert plain.status == JobStatus.SUCCEEDED, (plain.error, plain.stderr)
    plain_names = plain.stdout.splitlines()[0].split()
    assert "SHARED_KEY" in plain_names and "DATA_TOKEN" not in plain_names
    assert "value: *** end" in plain.stdout

    stored = _everything_stored(resources)
    captured = capfd.readouterr()
    for value in (TOKEN, SHARED):
        assert value not in stored  # not in the records, their events, the logs uploaded
        assert value not in captured.out + captured.err  # nor in what the worker logged


def test_a_secret_the_role_may_not_read_fails_the_job_naming_it(
    resources: Resources, secrets: Secrets
) -> None:
    mapping = f"DATA_TOKEN={secrets.ungranted_arn},SHARED_KEY={secrets.shared_arn}"
    done = _run(resources, secrets, mapping, "fetch", "DATA_TOKEN")

    assert done.status == JobStatus.FAILED
    assert done.error is not None and done.error.type == "secret"
    assert "DATA_TOKEN" in done.error.message and "AccessDenied" in done.error.message
    assert done.stdout == ""  # the command never ran
    assert UNGRANTED not in _everything_stored(resources)


def test_a_job_needing_an_unconfigured_secret_is_refused_at_submit(resources: Resources) -> None:
    services = ApiServices(_settings(resources, ""), Registry.from_command_sets([Keyed()]))
    with pytest.raises(ValidationFailed) as refused:
        services.jobs.submit("acme", JobRequest(stage="keyed", command="plain", args={}))
    assert "SHARED_KEY" in refused.value.detail and refused.value.status == 422
    items: list[dict[str, Any]] = boto3.client("dynamodb").scan(TableName=resources.table_name)["Items"]
    assert items == []  # nothing written, nothing queued
