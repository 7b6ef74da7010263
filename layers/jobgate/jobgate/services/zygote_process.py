"""The zygote's own side: a clean, warm process that forks each job's child and kills all a job leaves.

It is started by `jobgate.services.zygote.Zygote` through exec, with an environment that holds nothing
of the worker's, and talks to the worker over one SOCK_SEQPACKET socket, a JSON object a message:

    worker -> zygote   {"op": "configure", ...}         zygote -> worker   {"ready": {...}} or {"failed": ..}
    worker -> zygote   {"op": "run"} + fds [spec, stdout, stderr]
                                                        zygote -> worker   {"started": pid}
    (the worker writes the job's spec -- command set, argv, workdir, env -- into the spec pipe; only the
    job's child reads it, so no job's arguments are ever in the zygote's memory for a later job to find)
                                                        zygote -> worker   {"exited": pid}
    worker -> zygote   {"op": "reap"}                   zygote -> worker   {"status": s, "swept": n}

A job's child is forked in advance (the spare) and waits for its job, so the fork is off the job's
path. The zygote is a child subreaper: whatever a job started, in a new session or not, becomes the
zygote's child once its parent dies, and everything is killed when the job is reaped. One job runs at a
time. The zygote exits when the worker's end of the socket closes (the worker exited, or was killed),
killing the job's processes first.

This module imports only what a command's child may carry: it runs in the zygote and in every job.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from jobgate.services.egress import EgressPolicy
from jobgate.services.executor import (
    SETUP_FAILED,
    Target,
    child_main,
    fork_with_signals_blocked,
    signal_group,
)

MAX_MESSAGE = 1024 * 1024
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
# Only where pidfd_open is unavailable: how often to look for the job's exit.
_EXIT_POLL_S = 0.02

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    """prctl(2) for the options that take one integer; raises OSError when refused."""
    if _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def make_undumpable() -> None:
    """Processes of the same uid (a job's) can then read neither this one's memory nor its /proc files."""
    prctl(_PR_SET_DUMPABLE, 0)


def serve(control_fd: int) -> None:
    """The zygote's main: configure, warm, then run jobs until the worker goes away."""
    _Zygote(socket.socket(fileno=control_fd)).serve()


class _WorkerGone(Exception):
    """The worker's end of the socket closed."""


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.targets: dict[str, Target] = {}
        self.job_user: tuple[int, int] | None = None
        self._spare: _Spare | None = None
        self._job: int | None = None

    def serve(self) -> None:
        # Ctrl-C is for the worker; the zygote ends when the worker does. SIGTERM ends it cleanly.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        make_undumpable()
        try:
            if not self._configure():
                return
            while True:
                message, fds = self._receive()
                if message.get("op") == "run" and len(fds) == 3:
                    self._run(fds)
                else:
                    _close_all(fds)
                    self._send({"error": f"unexpected message {message!r}"})
        except _WorkerGone:
            pass
        finally:
            self._end()

    def _configure(self) -> bool:
        try:
            config, fds = self._receive()
            _close_all(fds)
            subreaper = _become_subreaper()
            user = config.get("job_user")
            self.job_user = (int(user[0]), int(user[1])) if user and os.geteuid() == 0 else None
            user_problem = self.job_user and _unreadable_for(self.job_user, [p for p in sys.path if p])
            if user_problem:
                self.job_user = None  # the job could not even import what it runs: jobs keep our user
            # getaddrinfo encodes host names with this codec, and the egress guard resolves in every job.
            importlib.import_module("encodings.idna")
            egress = config.get("egress") or {}
            policy = EgressPolicy(egress.get("allow", ()), s3_buckets=egress.get("s3_buckets", ()))
            os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="jobgate-zygote-mpl-"))
            for spec in config["command_sets"]:
                command_set = _load(spec)
                if config.get("warm"):
                    command_set.warm()
                # The same guard the worker applied when it forked the command itself.
                self.targets[command_set.name] = policy.guarded(command_set.run)
            # What the warm-up left is shared by every job from now on: no collector pass copies it.
            gc.collect()
            gc.freeze()
            self._spare = self._fork_spare()
        except _WorkerGone:
            raise
        except BaseException:
            self._send({"failed": traceback.format_exc()})
            return False
        ready = {
            "pid": os.getpid(),
            "command_sets": sorted(self.targets),
            "subreaper": subreaper,
            "job_user": self.job_user,
            "job_user_problem": user_problem or None,
        }
        self._send({"ready": ready})
        return True

    def _run(self, fds: list[int]) -> None:
        spare, self._spare = self._spare, None
        try:
            if spare is None or not spare.hand(fds):
                if spare is not None:
                    spare.discard()
                spare = self._fork_spare()
                if not spare.hand(fds):  # pragma: no cover - a child just forked cannot be gone
                    raise RuntimeError("a job's child could not take its job")
        finally:
            _close_all(fds)
        self._job = spare.pid
        self._send({"started": spare.pid})
        status = self._watch(spare.pid)
        self._job = None
        swept = _sweep()
        self._send({"status": status, "swept": swept})
        self._spare = self._fork_spare()  # after the sweep, which would kill it

    def _watch(self, pid: int) -> int:
        """Tell the worker when the job's child exits; reap it (killing its group first) when asked."""
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        exited = reap = False
        with contextlib.ExitStack() as stack:
            sel = stack.enter_context(selectors.DefaultSelector())
            sel.register(self.control, selectors.EVENT_READ)
            if pidfd is not None:
                stack.callback(os.close, pidfd)
                sel.register(pidfd, selectors.EVENT_READ)
            while True:
                ready = sel.select(None if (pidfd is not None or exited) else _EXIT_POLL_S)
                if any(key.fileobj is self.control for key, _ in ready):
                    message, fds = self._receive()
                    _close_all(fds)
                    if message.get("op") != "reap":
                        self._send({"error": f"unexpected message {message!r} while a job runs"})
                    reap = True
                if not exited and _has_exited(pid):
                    exited = True
                    if pidfd is not None:
                        sel.unregister(pidfd)  # it stays readable from now on
                    self._send({"exited": pid})
                if exited and reap:
                    # Its group first, while the zombie still holds the group id.
                    signal_group(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    return status

    def _fork_spare(self) -> _Spare:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_pid = os.getpid()
        pid, parent_mask = fork_with_signals_blocked()
        if pid == 0:
            ours.close()
            _spare_main(self, theirs, zygote_pid)
        signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
        theirs.close()
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return _Spare(pid, ours)

    def _end(self) -> None:
        """The worker is gone (or this process is told to stop): nothing of any job may outlive it."""
        if self._job is not None:
            signal_group(self._job, signal.SIGKILL)
        if self._spare is not None:
            self._spare.discard()
        _sweep()

    def _receive(self) -> tuple[dict[str, Any], list[int]]:
        data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 4)
        if not data:
            _close_all(fds)
            raise _WorkerGone
        message: dict[str, Any] = json.loads(data)
        return message, list(fds)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.control.send(json.dumps(message).encode())
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _WorkerGone from exc


