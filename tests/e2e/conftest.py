"""The local stack for the e2e suite: `jobgate dev` started once, as a user starts it, stopped with Ctrl-C."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jobgate_local.testing import DevProcess, launch_dev

ROOT = Path(__file__).resolve().parents[2]
E2E_API_KEY = "e2e-test-key-0123456789abcdef"
HANDLERS = [ROOT / "functions" / name / "app.py" for name in ("api", "worker", "assets", "deadletter")]


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    """`jobgate dev` on free ports with the repository's template and handlers; its state file, parsed."""
    missing = [str(path.relative_to(ROOT)) for path in HANDLERS if not path.exists()]
    assert not missing, f"handlers missing: {', '.join(missing)}"
    dev = launch_dev(
        template=ROOT / "template.yaml",
        workdir=tmp_path_factory.mktemp("jobgate-dev"),
        env={**os.environ, "JOBGATE_DEV_API_KEY": E2E_API_KEY},
        timeout=180,
    )
    children = dev.child_pids()
    yield dev
    assert dev.stop() == 0, dev.log()
    assert dev.leftover_pids(children) == [], "jobgate dev left processes behind"


@pytest.fixture(scope="session")
def egress_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    """A local stack whose commands may reach loopback (EgressAllowList), so a job can hang on purpose
    (the CLI's and the container runner's tests share it)."""
    dev = launch_dev(
        template=ROOT / "template.yaml",
        workdir=tmp_path_factory.mktemp("jobgate-dev-egress"),
        args=["--param", "EgressAllowList=127.0.0.0/8"],
        env={**os.environ, "JOBGATE_DEV_API_KEY": E2E_API_KEY},
        timeout=180,
    )
    yield dev
    assert dev.stop() == 0, dev.log()


@pytest.fixture(scope="session")
def api(local_stack: DevProcess) -> Iterator[httpx.Client]:
    """An HTTP client on the local API, sending the dev API key."""
    with httpx.Client(
        base_url=local_stack.http_url, headers={"X-API-Key": local_stack.api_key}, timeout=60
    ) as client:
        yield client
