"""Run one job's command in a forked child, with its output on pipes and timeout and cancel by signal."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

Target = Callable[[list[str]], int | None]
OutputCallback = Callable[[str, bytes], None]

STDOUT = "stdout"
STDERR = "stderr"

_READ_CHUNK = 64 * 1024
# A child flooding a pipe must not starve the timeout, cancel and heartbeat checks.
_MAX_READ_PER_WAKEUP = 1024 * 1024
# After the child is reaped and its group killed, EOF follows at once; this bounds the wait only when
# a process that left the group (setsid) still holds a pipe open.
_DRAIN_GRACE_S = 1.0
# Only where pidfd_open is unavailable: how often to look for the child's exit.
_EXIT_POLL_S = 0.02
# Exit code of a child whose set-up failed before the command ran (the reason is on its stderr).
_SETUP_FAILED = 1

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None)
except OSError:  # pragma: no cover - a libc always loads on Linux
    _LIBC = None


@dataclass(frozen=True)
class ExecResult:
    """How a job's command ended, and how much it wrote."""

    exit_code: int  # the child's exit code; 128+N when killed by signal N
    signal: int | None  # the signal that killed it, if any
    signal_name: str | None  # e.g. "SIGKILL"
    timed_out: bool
    cancelled: bool
    duration_s: float
    stdout_bytes: int
    stderr_bytes: int


def execute(
    target: Target,
    argv: list[str],
    *,
    workdir: Path,
    env: Mapping[str, str],
    timeout_s: float,
    stdout_path: Path,
    stderr_path: Path,
    should_cancel: Callable[[], bool] = lambda: False,
    cancel_poll_s: float = 1.0,
    on_output: OutputCallback | None = None,
    on_tick: Callable[[], None] | None = None,
    kill_grace_s: float = 2.0,
) -> ExecResult:
    """Run ``target(argv)`` in a forked child in its own process group and wait for it to end.

    The child's stdout and stderr are appended to the two files, and passed to ``on_output``, as
    they arrive. On timeout or cancel the group gets SIGTERM, then SIGKILL after ``kill_grace_s``;
    whatever is left of the group when the child ends is killed too. An exception from a callback
    propagates once the child's group has been killed and the child reaped.
    """
    if timeout_s <= 0 or cancel_poll_s <= 0 or kill_grace_s < 0:
        raise ValueError("timeout_s and cancel_poll_s must be positive, kill_grace_s not negative")
    if not workdir.is_dir():
        raise NotADirectoryError(f"workdir is not a directory: {workdir}")
    child_env = dict(env)  # a snapshot taken before the fork, as the child will see it
    with contextlib.ExitStack() as stack:
        fds = _OwnedFds()
        stack.callback(fds.close_all)
        out_sink = stack.enter_context(open(stdout_path, "ab", buffering=0))
        err_sink = stack.enter_context(open(stderr_path, "ab", buffering=0))
        out_r, out_w = fds.pipe()
        err_r, err_w = fds.pipe()
        inherited = [out_r, err_r, out_sink.fileno(), err_sink.fileno()]
        # Anything the parent still buffers would otherwise be written a second time by the child.
        _flush_parent_output()
        started = time.monotonic()
        pid, parent_mask = _fork_with_signals_blocked()
        if pid == 0:
            _child_main(target, argv, workdir, child_env, out_w, err_w, inherited)
        supervisor: _Supervisor | None = None
        try:
            # Restored inside the try: a KeyboardInterrupt pending since the fork lands here, and the
            # child is still killed and reaped.
            signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
            # Both sides set the group, so a kill sent right after the fork cannot miss it.
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
            fds.close(out_w)
            fds.close(err_w)
            supervisor = _Supervisor(
                pid=pid,
                streams={out_r: (STDOUT, out_sink), err_r: (STDERR, err_sink)},
                deadline=started + timeout_s,
                should_cancel=should_cancel,
                cancel_poll_s=cancel_poll_s,
                on_output=on_output,
                on_tick=on_tick,
                kill_grace_s=kill_grace_s,
            )
            status = supervisor.run()
        except BaseException:
            if supervisor is None or not supervisor.reaped:
                _signal_group(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise
        duration = time.monotonic() - started
    return _result(status, supervisor, duration)


class _OwnedFds:
    """Raw fds this call opened, each closed exactly once (a second close could hit a reused number)."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        self._open.update((read_fd, write_fd))
        return read_fd, write_fd

    def close(self, fd: int) -> None:
        self._open.discard(fd)
        os.close(fd)

    def close_all(self) -> None:
        while self._open:
            with contextlib.suppress(OSError):
                os.close(self._open.pop())


def _fork_with_signals_blocked() -> tuple[int, set[int | signal.Signals]]:
    """Fork with every signal blocked; the parent gets back the mask to restore.

    No handler of the parent's can then run in the child (and raise into the caller's frames) before
    the child has reset its handlers to the defaults.
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise
    return pid, old_mask


