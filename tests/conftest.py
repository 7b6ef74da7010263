"""Fixtures for every suite: AWS in-process (moto), small data files made by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jobgate.adapters import aws as aws_clients
from moto import mock_aws

from tests.support.aws import Resources, create_resources

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """An in-process moto for one test; our cached clients are rebuilt inside it."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    # A worker empties its work folder at cold start: each test's workers have their own.
    monkeypatch.setenv("JOBGATE_WORK_ROOT", str(tmp_path / "jobgate-work"))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    aws_clients.reset_clients()
    with mock_aws():
        yield
    aws_clients.reset_clients()


@pytest.fixture
def resources(aws: None) -> Resources:
    return create_resources()


@pytest.fixture
def npy_file(tmp_path: Path) -> Path:
    """A small 2-D field, as a user would upload for a heatmap."""
    path = tmp_path / "field.npy"
    y, x = np.mgrid[0:24, 0:48]
    np.save(path, np.sin(x / 6.0) * np.cos(y / 5.0))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode, in its own process, for tests that need real HTTP (presigned URLs)."""
    import subprocess
    import sys
    import time

    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def http_aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS calls of this test go to the moto server over real HTTP."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    aws_clients.reset_clients()
    yield moto_endpoint
    aws_clients.reset_clients()
