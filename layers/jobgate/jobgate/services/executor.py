"""Run one job's command in a child process, with its output on pipes and timeout and cancel by signal.

`execute` forks the calling process, for command sets that exist only in the caller (tests). The worker
runs its commands through `jobgate.services.zygote`, which forks each child from a clean, warm process
started by exec; both start the child here (`child_main`) and supervise it here (`supervise`).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import selectors
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from jobgate.services.capture import CappedLog
from jobgate.services.secrets import Redactor

Target = Callable[[list[str]], int | None]
OutputCallback = Callable[[str, bytes], None]
# Starts the child: (stdout write fd, stderr write fd, fds the child must close) -> the child.
Launch = Callable[[int, int, list[int]], "Child"]

STDOUT = "stdout"
STDERR = "stderr"

_READ_CHUNK = 64 * 1024
# A child flooding a pipe must not starve the timeout and cancel checks.
_MAX_READ_PER_WAKEUP = 1024 * 1024
# Output read but not yet handed to on_output. Past the high mark the pipes are left unread (the
# command then waits on its writes, as it would on a slow reader) until the callbacks are back
# under the low mark: memory stays bounded however slow on_output is.
_BACKLOG_HIGH = 4 * 1024 * 1024
_BACKLOG_LOW = 1024 * 1024
# After the child is reaped and its group killed, EOF follows at once; this bounds the wait only when
# a process that left the group still holds a pipe open.
_DRAIN_GRACE_S = 1.0
# Only where the child gives no fd to wait on: how often to look for its exit.
_EXIT_POLL_S = 0.02
# Exit code of a child whose set-up failed before the command ran (the reason is on its stderr).
SETUP_FAILED = 1
_EXIT = "exit"
_WAKE = "wake"

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None)
except OSError:  # pragma: no cover - a libc always loads on Linux
    _LIBC = None


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Watch:
    """How a command is watched: its time limit, cancel checks, output callbacks and log size.

    ``on_output``, ``on_tick`` and ``should_cancel`` run on a thread of their own, one at a time: a
    slow one (a heartbeat waiting on DynamoDB) delays neither the timeout nor the kill of a cancel
    already seen. ``max_log_bytes`` bounds each stream's log file (head and tail kept); None keeps all.
    """

    timeout_s: float
    should_cancel: Callable[[], bool] = _never
    cancel_poll_s: float = 1.0
    on_output: OutputCallback | None = None
    on_tick: Callable[[], None] | None = None
    kill_grace_s: float = 2.0
    max_log_bytes: int | None = None
    # Byte strings (the command's secrets) masked in its logs and output callbacks, whatever the reads.
    redact: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.cancel_poll_s <= 0 or self.kill_grace_s < 0:
            raise ValueError("timeout_s and cancel_poll_s must be positive, kill_grace_s not negative")


@dataclass(frozen=True)
class ExecResult:
    """How a job's command ended, and how much it wrote."""

    exit_code: int  # the child's exit code; 128+N when killed by signal N
    signal: int | None  # the signal that killed it, if any
    signal_name: str | None  # e.g. "SIGKILL"
    timed_out: bool
    cancelled: bool
    duration_s: float
    stdout_bytes: int  # everything it wrote, including what the log's cap cut
    stderr_bytes: int


class Child(Protocol):
    """A started command, as the supervisor drives it."""

    pid: int

    @property
    def exit_fd(self) -> int | None:
        """An fd that turns readable when the child may have exited; None to poll `exited`."""

    def exited(self) -> bool:
        """Whether the child has exited. It stays unreaped, so its group id cannot be reused yet."""

    def signal_group(self, signum: signal.Signals) -> None:
        """Signal the child's process group."""

    def reap(self) -> int:
        """Kill what is left of the child's processes, reap it, and answer its wait status."""

    def abort(self) -> None:
        """On an error path: kill the child's processes and reap it if that can be done. Never raises."""

    def close(self) -> None:
        """Release what watching the child took (fds)."""


class CommandRunner(Protocol):
    """Runs a command of a command set, by name, in a child process."""

    def run(
        self,
        command_set: str,
        argv: list[str],
        *,
        workdir: Path,
        env: Mapping[str, str],
        stdout_path: Path,
        stderr_path: Path,
        watch: Watch,
    ) -> ExecResult: ...


class ForkRunner:
    """Forks the calling process for each command: for command sets that exist only in the caller.

    The child starts as a copy of the caller, so it can read what the caller holds (AWS credentials
    among it). The worker's wiring uses `jobgate.services.zygote.Zygote` instead.
    """

    def __init__(self, target_for: Callable[[str], Target]) -> None:
        self._target_for = target_for

    def run(
        self,
        command_set: str,
        argv: list[str],
        *,
        workdir: Path,
        env: Mapping[str, str],
        stdout_path: Path,
        stderr_path: Path,
        watch: Watch,
    ) -> ExecResult:
        launch = _forker(self._target_for(command_set), argv, workdir, env)
        return supervise(
            launch, workdir=workdir, stdout_path=stdout_path, stderr_path=stderr_path, watch=watch
        )


