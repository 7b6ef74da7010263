"""The executor runs a command in a forked child: output, exit codes, timeout, cancel, isolation."""

from __future__ import annotations

import errno
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from jobgate.services.executor import ExecResult, Target, execute

# A hang (a deadlock on the pipes, a kill that never lands) fails the test instead of the whole run.
pytestmark = pytest.mark.timeout(30)

SLEEP = shutil.which("sleep") or "/bin/sleep"
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "JOB_ID": "01J0TESTJOB"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHECKED_SIGNALS = ("SIGTERM", "SIGINT", "SIGPIPE", "SIGCHLD")


@dataclass
class Job:
    workdir: Path
    stdout_path: Path
    stderr_path: Path
    chunks: list[tuple[str, bytes]]

    @property
    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    @property
    def stderr(self) -> bytes:
        return self.stderr_path.read_bytes()

    def run(self, target: Target, argv: list[str] | None = None, **kw: Any) -> ExecResult:
        kw.setdefault("env", CHILD_ENV)
        kw.setdefault("timeout_s", 10.0)
        kw.setdefault("on_output", self.collect)
        return execute(
            target,
            argv or [],
            workdir=self.workdir,
            stdout_path=self.stdout_path,
            stderr_path=self.stderr_path,
            **kw,
        )

    def collect(self, name: str, chunk: bytes) -> None:
        self.chunks.append((name, chunk))


@pytest.fixture
def job(tmp_path: Path) -> Job:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Job(workdir, tmp_path / "stdout.log", tmp_path / "stderr.log", [])