class _Spare:
    """A job's child forked in advance, waiting for its job's fds on a socket of its own."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock

    def hand(self, fds: list[int]) -> bool:
        """Give it its job; False when it is gone (then it must be discarded)."""
        try:
            socket.send_fds(self._sock, [b"job"], fds)
        except OSError:
            return False
        finally:
            self._sock.close()
        return True

    def discard(self) -> None:
        self._sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _spare_main(zygote: _Zygote, sock: socket.socket, zygote_pid: int) -> NoReturn:
    """A spare child: wait, every signal still blocked, for a job; then become it. Never returns."""
    try:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # an idle spare dies with the zygote
        if os.getppid() != zygote_pid:
            os._exit(0)
        zygote.control.close()
        _, fds, _, _ = socket.recv_fds(sock, 16, 3)
        sock.close()
    except BaseException:
        os._exit(SETUP_FAILED)
    if len(fds) != 3:
        os._exit(0)  # no job: the zygote is ending
    spec_fd, out_w, err_w = fds
    try:
        spec = json.loads(_read_all(spec_fd))
        os.close(spec_fd)
        target = zygote.targets.get(spec["command_set"]) or _unknown(spec["command_set"])
        workdir = Path(spec["workdir"])
        argv, env = list(spec["argv"]), dict(spec["env"])
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(err_w, f"jobgate: the job's spec could not be read:\n{traceback.format_exc()}".encode())
        os._exit(SETUP_FAILED)

    def become_the_job() -> None:
        _become_job(workdir, zygote.job_user, zygote_pid)

    child_main(target, argv, workdir, env, out_w, err_w, [], prepare=become_the_job)


def _become_job(workdir: Path, job_user: tuple[int, int] | None, zygote_pid: int) -> None:
    """Run as the job's user when the zygote is root; die with the zygote."""
    if job_user is not None and os.geteuid() == 0:
        uid, gid = job_user
        _hand_over(workdir, uid, gid)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # The zygote is not dumpable (nor is a process whose uid just changed); the job's own /proc files
    # are its own again. Nothing it inherited from the zygote is secret.
    prctl(_PR_SET_DUMPABLE, 1)
    # After the uid change, which clears it.
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote_pid:
        raise RuntimeError("the zygote ended before the job started")


