"""The README, run as a newcomer runs it: every `bash` and `python` block, in order, as written.

The checkout is copied as a fresh clone has it (its files, the project's virtualenv linked in), `make dev`
is started there as its first block says, and the other blocks run one after another in one shell in the
copy's root, as a reader types them in a second terminal: what one block exports, the next one sees, and
`jobgate` is on the PATH only once a block has put it there. The first command that fails fails the test,
naming its block.

Fences: `bash` (or `sh`, `shell`) and `python` blocks run; a block whose info string also says
`background` (`make dev`) is started and left running until the end; `skip` is not run (`make test`: this
very suite). Any other fence (`text`, `json`, `yaml`...) is for reading only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from jobgate_local.testing import free_port

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]

README = ROOT / "README.md"
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Blocks the README may keep from running, each named here with the reason, so that the list stays short.
SKIPPED_ON_PURPOSE = {"make test": "it is the test suite this test belongs to"}


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    flags: frozenset[str]
    code: str

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and "skip" not in self.flags


def readme_blocks(text: str) -> list[Block]:
    return [
        Block(
            line=text.count("\n", 0, match.start()) + 1,
            language=match.group(1).lower(),
            flags=frozenset(match.group(2).split()),
            code=match.group(3),
        )
        for match in FENCE.finditer(text)
    ]


def fresh_checkout(target: Path) -> Path:
    """The repository's files as a clone has them (committed or not yet, never ignored ones), with the
    project's virtualenv linked in as `make install` left it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)  # mtimes kept: make sees the virtualenv up to date
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def newcomer_environment(home: Path) -> dict[str, str]:
    """A shell as a newcomer's: no jobgate settings, no AWS account, no virtualenv on the PATH yet."""
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBGATE_", "AWS_", "PYTEST_", "VIRTUAL_ENV"))
        and k not in ("MAKEFLAGS", "MFLAGS")
    }
    env.update(
        PATH=path, HOME=str(home), JOBGATE_HTTP_PORT=str(free_port()), JOBGATE_WS_PORT=str(free_port())
    )
    return env


def script_for(blocks: list[Block]) -> str:
    """One bash script: each block after a marker line naming it; the first failing command ends it."""
    parts = ["set -eo pipefail"]
    for number, block in enumerate(blocks, 1):
        marker = f"::readme block {number} (README.md line {block.line})::"
        parts.append(f"echo '{marker}'; echo '{marker}' >&2")
        if RUNNABLE[block.language] == "python":
            parts.append(f"python - <<'README_PYTHON_BLOCK'\n{block.code}README_PYTHON_BLOCK")
        else:
            parts.append(block.code)
    parts.append("echo '::readme done::'")
    return "\n".join(parts) + "\n"


def wait_for_state(checkout: Path, dev: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (checkout / ".jobgate" / "dev.json").exists():
        assert dev.poll() is None, f"make dev exited with {dev.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"make dev was not up after {timeout:.0f} s:\n{log.read_text()}"
        time.sleep(0.2)


def test_the_readme_marks_few_blocks_as_not_run() -> None:
    blocks = readme_blocks(README.read_text())
    skipped = [b.code.strip() for b in blocks if b.language in RUNNABLE and not b.runs]
    assert all(any(code.startswith(name) for name in SKIPPED_ON_PURPOSE) for code in skipped), skipped
    assert sum(b.runs for b in blocks) >= 6
    background = [b for b in blocks if "background" in b.flags]
    assert [b.code.split()[:2] for b in background] == [["make", "dev"]]
    assert blocks.index(background[0]) == 0, "make dev is the first block: every other one needs it"


def test_no_curl_in_the_readme_sends_the_api_key_across_a_redirect() -> None:
    """`curl -L -H "X-API-Key: ..."` hands the key to whatever host the redirect names (S3's)."""
    commands = re.split(r"(?<!\\)\n", README.read_text())
    for command in commands:
        if re.search(r"\bcurl\b", command) and "X-API-Key" in command:
            assert not re.search(r"\s(-[a-zA-Z]*L[a-zA-Z]*|--location)\b", command), command


def test_every_block_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    checkout = fresh_checkout(tmp_path / "jobgate")
    env = newcomer_environment(tmp_path / "home")
    (tmp_path / "home").mkdir()
    up_to_date = subprocess.run(
        ["make", "-q", ".venv/.installed"], cwd=checkout, env=env, capture_output=True
    )
    if up_to_date.returncode != 0:
        pytest.fail("the virtualenv is older than pyproject.toml: run `make install` first")

    blocks = [b for b in readme_blocks(README.read_text()) if b.runs]
    background, rest = blocks[0], blocks[1:]
    assert "background" in background.flags
    log = tmp_path / "make-dev.log"
    with log.open("wb") as sink:
        dev = subprocess.Popen(
            ["bash", "-c", background.code],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C at the end reaches make and what it started, as in a terminal
        )
    try:
        wait_for_state(checkout, dev, log, timeout=180)
        done = subprocess.run(
            ["bash", "-c", script_for(rest)],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        markers = re.findall(r"^::readme block .*::$", done.stdout, re.MULTILINE)
        where = markers[-1] if markers else "before the first block"
        assert done.returncode == 0 and done.stdout.rstrip().endswith("::readme done::"), (
            f"{where} failed with exit status {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n"
            f"--- stderr\n{done.stderr[-4000:]}\n--- make dev\n{log.read_text()[-3000:]}"
        )
        assert (checkout / "map.png").read_bytes().startswith(b"\x89PNG")
        assert (checkout / "out" / "map.png").read_bytes().startswith(b"\x89PNG")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=10)
    # The shell, make and jobgate dev all got the Ctrl-C; jobgate dev stopped cleanly, and saved.
    assert dev.returncode in (0, 2, 130, -signal.SIGINT), log.read_text()
    assert "saved to" in log.read_text()
