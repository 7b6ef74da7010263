"""`jobgate dev --faults 0.05`: the README's curl session, as written there, runs to the end while 5 % of
the functions' AWS calls fail as AWS calls fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jobgate_local.testing import DevProcess, launch_dev

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]

ROOT = Path(__file__).resolve().parents[2]
KEY = "faults-e2e-key-0123456789abcdef"
# Every kind, `timeout` included: the API's AWS calls give up on a held answer after their 2 s read
# timeout and never run past the request's deadline (jobgate.adapters.aws), so no answer outlasts 29 s.
KINDS = "throttle,error,reset,drop,timeout,slow"
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def readme_session() -> tuple[str, str]:
    """The README's "A job with curl" block, cut before step 4 (a user reads the job before fetching)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## A job with curl", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    # The lines that find the stack of the checkout: the test hands its own stack's API and KEY.
    own = ('eval "$(jobgate dev env)"', "API=$JOBGATE_URL")
    lines = [line for line in block.splitlines() if not line.startswith(own)]
    script = "\n".join(lines)
    steps, _, fetch = script.partition("# 4.")
    return steps, "# 4." + fetch


@pytest.fixture(scope="module")
def faulty_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    dev = launch_dev(
        template=ROOT / "template.yaml",
        workdir=tmp_path_factory.mktemp("jobgate-dev-faults"),
        args=[
            "--faults",
            "0.05",
            "--faults-kinds",
            KINDS,
            "--faults-seed",
            "7",
            "--workers",
            "1",
            "--api-concurrency",
            "2",
        ],
        env={**os.environ, "JOBGATE_DEV_API_KEY": KEY},
        timeout=180,
    )
    yield dev
    assert dev.stop() == 0, dev.log()[-5000:]


def _bash(script: str, folder: Path, dev: DevProcess) -> subprocess.CompletedProcess[str]:
    # python3 in the session is the project's (numpy for step 1), as after `make install`.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "API": dev.http_url, "KEY": dev.api_key, "PATH": path}
    command = ["bash", "-eo", "pipefail", "-c", script]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def _injected(dev: DevProcess) -> int:
    return sum(dev.faults()["injected"].values())


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's session uses curl")
def test_the_readme_session_runs_to_the_end_while_aws_calls_fail(
    faulty_stack: DevProcess, tmp_path: Path
) -> None:
    steps, fetch = readme_session()
    sessions = 0
    while sessions < 6 and (sessions < 1 or _injected(faulty_stack) < 2):
        sessions += 1
        folder = tmp_path / f"session-{sessions}"
        folder.mkdir()
        ran = _bash(steps, folder, faulty_stack)
        assert ran.returncode == 0, (ran.stdout, ran.stderr, faulty_stack.log()[-5000:])
        job = json.loads((folder / "job.json").read_text())
        deadline = time.monotonic() + 180
        while job["status"] not in TERMINAL:  # sync mode waits 25 s at most; then a user polls
            assert time.monotonic() < deadline, job
            time.sleep(1)
            url = f"{faulty_stack.http_url}/v1/jobs/{job['job_id']}"
            job = httpx.get(url, headers={"X-API-Key": KEY}).json()
        assert job["status"] == "succeeded", job
        fetched = _bash(fetch.replace("$JOB", job["job_id"]), folder, faulty_stack)
        assert fetched.returncode == 0, (fetched.stdout, fetched.stderr)
        assert "map.png" in fetched.stdout  # the stderr log, as step 4 prints it
        assert (folder / "map.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert _injected(faulty_stack) >= 2, "too few faults were injected to say anything"
