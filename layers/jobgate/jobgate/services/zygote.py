"""The worker's side of the zygote: a warm process, exec'd clean, that forks the child of each job.

A child forked from the worker itself starts as a copy of it: the exec-time environment block in
/proc/self/environ, the parent's /proc/<pid>/environ and boto3's credential objects in memory all hold
the worker's AWS credentials. The zygote is started by exec with an environment holding nothing of the
worker's (no AWS_*, no JOBGATE_*), imports and warms the command sets once, and forks each job's child
(in advance, so the fork is off the job's path); it never sees a credential, so no job can find one in
what it inherits. The worker makes itself non-dumpable before starting it, so a job running under the
same uid cannot read the worker's memory or /proc files either; when the worker runs as root, jobs run
as an unprivileged user instead (docs/security.md says what protects what).

The worker supervises each job as it supervises a child of its own (`executor.supervise`): output from
the pipes, timeout and cancel by signal to the job's process group. The protocol is described in
`jobgate.services.zygote_process`, the module that runs in the zygote.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from jobgate.errors import CommandSetUnavailable, RunnerUnavailable
from jobgate.observability import logger
from jobgate.services.egress import EgressPolicy
from jobgate.services.executor import Child, ExecResult, Watch, signal_group, supervise
from jobgate.services.registry import Registry
from jobgate.services.zygote_process import MAX_MESSAGE, make_undumpable

# Nothing of the worker's own: no credentials, no settings, not the Lambda runtime API's address.
_ENV_KEEP = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_LIBRARY_PATH",
    "PROJ_LIB",
    "PROJ_DATA",
    "GDAL_DATA",
    "MPLBACKEND",
    "MPLCONFIGDIR",
    "XDG_CACHE_HOME",
)
# The unprivileged user jobs run as when the worker runs as root ("nobody" on most systems).
NOBODY = (65534, 65534)
# Imports and warm-up of the command sets; a zygote that takes longer is broken.
_READY_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 5.0
# The worker's import path, in its order, ahead of the interpreter's own; .pth files in it are read (an
# editable install's import hook lives in one).
_BOOTSTRAP = (
    "import json, site, sys; new = [p for p in json.loads(sys.argv[2]) if p not in sys.path]; "
    "sys.path[:0] = new; [site.addsitedir(p) for p in new]; "
    "from jobgate.services.zygote_process import serve; serve(int(sys.argv[1]))"
)


def command_set_spec(command_set: object) -> str:
    """How the zygote imports a command set: 'module:Class', made with no arguments (as entry points are)."""
    kind = type(command_set)
    return f"{kind.__module__}:{kind.__qualname__}"


def zygote_environment(parent: Mapping[str, str]) -> dict[str, str]:
    return {key: parent[key] for key in _ENV_KEEP if key in parent}


class Zygote:
    """Runs each command of the given command sets in a child of one warm, clean process.

    Started on first use (or by `start`), restarted when it is found dead; one job at a time (a
    second caller waits). A zygote lost during a job raises `RunnerUnavailable` once the job's process
    group has been killed, so the job can be retried.
    """

    def __init__(
        self,
        command_sets: Iterable[str],
        egress: EgressPolicy | None = None,
        *,
        warm: bool = True,
        job_user: tuple[int, int] | None = NOBODY,
        answer_timeout_s: float = 10.0,
    ) -> None:
        self._specs = list(command_sets)
        # How long a fork, or a reap with its sweep, may take before the zygote is taken for stuck.
        self.answer_timeout_s = answer_timeout_s
        self._egress = egress if egress is not None else EgressPolicy()
        self._warm = warm
        self._job_user = job_user
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._names: set[str] | None = None  # the command sets it serves, once it is ready
        self._effective_user: tuple[int, int] | None = None
        self._finalizer: weakref.finalize[..., Zygote] | None = None

    @classmethod
    def serving(cls, registry: Registry, egress: EgressPolicy | None = None, **options: Any) -> Zygote:
        """A zygote for every command set of a registry (each must be importable by `command_set_spec`)."""
        names = sorted({contract.command_set for contract in registry.contracts()})
        specs = [command_set_spec(registry.command_set(name)) for name in names]
        return cls(specs, egress, **options)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def job_user(self) -> tuple[int, int] | None:
        """The (uid, gid) its jobs switch to, once it is ready; None when they keep the zygote's user."""
        return self._effective_user

    def start(self) -> None:
        """Start the zygote unless it runs; it imports and warms the command sets while the caller goes on."""
        with self._lock:
            self._spawn()

    def wait_ready(self) -> None:
        """Start the zygote if needed and wait until it is warm; raises RunnerUnavailable if it fails."""
        with self._lock:
            self._ready()

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
        """Run one command in a child of the zygote and supervise it, as `executor.execute` does."""
        spec = {"command_set": command_set, "argv": list(argv), "workdir": str(workdir), "env": dict(env)}

        def launch(out_w: int, err_w: int, _inherited: list[int]) -> Child:
            return self._launch(spec, out_w, err_w)

        with self._lock:
            self._ready()
            if command_set not in (self._names or ()):
                raise CommandSetUnavailable(f"Command set '{command_set}' is not installed here.")
            return supervise(
                launch, workdir=workdir, stdout_path=stdout_path, stderr_path=stderr_path, watch=watch
            )

    def close(self) -> None:
        """Stop the zygote; it kills whatever is left of a job first."""
        with self._lock:
            self._discard()

    # -- the process ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._discard()
        # Before a job can run under this uid: it must not read this process's memory or environ.
        make_undumpable()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            paths = json.dumps([p for p in sys.path if p])
            argv = [sys.executable, "-I", "-c", _BOOTSTRAP, str(theirs.fileno()), paths]
            proc = subprocess.Popen(
                argv,
                env=zygote_environment(os.environ),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._proc, self._sock, self._names = proc, ours, None
        self._finalizer = weakref.finalize(self, _end, proc, ours)
        config = {
            "op": "configure",
            "command_sets": self._specs,
            "warm": self._warm,
            "job_user": list(self._job_user) if self._job_user else None,
            "egress": {"allow": list(self._egress.allow), "s3_buckets": list(self._egress.s3_buckets)},
        }
        self._send(config)
        logger.info("zygote started", zygote_pid=proc.pid, command_sets=self._specs)

    def _ready(self) -> None:
        self._spawn()
        if self._names is not None:
            return
        answer = self._receive(_READY_TIMEOUT_S)
        if "ready" not in answer:
            failure = str(answer.get("failed", answer))
            self._discard()
            logger.error("zygote failed to start", error=failure)
            raise RunnerUnavailable(f"The command sets could not be loaded: {failure.strip()[-2000:]}")
        ready = answer["ready"]
        self._names = set(ready["command_sets"])
        user = ready.get("job_user")
        self._effective_user = (int(user[0]), int(user[1])) if user else None
        if not ready.get("subreaper"):
            logger.warning("zygote is not a subreaper: a job's orphaned processes may outlive it")
        if ready.get("job_user_problem"):
            # Running as root with a Python installation the job user cannot read: jobs keep root.
            logger.error(
                "jobs run as root: the job user cannot read the Python installation",
                job_user=self._job_user,
                problem=ready["job_user_problem"],
            )

    def _launch(self, spec: dict[str, Any], out_w: int, err_w: int) -> Child:
        """Hand a job to the zygote; one retry with a new zygote when it turns out to be gone."""
        for attempt in (1, 2):
            spec_r, spec_w = os.pipe()
            try:
                try:
                    self._send({"op": "run"}, fds=[spec_r, out_w, err_w])
                finally:
                    os.close(spec_r)
                pid = int(self._receive(self.answer_timeout_s)["started"])
            except RunnerUnavailable:
                os.close(spec_w)
                if attempt == 2:
                    raise
                logger.warning("zygote gone before the job started; starting a new one")
                self._ready()
                continue
            child = _ZygoteChild(self, pid)
            try:
                # Only the job's child reads it; if it died first, the pipe is broken and its status
                # says why.
                with contextlib.suppress(BrokenPipeError):
                    _write_all(spec_w, json.dumps(spec).encode())
            finally:
                os.close(spec_w)
            return child
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        sock = self._live_socket()
        try:
            socket.send_fds(sock, [json.dumps(message).encode()], fds or [])
        except OSError as exc:
            self._lost(f"could not write to it ({exc})")

    def _receive(self, timeout_s: float | None) -> dict[str, Any]:
        """The zygote's next message; raises RunnerUnavailable when it ended, or stayed silent too long."""
        sock = self._live_socket()
        if not _readable(sock.fileno(), timeout_s):
            self._lost(f"no answer within {timeout_s} s", kill=True)
        return self._read_message(sock)

    def _poll(self) -> dict[str, Any] | None:
        """A message if one is waiting, else None (for a supervisor that was told the socket is readable)."""
        sock = self._live_socket()
        return self._read_message(sock) if _readable(sock.fileno(), 0) else None

    def _read_message(self, sock: socket.socket) -> dict[str, Any]:
        try:
            data = sock.recv(MAX_MESSAGE)
        except OSError as exc:
            self._lost(f"could not read from it ({exc})")
        if not data:
            self._lost("it exited")
        message: dict[str, Any] = json.loads(data)
        return message

    def _fileno(self) -> int:
        return self._live_socket().fileno()

    def _live_socket(self) -> socket.socket:
        if self._sock is None:
            raise RunnerUnavailable("The zygote is not running.")
        return self._sock

    def _lost(self, why: str, *, kill: bool = False) -> NoReturn:
        pid = self._proc.pid if self._proc is not None else None
        code = self._proc.poll() if self._proc is not None else None
        logger.error("zygote lost", zygote_pid=pid, reason=why, exit_code=code)
        self._discard(kill=kill)
        raise RunnerUnavailable(f"The process that runs commands stopped: {why}.")

    def _discard(self, *, kill: bool = False) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._proc is not None and self._sock is not None:
            _end(self._proc, self._sock, kill=kill)
        self._proc, self._sock, self._names, self._finalizer = None, None, None, None


class _ZygoteChild:
    """A job's child in the zygote, watched and signalled from here; the zygote reaps it when asked.

    Its exit is seen through a pidfd of our own (the zygote does not reap it before we ask, so the pid
    cannot be reused meanwhile): a zygote that stops answering cannot hide it. Only without pidfds is
    the zygote's word awaited.
    """

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.pid = pid
        self._zygote = zygote
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None
        self._fd = self._pidfd if self._pidfd is not None else zygote._fileno()
        self._exited = False

    @property
    def exit_fd(self) -> int | None:
        return self._fd

    def exited(self) -> bool:
        if self._exited:
            return True
        if self._pidfd is not None:
            self._exited = _readable(self._pidfd, 0)
        else:
            message = self._zygote._poll()
            if message is not None:
                self._exited = self._expect(message, "exited")
        return self._exited

    def signal_group(self, signum: signal.Signals) -> None:
        # The zygote reaps the child only when asked: until then its group id cannot be reused.
        signal_group(self.pid, signum)

    def reap(self) -> int:
        self._zygote._send({"op": "reap"})
        while True:
            message = self._zygote._receive(self._zygote.answer_timeout_s)
            if "status" in message:
                return int(message["status"])
            self._expect(message, "exited")

    def abort(self) -> None:
        signal_group(self.pid, signal.SIGKILL)
        try:
            self.reap()
        except Exception:  # the zygote is gone or stuck: it was discarded, and is restarted on next use
            logger.warning("could not reap a job's child after an error", pid=self.pid)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _expect(self, message: dict[str, Any], key: str) -> bool:
        if message.get(key) != self.pid:
            self._zygote._lost(f"unexpected answer {message!r}", kill=True)
        return True


def _end(proc: subprocess.Popen[bytes], sock: socket.socket, *, kill: bool = False) -> None:
    """End a zygote: closing its socket makes it kill what is left of a job and exit."""
    sock.close()
    if kill:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        proc.wait(_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _readable(fd: int, timeout_s: float | None) -> bool:
    poller = select.poll()  # not select.select: it cannot watch an fd numbered 1024 or more
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout_s is None else timeout_s * 1000))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
