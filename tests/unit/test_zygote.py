"""The zygote runs a job as a child forked from the caller would run, from a process that holds nothing of
the worker's; it ends every process a job started; it is replaced when it dies."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobgate.errors import CommandSetUnavailable, RunnerUnavailable
from jobgate.services.executor import ExecResult, Watch, execute
from jobgate.services.zygote import Zygote

from tests.support.commands import Probes, _memory_holds

pytestmark = pytest.mark.timeout(60)

PROBES = "tests.support.commands:Probes"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "JOB_ID": "01J0TESTJOB"}
_PR_GET_DUMPABLE = 3


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    zygote = Zygote([PROBES], warm=False)
    zygote.wait_ready()
    yield zygote
    zygote.close()


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A work folder the job's user can reach (a pytest tmp_path may sit in a folder only root enters)."""
    root = Path(tempfile.mkdtemp(prefix="jobgate-zygote-test-"))
    root.chmod(0o755)
    (root / "work").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_in(zygote: Zygote, folder: Path, argv: list[str], **watch: Any) -> ExecResult:
    watch.setdefault("timeout_s", 20.0)
    return zygote.run(
        "probes",
        argv,
        workdir=folder / "work",
        env=ENV,
        stdout_path=folder / "zygote.out",
        stderr_path=folder / "zygote.err",
        watch=Watch(**watch),
    )


def run_forked(folder: Path, argv: list[str]) -> ExecResult:
    (folder / "forked").mkdir(exist_ok=True)
    return execute(
        Probes().run,
        argv,
        workdir=folder / "forked",
        env=ENV,
        timeout_s=20.0,
        stdout_path=folder / "forked.out",
        stderr_path=folder / "forked.err",
    )


def gone(pid: int, within_s: float = 2.0) -> bool:
    give_up_at = time.monotonic() + within_s
    while time.monotonic() < give_up_at:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


# -- the same job as a forked child would run ----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["hello", "3"],
        ["exit_with", '"no such stage: rendr"'],
        ["segfault"],
        ["log_with_basic_config", "out.png"],
    ],
    ids=["exit-code", "sys-exit-message", "signal", "logging"],
)
def test_a_job_ends_and_writes_as_a_child_forked_from_the_caller(
    zygote: Zygote, folder: Path, argv: list[str]
) -> None:
    forked = run_forked(folder, argv)
    ours = run_in(zygote, folder, argv)

    assert (ours.exit_code, ours.signal_name) == (forked.exit_code, forked.signal_name)
    assert (folder / "zygote.out").read_bytes() == (folder / "forked.out").read_bytes()
    assert (folder / "zygote.err").read_bytes() == (folder / "forked.err").read_bytes()
    assert (ours.stdout_bytes, ours.stderr_bytes) == (forked.stdout_bytes, forked.stderr_bytes)


def test_an_exception_is_a_traceback_on_stderr_and_exit_1(zygote: Zygote, folder: Path) -> None:
    result = run_in(zygote, folder, ["fail"])

    stderr = (folder / "zygote.err").read_text()
    assert result.exit_code == 1
    assert stderr.startswith("Traceback (most recent call last):")
    assert stderr.endswith("ValueError: input grid has no rows\n")


def test_the_job_sees_its_folder_its_environment_default_signals_and_no_stdin(
    zygote: Zygote, folder: Path
) -> None:
    result = run_in(zygote, folder, ["surroundings"])

    seen = json.loads((folder / "zygote.out").read_text())
    assert result.exit_code == 0
    assert seen["cwd"] == os.path.realpath(folder / "work")
    assert seen["env"] == ENV
    assert seen["default_handlers"] == dict.fromkeys(["SIGTERM", "SIGINT", "SIGPIPE", "SIGCHLD"], True)
    assert seen["blocked"] == []
    assert seen["stdin"] == ""
    assert (folder / "work" / "written-by-the-job.txt").read_text() == "ok\n"
    if zygote.job_user is not None:
        assert (seen["uid"], seen["gid"], seen["groups"]) == (*zygote.job_user, [])


def test_timeout_and_kill_reach_the_job(zygote: Zygote, folder: Path) -> None:
    result = run_in(zygote, folder, ["ignore_sigterm"], timeout_s=0.3, kill_grace_s=0.3)

    assert result.timed_out
    assert (result.exit_code, result.signal_name) == (137, "SIGKILL")
    assert 0.6 <= result.duration_s < 2.0


def test_every_process_the_job_started_is_killed_when_it_ends(zygote: Zygote, folder: Path) -> None:
    result = run_in(zygote, folder, ["spawn_descendants"])

    assert result.exit_code == 0
    pids = json.loads((folder / "zygote.out").read_text())
    assert pids["parent"] == zygote.pid
    for name in ("job", "in_group", "new_session", "daemon"):
        assert gone(pids[name], within_s=0.2), name  # gone before run() returned