def _hand_over(workdir: Path, uid: int, gid: int) -> None:
    """The work folder and what was staged in it, to the job's user. Links are not followed."""
    os.chown(workdir, uid, gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(workdir):
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def _sweep() -> int:
    """Kill and reap every child of this process, and every child they leave; answer how many.

    As a subreaper the zygote inherits what a job's processes orphan (a daemon that double-forked, a
    process that called setsid), so once the job's own child is reaped, its children are all there is.
    """
    swept = 0
    while True:
        children = _children()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        swept += len(children)
        if children:
            continue  # what those left was handed to us as they died
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return swept  # no child at all
        time.sleep(0.005)  # one was being handed over as we listed: list again


def _children() -> list[int]:
    me = os.getpid()
    try:
        # Per thread: a native library's threads (a BLAS pool) could be anyone's parent in principle.
        return [
            int(pid)
            for task in os.listdir(f"/proc/{me}/task")
            for pid in Path(f"/proc/{me}/task/{task}/children").read_text().split()
        ]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: look at every process
        pass
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                children.append(int(entry.name))
    return children


def _unreadable_for(user: tuple[int, int], paths: list[str]) -> str | None:
    """The first of ``paths`` (the interpreter's own among them) that the user cannot read, and why."""
    read_fd, write_fd = os.pipe()
    pid, parent_mask = fork_with_signals_blocked()
    if pid == 0:
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(user[1], user[1], user[1])
            os.setresuid(user[0], user[0], user[0])
            for path in paths:
                try:
                    if os.path.isdir(path):
                        os.listdir(path)
                    else:
                        open(path, "rb").close()  # noqa: SIM115 - opened to be checked only
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    os.write(write_fd, f"{path}: {exc.strerror}".encode())
                    break
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
    os.close(write_fd)
    try:
        answer = _read_all(read_fd).decode()
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    return answer or None


def _become_subreaper() -> bool:
    try:
        prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        return False
    return True


def _has_exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _load(spec: str) -> Any:
    """A command set from 'module:attribute', called with no arguments (as the entry points are)."""
    module, _, attribute = spec.partition(":")
    factory: Any = importlib.import_module(module)
    for part in attribute.split("."):
        factory = getattr(factory, part)
    return factory()


def _unknown(name: str) -> Target:
    def refuse(_argv: list[str]) -> int:
        sys.stderr.write(f"jobgate: command set '{name}' is not loaded in this worker.\n")
        return SETUP_FAILED

    return refuse


def _read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 65536):
        parts.append(chunk)
    return b"".join(parts)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _exit_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)