def _signal_group(pid: int, signum: signal.Signals) -> None:
    # Never os.getpgid(pid): had the child's setpgid failed, that would be the parent's own group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _flush_parent_output() -> None:
    _flush_std_streams()
    _flush_c_stdio()


def _flush_std_streams() -> None:
    # The originals too: code that kept a reference to sys.__stdout__ still writes to fd 1.
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()


def _flush_c_stdio() -> None:
    if _LIBC is not None:
        _LIBC.fflush(None)


def _result(status: int, supervisor: _Supervisor, duration: float) -> ExecResult:
    code = os.waitstatus_to_exitcode(status)
    signum: int | None = None
    signal_name: str | None = None
    if code < 0:
        signum = -code
        code = 128 + signum
        try:
            signal_name = signal.Signals(signum).name
        except ValueError:
            signal_name = f"signal {signum}"
    return ExecResult(
        exit_code=code,
        signal=signum,
        signal_name=signal_name,
        timed_out=supervisor.timed_out,
        cancelled=supervisor.cancelled,
        duration_s=duration,
        stdout_bytes=supervisor.byte_counts[STDOUT],
        stderr_bytes=supervisor.byte_counts[STDERR],
    )


class _Supervisor:
    """The parent's side: read both pipes, enforce timeout and cancel, reap the child."""

    def __init__(
        self,
        *,
        pid: int,
        streams: dict[int, tuple[str, BinaryIO]],
        deadline: float,
        should_cancel: Callable[[], bool],
        cancel_poll_s: float,
        on_output: OutputCallback | None,
        on_tick: Callable[[], None] | None,
        kill_grace_s: float,
    ) -> None:
        self._pid = pid
        self._streams = streams
        self._deadline = deadline
        self._should_cancel = should_cancel
        self._poll_s = cancel_poll_s
        self._on_output = on_output
        self._on_tick = on_tick
        self._kill_grace_s = kill_grace_s
        self._next_tick = time.monotonic() + cancel_poll_s
        self._kill_at: float | None = None  # set once SIGTERM is sent
        self._killed = False
        self._sel: selectors.BaseSelector
        self._pidfd: int | None = None
        self._exited = False
        self.reaped = False
        self.timed_out = False
        self.cancelled = False
        self.byte_counts = {STDOUT: 0, STDERR: 0}

    def run(self) -> int:
        """Supervise the child until it has exited and its output is read; return its wait status."""
        with contextlib.ExitStack() as stack:
            self._sel = stack.enter_context(selectors.DefaultSelector())
            try:
                self._pidfd = os.pidfd_open(self._pid)
            except OSError:  # an old kernel, or a sandbox that forbids it: poll instead
                self._pidfd = None
            else:
                stack.callback(os.close, self._pidfd)
                self._sel.register(self._pidfd, selectors.EVENT_READ, None)
            for fd in self._streams:
                os.set_blocking(fd, False)
                self._sel.register(fd, selectors.EVENT_READ, fd)
            self._wait_for_exit()
            # The child is not reaped yet, so its pid (the group id) cannot have been reused.
            _signal_group(self._pid, signal.SIGKILL)
            _, status = os.waitpid(self._pid, 0)
            self.reaped = True
            self._drain()
        return status

    def _wait_for_exit(self) -> None:
        while not self._child_exited():
            timeout = max(0.0, self._next_wakeup() - time.monotonic())
            if self._pidfd is None:
                timeout = min(timeout, _EXIT_POLL_S)
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    self._exited = True
                else:
                    self._read(key.data)
            self._check_timers(time.monotonic())

    def _child_exited(self) -> bool:
        if self._exited or self._pidfd is not None:
            return self._exited
        # WNOWAIT leaves the child a zombie, so the group id stays reserved until the reap.
        info = os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        self._exited = info is not None
        return self._exited

    def _next_wakeup(self) -> float:
        wakeup = self._next_tick
        if self._kill_at is None:
            wakeup = min(wakeup, self._deadline)
        elif not self._killed:
            wakeup = min(wakeup, self._kill_at)
        return wakeup

    @property
    def _stopping(self) -> bool:
        return self._kill_at is not None

    def _check_timers(self, now: float) -> None:
        if not self._stopping and now >= self._deadline:
            self.timed_out = True
            self._stop(now)
        if now >= self._next_tick:
            # Scheduled from now, not from the missed tick, so a slow callback does not cause a burst.
            self._next_tick = now + self._poll_s
            if self._on_tick is not None:
                self._on_tick()
            if not self._stopping and self._should_cancel():
                self.cancelled = True
                self._stop(time.monotonic())
        if self._kill_at is not None and not self._killed and now >= self._kill_at:
            self._killed = True
            _signal_group(self._pid, signal.SIGKILL)

    def _stop(self, now: float) -> None:
        self._kill_at = now + self._kill_grace_s
        _signal_group(self._pid, signal.SIGTERM)

    def _read(self, fd: int) -> None:
        name, sink = self._streams[fd]
        budget = _MAX_READ_PER_WAKEUP
        while budget > 0:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._sel.unregister(fd)
                return
            budget -= len(chunk)
            self.byte_counts[name] += len(chunk)
            sink.write(chunk)
            if self._on_output is not None:
                self._on_output(name, chunk)

    def _drain(self) -> None:
        """Read what the child wrote before it ended, up to EOF on both pipes."""
        if self._pidfd is not None:
            self._sel.unregister(self._pidfd)  # it stays readable once the child is gone
        give_up_at = time.monotonic() + _DRAIN_GRACE_S
        while self._sel.get_map():
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in self._sel.select(remaining):
                self._read(key.data)


