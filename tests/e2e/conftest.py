"""The local stack for the e2e suite: `jobgate dev` started once, as a user starts it, stopped with Ctrl-C."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jobgate.commandsets.manifest import export
from jobgate_local.functions import ACCOUNT_ID
from jobgate_local.testing import DevProcess, launch_dev

from tests.support.commands import Keyed

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


# Where the egress stack's operator keeps the secrets of the `keyed` command set: SSM parameters, whose
# ARNs are known before they exist (a Secrets Manager ARN ends in a random suffix), so the stack can be
# started with them mapped and the tests put the values in.
DATA_TOKEN_ARN = f"arn:aws:ssm:us-east-1:{ACCOUNT_ID}:parameter/jobgate/e2e/data-token"
SHARED_KEY_ARN = f"arn:aws:ssm:us-east-1:{ACCOUNT_ID}:parameter/jobgate/e2e/shared-key"


def install_command_set(site: Path, name: str, target: str) -> Path:
    """A distribution declaring one command set (`jobgate.command_sets` entry point), installed into
    `site` as pip would: how an operator adds a command set; a folder to put on PYTHONPATH."""
    info = site / f"jobgate_{name}_set-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: jobgate-{name}-set\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[jobgate.command_sets]\n{name} = {target}\n")
    for folder in (site, info):  # readable by the user jobs run as (JOBGATE_JOB_UID) when tests run as root
        folder.chmod(0o755)
    return site


@pytest.fixture(scope="session")
def egress_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    """A local stack whose commands may reach loopback (EgressAllowList), so a job can hang on purpose,
    with the test command set `keyed` installed and its two secrets mapped to SSM parameters (the CLI's,
    the container runner's and the command secrets' tests share it)."""
    site = install_command_set(tmp_path_factory.mktemp("site"), "keyed", "tests.support.commands:Keyed")
    manifests = tmp_path_factory.mktemp("manifests")  # the set's contracts, for the API (which imports none)
    export(manifests, [Keyed()])
    mapping = f"DATA_TOKEN={DATA_TOKEN_ARN},SHARED_KEY={SHARED_KEY_ARN}"
    pythonpath = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    dev = launch_dev(
        template=ROOT / "template.yaml",
        workdir=tmp_path_factory.mktemp("jobgate-dev-egress"),
        args=[
            *("--param", "EgressAllowList=127.0.0.0/8"),
            *("--param", f"CommandSecrets={mapping}"),
            *("--param", f"CommandSecretArns={DATA_TOKEN_ARN},{SHARED_KEY_ARN}"),
            *("--env", f"JOBGATE_MANIFEST_DIRS={manifests}"),
        ],
        env={**os.environ, "JOBGATE_DEV_API_KEY": E2E_API_KEY, "PYTHONPATH": pythonpath},
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
