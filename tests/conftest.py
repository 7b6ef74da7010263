"""Fixtures for every suite: the local AWS (the strict moto server, as `jobgate dev` runs it), small data
files made by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jobgate.adapters import aws as aws_clients

from tests.support import strict
from tests.support.aws import Resources, create_resources
from tests.support.strict import StrictAws, start_strict_aws

FAKE_AWS_ENV = {
    **strict.ADMIN,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# The names create_resources() gives the template's resources; the functions' roles are made for them.
TEST_RESOURCES = {
    "JobsTable": "jobs-test",
    "JobsQueue": "jobs-test",
    "JobsDeadLetterQueue": "jobs-dlq-test",
    "DataBucket": "jobgate-data-test",
}


@pytest.fixture(scope="session")
def strict_aws() -> Iterator[StrictAws]:
    """The strict local AWS for the whole session, with every function's role from template.yaml."""
    yield from start_strict_aws(TEST_RESOURCES)


@pytest.fixture
def aws(strict_aws: StrictAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StrictAws]:
    """An empty local AWS for one test. The test's own calls sign as the admin identity; handlers loaded
    with tests.support.lambdas.load_handler call as their functions' roles."""
    strict_aws.reset()
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", strict_aws.endpoint_url)
    # A worker empties its work folder at cold start: each test's workers have their own.
    monkeypatch.setenv("JOBGATE_WORK_ROOT", str(tmp_path / "jobgate-work"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(aws_clients, "_session", strict.switching_session)
    strict.use(strict_aws)
    yield strict_aws
    strict.use(None)


@pytest.fixture
def resources(aws: StrictAws) -> Resources:
    return create_resources()


@pytest.fixture
def aws_faults(aws: StrictAws) -> Iterator[StrictAws]:
    """Fault injection for this test: call ``aws_faults.faults(rate=..., kinds=[...])``; off afterwards."""
    yield aws
    aws.faults(rate=0.0)


@pytest.fixture
def npy_file(tmp_path: Path) -> Path:
    """A small 2-D field, as a user would upload for a heatmap."""
    path = tmp_path / "field.npy"
    y, x = np.mgrid[0:24, 0:48]
    np.save(path, np.sin(x / 6.0) * np.cos(y / 5.0))
    return path


@pytest.fixture
def http_aws(aws: StrictAws) -> str:
    """The local AWS's endpoint, for tests that need real HTTP (presigned URLs)."""
    return aws.endpoint_url