@pytest.fixture(params=["pidfd", "waitid polling"])
def exit_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the parent learns of the child's exit: a pidfd, or polling where the kernel lacks it."""
    if request.param != "pidfd":

        def unavailable(pid: int, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open unavailable")

        monkeypatch.setattr(os, "pidfd_open", unavailable)
    return str(request.param)


def wait_until_gone(pid: int, within_s: float = 3.0) -> bool:
    """True once pid no longer exists (or is a zombie waiting for init to reap it)."""
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


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# Targets: they run in the forked child.


def print_both(argv: list[str]) -> int:
    # print, as CLIs do: the parent's sys.stdout under pytest is not fd 1, so this checks the rebinding.
    print("hello stdout")  # noqa: T201
    print("hello stderr", file=sys.stderr)  # noqa: T201
    return 0


def exit_with(argv: list[str]) -> int | None:
    code: Any = json.loads(argv[0])
    if argv[1] == "return":
        return int(code) if code is not None else None
    sys.exit(code)


def raise_value_error(argv: list[str]) -> int:
    raise ValueError("input grid has no rows")


def sleep_long(argv: list[str]) -> int:
    Path("pid").write_text(str(os.getpid()))
    time.sleep(30)
    return 0


def ignore_sigterm_and_sleep(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(30)
    return 0


def write_then_segfault(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.write(1, b"started\n")
    Path("partial.txt").write_text("frame 1 of 3\n")
    os.write(1, b"o" * 30_000)
    sys.stderr.write("rendering frame 2\n")
    os.kill(os.getpid(), signal.SIGSEGV)
    return 0


def flood_both(argv: list[str]) -> int:
    for i in range(100):
        sys.stdout.buffer.write(bytes([65 + i % 26]) * 100_000)
        sys.stdout.buffer.flush()
        sys.stderr.buffer.write(bytes([97 + i % 26]) * 100_000)
        sys.stderr.buffer.flush()
    return 0


def report_surroundings(argv: list[str]) -> int:
    defaults = {name: signal.getsignal(getattr(signal, name)) == signal.SIG_DFL for name in CHECKED_SIGNALS}
    sys.stdout.write(json.dumps({"cwd": os.getcwd(), "env": dict(os.environ), "default_handlers": defaults}))
    return 0


def spawn_grandchild_and_sleep(argv: list[str]) -> int:
    grandchild = subprocess.Popen([SLEEP, "30"])
    Path("grandchild.pid").write_text(str(grandchild.pid))
    time.sleep(30)
    return 0


def spawn_grandchild_and_return(argv: list[str]) -> int:
    grandchild = subprocess.Popen([SLEEP, "30"])
    Path("grandchild.pid").write_text(str(grandchild.pid))
    return 0


def print_pid(argv: list[str]) -> int:
    sys.stdout.write(f"{os.getpid()}\n")
    return 0


def return_zero(argv: list[str]) -> int:
    return 0


# Output and exit codes.


@pytest.mark.usefixtures("exit_watch")
def test_output_goes_to_the_files_and_to_on_output(job: Job) -> None:
    result = job.run(print_both)

    assert result.exit_code == 0
    assert (result.signal, result.signal_name) == (None, None)
    assert not result.timed_out and not result.cancelled
    assert job.stdout == b"hello stdout\n"
    assert job.stderr == b"hello stderr\n"
    assert (result.stdout_bytes, result.stderr_bytes) == (13, 13)
    assert b"".join(c for name, c in job.chunks if name == "stdout") == b"hello stdout\n"
    assert b"".join(c for name, c in job.chunks if name == "stderr") == b"hello stderr\n"


def test_output_is_appended_to_existing_logs(job: Job) -> None:
    job.stdout_path.write_bytes(b"earlier attempt\n")

    job.run(print_both)

    assert job.stdout == b"earlier attempt\nhello stdout\n"


@pytest.mark.parametrize(
    ("code", "how", "expected"),
    [
        (3, "exit", 3),
        (None, "exit", 0),
        (0, "exit", 0),
        (259, "exit", 3),
        (None, "return", 0),
        (5, "return", 5),
        (-1, "return", 255),
    ],
)
def test_exit_code_follows_sys_exit_and_return_value(
    job: Job, code: int | None, how: str, expected: int
) -> None:
    result = job.run(exit_with, [json.dumps(code), how])

    assert result.exit_code == expected
    assert result.signal is None


def test_sys_exit_with_a_message_prints_it_and_exits_1(job: Job) -> None:
    result = job.run(exit_with, [json.dumps("no such stage: rendr"), "exit"])

    assert result.exit_code == 1
    assert job.stderr == b"no such stage: rendr\n"


def test_uncaught_exception_exits_1_with_traceback_on_stderr(job: Job) -> None:
    result = job.run(raise_value_error)

    assert result.exit_code == 1
    assert job.stderr.startswith(b"Traceback (most recent call last):")
    assert b"ValueError: input grid has no rows" in job.stderr


# Timeout, cancel, kill.


@pytest.mark.usefixtures("exit_watch")
def test_timeout_sends_sigterm_to_a_sleeping_child(job: Job) -> None:
    started = time.monotonic()
    result = job.run(sleep_long, timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert result.timed_out and not result.cancelled
    assert (result.exit_code, result.signal, result.signal_name) == (143, signal.SIGTERM, "SIGTERM")
    assert 0.5 <= elapsed < 2.0
    assert_reaped(int((job.workdir / "pid").read_text()))


def test_child_ignoring_sigterm_is_sigkilled_after_the_grace(job: Job) -> None:
    started = time.monotonic()
    result = job.run(ignore_sigterm_and_sleep, timeout_s=0.3, kill_grace_s=0.5)
    elapsed = time.monotonic() - started

    assert result.timed_out
    assert (result.exit_code, result.signal_name) == (137, "SIGKILL")
    assert 0.8 <= elapsed < 2.5


def test_should_cancel_stops_the_child(job: Job) -> None:
    started = time.monotonic()
    ticks: list[float] = []

    result = job.run(
        sleep_long,
        should_cancel=lambda: time.monotonic() - started > 0.3,
        cancel_poll_s=0.05,
        on_tick=lambda: ticks.append(time.monotonic()),
    )
    elapsed = time.monotonic() - started

    assert result.cancelled and not result.timed_out
    assert (result.exit_code, result.signal_name) == (143, "SIGTERM")
    assert 0.3 <= elapsed < 1.5
    assert len(ticks) >= 5


def test_parent_sigterm_handler_is_not_inherited_by_the_child(job: Job) -> None:
    def parent_handler(signum: int, frame: FrameType | None) -> None:
        pass  # would swallow the timeout's SIGTERM if the child kept it

    previous = signal.signal(signal.SIGTERM, parent_handler)
    try:
        result = job.run(sleep_long, timeout_s=0.3, kill_grace_s=5.0)
        assert signal.getsignal(signal.SIGTERM) is parent_handler
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert (result.exit_code, result.signal_name) == (143, "SIGTERM")


@pytest.mark.usefixtures("exit_watch")
def test_child_killed_by_a_signal_keeps_what_it_wrote(job: Job) -> None:
    def slow_consumer(name: str, chunk: bytes) -> None:
        if not job.chunks:  # busy on the first chunk while the child writes the rest and dies
            time.sleep(0.3)
        job.collect(name, chunk)

    result = job.run(write_then_segfault, on_output=slow_consumer)

    assert (result.exit_code, result.signal, result.signal_name) == (139, signal.SIGSEGV, "SIGSEGV")
    assert not result.timed_out and not result.cancelled
    assert (job.workdir / "partial.txt").read_text() == "frame 1 of 3\n"
    assert job.stdout == b"started\n" + b"o" * 30_000
    assert job.stderr == b"rendering frame 2\n"


def test_grandchild_is_killed_with_the_child_on_timeout(job: Job) -> None:
    result = job.run(spawn_grandchild_and_sleep, timeout_s=0.5)

    assert result.timed_out
    assert wait_until_gone(int((job.workdir / "grandchild.pid").read_text()))


@pytest.mark.usefixtures("exit_watch")
def test_grandchild_left_running_does_not_hold_the_job_open(job: Job) -> None:
    started = time.monotonic()
    result = job.run(spawn_grandchild_and_return)

    assert result.exit_code == 0 and not result.timed_out
    assert time.monotonic() - started < 2.0
    assert wait_until_gone(int((job.workdir / "grandchild.pid").read_text()))


def test_callback_error_propagates_after_the_child_is_killed(job: Job) -> None:
    def failing_tick() -> None:
        raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        job.run(sleep_long, on_tick=failing_tick, cancel_poll_s=0.1)

    assert_reaped(int((job.workdir / "pid").read_text()))


# Volume, isolation, resources.


@pytest.mark.usefixtures("exit_watch")
def test_20_mb_interleaved_on_both_pipes_does_not_hang(job: Job) -> None:
    started = time.monotonic()
    result = job.run(flood_both)

    assert result.exit_code == 0
    assert time.monotonic() - started < 5.0
    expected_out = b"".join(bytes([65 + i % 26]) * 100_000 for i in range(100))
    expected_err = b"".join(bytes([97 + i % 26]) * 100_000 for i in range(100))
    assert (result.stdout_bytes, result.stderr_bytes) == (10_000_000, 10_000_000)
    assert job.stdout == expected_out
    assert job.stderr == expected_err
    assert sum(len(c) for _, c in job.chunks) == 20_000_000


def test_child_runs_in_workdir_with_exactly_the_given_env(job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPARENTONLY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "parent-token")
    parent_cwd, parent_env = os.getcwd(), dict(os.environ)
    parent_handlers = {s: signal.getsignal(s) for s in signal.valid_signals()}

    result = job.run(report_surroundings)

    seen = json.loads(job.stdout)
    assert result.exit_code == 0
    assert seen["cwd"] == os.path.realpath(job.workdir)
    assert seen["env"] == CHILD_ENV
    assert seen["default_handlers"] == dict.fromkeys(CHECKED_SIGNALS, True)
    assert (os.getcwd(), dict(os.environ)) == (parent_cwd, parent_env)
    assert {s: signal.getsignal(s) for s in signal.valid_signals()} == parent_handlers


def test_no_fd_leak_and_no_zombie_over_50_runs(job: Job) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    job.run(print_pid)  # first run may open lazily imported modules' files
    # Earlier tests' objects may still be collected (and close their files) during the loop: settle
    # them first, and count a leak as growth; 50 runs leaking one fd each could not hide.
    gc.collect()
    before = open_fds()
    pids = []
    for _ in range(50):
        job.chunks.clear()
        assert job.run(print_pid).exit_code == 0
        pids.append(int(b"".join(c for _, c in job.chunks)))

    gc.collect()
    assert open_fds() <= before
    for pid in pids:
        assert_reaped(pid)


# The callbacks run off the supervisor's loop: slow ones delay neither the timeout nor the kill.


@pytest.mark.parametrize("slow", ["on_tick", "should_cancel"])
def test_a_slow_callback_does_not_delay_the_timeout(job: Job, slow: str) -> None:
    def stall() -> bool:
        time.sleep(3.0)  # a heartbeat stuck on DynamoDB's retries
        return False

    started = time.monotonic()
    callbacks: dict[str, Any] = {slow: stall}
    result = job.run(sleep_long, timeout_s=0.5, kill_grace_s=0.5, cancel_poll_s=0.1, **callbacks)

    assert result.timed_out and (result.exit_code, result.signal_name) == (143, "SIGTERM")
    assert result.duration_s < 1.0, "the child was killed late"
    assert time.monotonic() - started >= 3.0  # the call still waits for its callbacks to finish
    assert_reaped(int((job.workdir / "pid").read_text()))


def test_a_slow_on_output_gets_every_byte_and_memory_stays_bounded(job: Job) -> None:
    received = {"stdout": 0, "stderr": 0}

    def slow_consumer(name: str, chunk: bytes) -> None:
        time.sleep(0.002)
        received[name] += len(chunk)

    tracemalloc.start()
    try:
        result = job.run(flood_both, on_output=slow_consumer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result.exit_code == 0
    assert received == {"stdout": 10_000_000, "stderr": 10_000_000}
    assert peak < 12 * 1024 * 1024, f"{peak} bytes held for 20 MB of output"


# Bounded logs.


def test_each_log_keeps_its_head_and_tail_when_over_max_log_bytes(job: Job) -> None:
    result = job.run(flood_both, max_log_bytes=1_000_000)

    expected_out = b"".join(bytes([65 + i % 26]) * 100_000 for i in range(100))
    assert (result.stdout_bytes, result.stderr_bytes) == (10_000_000, 10_000_000)
    stored = job.stdout
    assert stored.startswith(
        expected_out[:500_000] + b"\n[jobgate: 9000000 bytes of this stream were cut here"
    )
    assert stored.endswith(b"]\n" + expected_out[-500_000:])
    assert len(stored) < 1_000_200
    assert len(job.stderr) < 1_000_200
    assert sum(len(c) for _, c in job.chunks) == 20_000_000  # the live stream is not cut


def test_missing_workdir_is_refused_before_forking(job: Job) -> None:
    with pytest.raises(NotADirectoryError):
        execute(
            return_zero,
            [],
            workdir=job.workdir / "absent",
            env=CHILD_ENV,
            timeout_s=1.0,
            stdout_path=job.stdout_path,
            stderr_path=job.stderr_path,
        )


# A real zyra command.


@pytest.fixture
def zyra_main() -> Target:
    cli = pytest.importorskip("zyra.cli")
    main: Target = cli.main
    return main


def heatmap_argv(input_name: str) -> list[str]:
    flags = ["--no-coastline", "--no-borders", "--no-gridlines"]
    return ["visualize", "heatmap", "--input", input_name, "--output", "x.png", *flags]


@pytest.mark.zyra
def test_zyra_heatmap_writes_a_png(job: Job, zyra_main: Target) -> None:
    np = pytest.importorskip("numpy")
    np.save(job.workdir / "x.npy", np.arange(64, dtype=float).reshape(8, 8))
    env = {**CHILD_ENV, "HOME": str(job.workdir)}

    result = job.run(zyra_main, heatmap_argv("x.npy"), env=env, timeout_s=60)  # a cold import can be slow

    assert result.exit_code == 0, job.stderr.decode()
    assert (job.workdir / "x.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.zyra
def test_zyra_missing_input_exits_1_with_the_error(job: Job, zyra_main: Target) -> None:
    result = job.run(zyra_main, heatmap_argv("missing.npy"), env={**CHILD_ENV, "HOME": str(job.workdir)})

    assert result.exit_code == 1
    assert b"FileNotFoundError" in job.stderr
    assert b"missing.npy" in job.stderr
    assert not (job.workdir / "x.png").exists()


def _logs_with_basic_config(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("cmd").info("wrote %s", argv[0])
    return 0


def test_command_logging_reaches_stderr_when_the_host_has_a_root_handler(tmp_path: Path) -> None:
    import io
    import logging

    host_sink = io.StringIO()
    host_handler = logging.StreamHandler(host_sink)
    logging.getLogger().addHandler(host_handler)  # as the Lambda runtime does
    try:
        result = execute(
            _logs_with_basic_config,
            ["out.png"],
            workdir=tmp_path,
            env={},
            timeout_s=10,
            stdout_path=tmp_path / "o",
            stderr_path=tmp_path / "e",
        )
    finally:
        logging.getLogger().removeHandler(host_handler)
    assert result.exit_code == 0
    assert (tmp_path / "e").read_text() == "INFO: wrote out.png\n"
    assert host_sink.getvalue() == ""