def _child_main(
    target: Target,
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    out_w: int,
    err_w: int,
    inherited: list[int],
) -> NoReturn:
    """The forked child: set up, run the command, flush, _exit. Never returns, never raises."""
    code = _SETUP_FAILED
    try:
        os.setpgid(0, 0)
        _reset_signals()
        _redirect_stdio(out_w, err_w, inherited)
        _fresh_root_logger()
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(env)
        code = _run_target(target, argv)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            _flush_child_output()
        # _exit: the caller's finally blocks, atexit hooks and buffers belong to the parent.
        os._exit(code & 0xFF)


def _reset_signals() -> None:
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _redirect_stdio(out_w: int, err_w: int, inherited: list[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in {devnull, out_w, err_w, *inherited} - {0, 1, 2}:
        with contextlib.suppress(OSError):
            os.close(fd)
    old_streams = {id(sys.stdout): STDOUT, id(sys.stderr): STDERR}
    old_streams.setdefault(id(sys.__stdout__), STDOUT)
    old_streams.setdefault(id(sys.__stderr__), STDERR)
    # New objects on fds 1 and 2: the parent's sys.stdout may not write to fd 1 at all (a test
    # runner's capture, a runtime's wrapper), and may hold the parent's buffered bytes.
    new_streams = {STDOUT: _text_stream(1), STDERR: _text_stream(2)}
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = new_streams[STDOUT]
    sys.stderr = new_streams[STDERR]
    for handler in _stream_handlers():
        name = old_streams.get(id(handler.stream))
        if name is not None:
            handler.setStream(new_streams[name])


def _fresh_root_logger() -> None:
    """The root logger as a new interpreter has it, so a command's logging.basicConfig takes effect.

    A host (the Lambda runtime, a test runner) may have put its own handler on the root logger;
    a command's log lines would then go there instead of to the job's stderr.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _text_stream(fd: int) -> io.TextIOWrapper:
    # Line-buffered so that output reaches the job's watchers as it is printed, not at exit.
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    loggers = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [
        handler
        for lg in loggers
        for handler in lg.handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]


def _run_target(target: Target, argv: list[str]) -> int:
    try:
        return _exit_code(target(list(argv)))
    except SystemExit as exc:
        return _exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
        return 1


def _exit_code(value: object) -> int:
    """An exit code from a return value or a SystemExit code, as the interpreter maps them."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{value}\n")
    return 1


def _flush_child_output() -> None:
    _flush_std_streams()
    logging.shutdown()
    _flush_c_stdio()