def test_an_unknown_command_set_is_refused(zygote: Zygote, folder: Path) -> None:
    with pytest.raises(CommandSetUnavailable):
        zygote.run(
            "zyra-not-here",
            ["x"],
            workdir=folder / "work",
            env=ENV,
            stdout_path=folder / "o",
            stderr_path=folder / "e",
            watch=Watch(timeout_s=5.0),
        )


# -- what the zygote holds ---------------------------------------------------------------------------------


def test_the_zygote_holds_nothing_of_the_workers_environment(
    monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    monkeypatch.setenv("JOBGATE_API_KEY", "bootstrap-secret")
    zygote = Zygote([PROBES], warm=False)
    try:
        zygote.wait_ready()
        assert zygote.pid is not None
        environ = Path(f"/proc/{zygote.pid}/environ").read_bytes()
        assert b"AWS_" not in environ and b"JOBGATE_" not in environ and b"secret" not in environ
        assert _dumpable() == 0  # the caller, once it has started one
    finally:
        zygote.close()


def _dumpable() -> int:
    return int(ctypes.CDLL(None).prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root here")
def test_no_job_leaves_its_arguments_or_environment_in_the_zygote(zygote: Zygote, folder: Path) -> None:
    marker = f"tenant-a-private-{os.urandom(8).hex()}"
    env = {**ENV, "SECRET_OF_THIS_JOB": marker}
    result = zygote.run(
        "probes",
        ["dump_env", marker],
        workdir=folder / "work",
        env=env,
        stdout_path=folder / "o",
        stderr_path=folder / "e",
        watch=Watch(timeout_s=10.0),
    )
    assert result.exit_code == 0 and marker in (folder / "o").read_text()

    pattern = [re.compile(marker.encode())]
    assert _memory_holds(os.getpid(), pattern)  # the search works: this process holds the marker
    assert zygote.pid is not None
    spares = [int(p) for p in Path(f"/proc/{zygote.pid}/task/{zygote.pid}/children").read_text().split()]
    for pid in [zygote.pid, *spares]:
        assert not _memory_holds(pid, pattern), pid


# -- when the zygote goes ---------------------------------------------------------------------------------


def test_a_zygote_killed_during_a_job_fails_that_run_and_the_next_run_gets_a_new_one(folder: Path) -> None:
    zygote = Zygote([PROBES], warm=False)
    try:
        zygote.wait_ready()
        first = zygote.pid
        pid_file = folder / "work" / "pids.json"

        def kill_the_zygote() -> None:
            while not pid_file.exists():
                time.sleep(0.01)
            os.kill(json.loads(pid_file.read_text())["parent"], signal.SIGKILL)

        killer = threading.Thread(target=kill_the_zygote, daemon=True)
        killer.start()
        started = time.monotonic()
        with pytest.raises(RunnerUnavailable):
            run_in(zygote, folder, ["sleep", "30", str(pid_file)])
        assert time.monotonic() - started < 5.0
        killer.join(1)
        assert gone(json.loads(pid_file.read_text())["job"])  # it died with its zygote

        pid_file.unlink()
        result = run_in(zygote, folder, ["hello"])
        assert result.exit_code == 0
        assert zygote.pid is not None and zygote.pid != first
    finally:
        zygote.close()


def test_a_command_set_that_fails_to_warm_fails_the_start_with_its_error() -> None:
    zygote = Zygote(["tests.support.commands:BrokenWarm"], warm=True)
    with pytest.raises(RunnerUnavailable, match="cannot render here"):
        zygote.wait_ready()
    assert zygote.pid is None


def test_a_stuck_zygote_cannot_hold_the_job_past_its_timeout_or_the_worker_for_ever(folder: Path) -> None:
    zygote = Zygote([PROBES], warm=False, answer_timeout_s=1.0)
    try:
        zygote.wait_ready()
        pid_file = folder / "work" / "pids.json"

        def stop_the_zygote() -> None:
            while not pid_file.exists():
                time.sleep(0.01)
            os.kill(json.loads(pid_file.read_text())["parent"], signal.SIGSTOP)

        stopper = threading.Thread(target=stop_the_zygote, daemon=True)
        stopper.start()
        started = time.monotonic()
        with pytest.raises(RunnerUnavailable, match="no answer"):
            run_in(zygote, folder, ["sleep", "30", str(pid_file)], timeout_s=0.5, kill_grace_s=0.2)
        assert time.monotonic() - started < 4.0  # the timeout's kill, then one second for the reap
        assert gone(json.loads(pid_file.read_text())["job"])
        assert zygote.pid is None  # the stuck one was killed; the next run starts another
    finally:
        zygote.close()


@pytest.mark.parametrize("listing", ["children files", "every process's stat"])
def test_the_children_of_a_process_are_found_with_or_without_children_files(
    listing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobgate.services import zygote_process

    if listing != "children files":
        real = Path.read_text

        def no_children_files(self: Path, *args: Any, **kwargs: Any) -> str:
            if self.name == "children":
                raise FileNotFoundError(self)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", no_children_files)
    child = subprocess.Popen(["sleep", "10"])
    try:
        assert child.pid in zygote_process._children()
    finally:
        child.kill()
        child.wait()