def execute(
    target: Target,
    argv: list[str],
    *,
    workdir: Path,
    env: Mapping[str, str],
    timeout_s: float,
    stdout_path: Path,
    stderr_path: Path,
    should_cancel: Callable[[], bool] = _never,
    cancel_poll_s: float = 1.0,
    on_output: OutputCallback | None = None,
    on_tick: Callable[[], None] | None = None,
    kill_grace_s: float = 2.0,
    max_log_bytes: int | None = None,
    redact: tuple[bytes, ...] = (),
) -> ExecResult:
    """Run ``target(argv)`` in a forked child in its own process group and wait for it to end.

    The child's stdout and stderr are appended to the two files (at most ``max_log_bytes`` of each),
    and passed to ``on_output``, as they arrive. On timeout or cancel the group gets SIGTERM, then
    SIGKILL after ``kill_grace_s``; whatever is left of the group when the child ends is killed too.
    An exception from a callback propagates once the child's group has been killed and the child reaped.
    """
    watch = Watch(
        timeout_s=timeout_s,
        should_cancel=should_cancel,
        cancel_poll_s=cancel_poll_s,
        on_output=on_output,
        on_tick=on_tick,
        kill_grace_s=kill_grace_s,
        max_log_bytes=max_log_bytes,
        redact=redact,
    )
    launch = _forker(target, argv, workdir, env)
    return supervise(launch, workdir=workdir, stdout_path=stdout_path, stderr_path=stderr_path, watch=watch)


def supervise(
    launch: Launch, *, workdir: Path, stdout_path: Path, stderr_path: Path, watch: Watch
) -> ExecResult:
    """Start a child with ``launch``, its stdout and stderr on pipes, and watch it to its end."""
    if not workdir.is_dir():
        raise NotADirectoryError(f"workdir is not a directory: {workdir}")
    with contextlib.ExitStack() as stack:
        fds = _OwnedFds()
        stack.callback(fds.close_all)
        out_sink = CappedLog(stdout_path, watch.max_log_bytes)
        stack.callback(out_sink.close)
        err_sink = CappedLog(stderr_path, watch.max_log_bytes)
        stack.callback(err_sink.close)
        out_r, out_w = fds.pipe()
        err_r, err_w = fds.pipe()
        started = time.monotonic()
        child = launch(out_w, err_w, [out_r, err_r, out_sink.fileno(), err_sink.fileno()])
        stack.callback(child.close)
        supervisor: _Supervisor | None = None
        try:
            fds.close(out_w)
            fds.close(err_w)
            supervisor = _Supervisor(
                child,
                streams={out_r: (STDOUT, out_sink), err_r: (STDERR, err_sink)},
                deadline=started + watch.timeout_s,
                watch=watch,
            )
        except BaseException:
            child.abort()
            raise
        status = supervisor.run()
        duration = supervisor.reaped_at - started  # not the wait for the callbacks to finish
    return _result(status, supervisor, duration)


def _forker(target: Target, argv: list[str], workdir: Path, env: Mapping[str, str]) -> Launch:
    child_env = dict(env)  # a snapshot taken before the fork, as the child will see it

    def launch(out_w: int, err_w: int, inherited: list[int]) -> Child:
        # Anything the parent still buffers would otherwise be written a second time by the child.
        _flush_parent_output()
        pid, parent_mask = fork_with_signals_blocked()
        if pid == 0:
            child_main(target, argv, workdir, child_env, out_w, err_w, inherited)
        child = ForkedChild(pid)
        try:
            # Restored only now: a KeyboardInterrupt pending since the fork lands here, and the child
            # is still killed and reaped.
            signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
            # Both sides set the group, so a kill sent right after the fork cannot miss it.
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
        except BaseException:
            child.abort()
            raise
        return child

    return launch


class ForkedChild:
    """A child of this process: its exit seen through a pidfd (or by polling), reaped with waitpid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # an old kernel, or a sandbox that forbids it: poll instead
            self._pidfd = None

    @property
    def exit_fd(self) -> int | None:
        return self._pidfd

    def exited(self) -> bool:
        # WNOWAIT leaves the child a zombie, so the group id stays reserved until the reap.
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def signal_group(self, signum: signal.Signals) -> None:
        signal_group(self.pid, signum)

    def reap(self) -> int:
        # Not reaped yet, so its pid (the group id) cannot have been reused.
        signal_group(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        return status

    def abort(self) -> None:
        signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


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


def fork_with_signals_blocked() -> tuple[int, set[int | signal.Signals]]:
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


def signal_group(pid: int, signum: signal.Signals) -> None:
    """Signal the process group led by ``pid``; a group that is gone is no error."""
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
    """The parent's side: read both pipes, enforce timeout and cancel, reap the child.

    Nothing on this loop waits on the caller's callbacks (they run on `_Callbacks`' thread), so the
    deadline and the kill that follows a cancel are kept whatever the callbacks do.
    """

    def __init__(
        self,
        child: Child,
        *,
        streams: dict[int, tuple[str, CappedLog]],
        deadline: float,
        watch: Watch,
    ) -> None:
        self._child = child
        self._streams = streams
        self._deadline = deadline
        self._kill_grace_s = watch.kill_grace_s
        self._callbacks = _Callbacks(watch)
        self._sel: selectors.BaseSelector
        self._open = set(streams)  # stream fds not at EOF yet
        self._paused = False  # the pipes are left unread while the callbacks catch up
        self._kill_at: float | None = None  # set once SIGTERM is sent
        self._killed = False
        self.reaped = False
        self.reaped_at = 0.0
        self.timed_out = False
        self.cancelled = False
        self.byte_counts = {STDOUT: 0, STDERR: 0}
        self._redactors = {fd: Redactor(watch.redact) for fd in streams}

    def run(self) -> int:
        """Supervise the child until it has exited and its output is read; return its wait status.

        On any error (a callback's included) the child's group is killed and the child reaped before
        the error propagates.
        """
        self._callbacks.start()
        try:
            with selectors.DefaultSelector() as self._sel:
                status = self._supervise()
        except BaseException:
            if not self.reaped:
                self._child.abort()
                self.reaped = True
            self._callbacks.stop()
            raise
        self._callbacks.finish()  # every chunk read reaches on_output before the caller goes on
        return status

    def _supervise(self) -> int:
        self._sel.register(self._callbacks.wake_fd, selectors.EVENT_READ, _WAKE)
        exit_fd = self._child.exit_fd
        if exit_fd is not None:
            self._sel.register(exit_fd, selectors.EVENT_READ, _EXIT)
        for fd in self._streams:
            os.set_blocking(fd, False)
            self._sel.register(fd, selectors.EVENT_READ, fd)
        self._wait_for_exit()
        self._child.signal_group(signal.SIGKILL)
        status = self._child.reap()
        self.reaped, self.reaped_at = True, time.monotonic()
        if exit_fd is not None:
            self._sel.unregister(exit_fd)  # it stays readable once the child is gone
        self._drain()
        for fd in self._open:  # a pipe a leftover process still holds: what was held back goes out now
            self._emit(fd, self._redactors[fd].flush())
        return status

    def _wait_for_exit(self) -> None:
        exited = False
        while not exited:
            self._pace_reading()
            timeout = self._next_wakeup()
            polling = self._child.exit_fd is None
            if polling:
                timeout = _EXIT_POLL_S if timeout is None else min(timeout, _EXIT_POLL_S)
            maybe_exited = polling
            for key, _ in self._sel.select(timeout):
                if key.data == _EXIT:
                    maybe_exited = True
                elif key.data == _WAKE:
                    self._callbacks.clear_wake()
                else:
                    self._read(key.data)
            self._callbacks.raise_error()
            self._check_timers(time.monotonic())
            exited = maybe_exited and self._child.exited()

    def _next_wakeup(self) -> float | None:
        if self._kill_at is None:
            at = self._deadline
        elif not self._killed:
            at = self._kill_at
        else:
            return None  # killed: only its exit, output or a callback can matter now
        return max(0.0, at - time.monotonic())

    def _check_timers(self, now: float) -> None:
        if self._kill_at is None:
            if now >= self._deadline:
                self.timed_out = True
                self._stop(now)
            elif self._callbacks.cancel_requested:
                self.cancelled = True
                self._stop(now)
        if self._kill_at is not None and not self._killed and now >= self._kill_at:
            self._killed = True
            self._child.signal_group(signal.SIGKILL)

    def _stop(self, now: float) -> None:
        self._kill_at = now + self._kill_grace_s
        self._child.signal_group(signal.SIGTERM)

    def _pace_reading(self) -> None:
        backlog = self._callbacks.backlog
        if not self._paused and backlog >= _BACKLOG_HIGH:
            self._paused = True
            for fd in self._open:
                self._sel.unregister(fd)
            self._callbacks.wake_at(_BACKLOG_LOW)
        elif self._paused and backlog <= _BACKLOG_LOW:
            self._paused = False
            for fd in self._open:
                self._sel.register(fd, selectors.EVENT_READ, fd)

    def _read(self, fd: int) -> None:
        name = self._streams[fd][0]
        budget = _MAX_READ_PER_WAKEUP
        while budget > 0:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._open.discard(fd)
                self._sel.unregister(fd)
                self._emit(fd, self._redactors[fd].flush())
                return
            budget -= len(chunk)
            self.byte_counts[name] += len(chunk)
            self._emit(fd, self._redactors[fd].feed(chunk))

    def _emit(self, fd: int, data: bytes) -> None:
        if data:
            name, sink = self._streams[fd]
            sink.write(data)
            self._callbacks.output(name, data)

    def _drain(self) -> None:
        """Read what the child wrote before it ended, up to EOF on both pipes."""
        give_up_at = time.monotonic() + _DRAIN_GRACE_S
        while self._open:
            self._pace_reading()
            if self._paused:
                # Time spent waiting for the callbacks to catch up is not the writers' grace.
                waited_from = time.monotonic()
                self._sel.select(None)
                self._callbacks.clear_wake()
                self._callbacks.raise_error()
                give_up_at += time.monotonic() - waited_from
                continue
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in self._sel.select(remaining):
                if key.data == _WAKE:
                    self._callbacks.clear_wake()
                else:
                    self._read(key.data)
            self._callbacks.raise_error()


class _Callbacks:
    """The caller's callbacks on a thread of their own, in order, and never on the supervisor's loop.

    ``on_output`` gets every chunk in the order read; ``on_tick`` then ``should_cancel`` run every
    ``cancel_poll_s`` until the child has ended. A cancel seen, or an exception raised, is passed to
    the loop through ``wake_fd``; after an exception no callback runs again.
    """

    def __init__(self, watch: Watch) -> None:
        self._watch = watch
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes]] = deque()
        self.backlog = 0  # bytes queued for on_output
        self._wake_at: int | None = None  # wake the loop once the backlog is down to this
        self._closing = False
        self.cancel_requested = False
        self._error: BaseException | None = None
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="jobgate-command-callbacks", daemon=True)
        self._joined = False

    def start(self) -> None:
        self._thread.start()

    def output(self, name: str, chunk: bytes) -> None:
        if self._watch.on_output is None:
            return
        with self._cond:
            self._queue.append((name, chunk))
            self.backlog += len(chunk)
            self._cond.notify()

    def wake_at(self, backlog: int) -> None:
        with self._cond:
            self._wake_at = backlog
            if self.backlog <= backlog:
                self._wake()

    def clear_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Hand every queued chunk to on_output, stop, and raise what a callback raised."""
        self._close(drop=False)
        self.raise_error()

    def stop(self) -> None:
        """Stop without delivering what is queued."""
        self._close(drop=True)

    def _close(self, *, drop: bool) -> None:
        if self._joined:
            return
        with self._cond:
            self._closing = True
            if drop:
                self._queue.clear()
                self.backlog = 0
            self._cond.notify()
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        self._joined = True
        os.close(self.wake_fd)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        next_tick = time.monotonic() + self._watch.cancel_poll_s
        while True:
            item = self._next(next_tick)
            if item is None and self._closing:
                return
            try:
                if item is not None and self._watch.on_output is not None:
                    self._watch.on_output(*item)
                now = time.monotonic()
                if now >= next_tick and not self._closing:
                    # Scheduled from now, not from the missed tick, so a slow callback causes no burst.
                    next_tick = now + self._watch.cancel_poll_s
                    self._tick()
            except BaseException as exc:  # handed to the loop, which kills the child and re-raises it
                self._error = exc
                self._wake()
                return

    def _next(self, next_tick: float) -> tuple[str, bytes] | None:
        with self._cond:
            while not self._queue and not self._closing:
                remaining = next_tick - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not self._queue:
                return None
            item = self._queue.popleft()
            self.backlog -= len(item[1])
            if self._wake_at is not None and self.backlog <= self._wake_at:
                self._wake_at = None
                self._wake()
            return item

    def _tick(self) -> None:
        if self._watch.on_tick is not None:
            self._watch.on_tick()
        if not self.cancel_requested and self._watch.should_cancel():
            self.cancel_requested = True
            self._wake()


def child_main(
    target: Target,
    argv: list[str],
    workdir: Path,
    env: Mapping[str, str],
    out_w: int,
    err_w: int,
    inherited: list[int],
    prepare: Callable[[], None] | None = None,
) -> NoReturn:
    """The child: set up, run the command, flush, _exit. Never returns, never raises.

    ``prepare`` runs once stdio is on the job's pipes (so its errors reach the job's stderr) and
    before the child enters its work folder.
    """
    code = SETUP_FAILED
    try:
        os.setpgid(0, 0)
        _reset_signals()
        _redirect_stdio(out_w, err_w, inherited)
        if prepare is not None:
            prepare()
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
