"""A command set of probes for tests that run commands as the worker does, through its zygote.

The zygote imports a command set by 'module:Class' and makes it with no arguments, so what a command
does is chosen by its arguments: `run --target=<probe> --value=<text>` through the worker, or
`[<probe>, <text>...]` when a test calls the zygote itself. Imports stay light: the zygote loads this.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SLEEP = "/bin/sleep" if Path("/bin/sleep").exists() else "sleep"


def private_work_root(monkeypatch: Any) -> Path:
    """Point the worker's work folders (JOBGATE_WORK_ROOT) at a new folder of the caller's.

    The folder is searchable by anyone, unlike a pytest tmp_path: a job may run as another user. The
    caller removes it.
    """
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="jobgate-work-"))
    root.chmod(0o755)
    monkeypatch.setenv("JOBGATE_WORK_ROOT", str(root / "jobgate"))
    return root


Probe = Callable[[list[str]], int]


class BrokenWarm:
    """A command set whose warm-up fails, as zyra's does where it cannot render."""

    name = "broken"

    def contracts(self) -> list[Any]:
        return []

    def warm(self) -> None:
        raise RuntimeError("cannot render here")

    def run(self, argv: list[str]) -> int:
        return 0


class Probes:
    """One command, `test run`, whose `--target` names a probe below and `--value` is its argument."""

    name = "probes"

    def contracts(self) -> list[Any]:
        from jobgate.services.registry import CommandContract, ParamSpec

        params = [
            ParamSpec(dest="target", flags=["--target"], kind="option", required=True),
            ParamSpec(dest="value", flags=["--value"], kind="option"),
        ]
        return [CommandContract(command_set=self.name, stage="test", command="run", params=params)]

    def warm(self) -> None:
        pass

    def run(self, argv: list[str]) -> int:
        if argv[:2] == ["test", "run"]:
            options = dict(word[2:].split("=", 1) for word in argv[2:] if word.startswith("--"))
            return PROBES[options["target"]](options.get("value", "").split())
        return PROBES[argv[0]](argv[1:])


class Keyed:
    """Two commands for secrets: `keyed fetch` declares the secret DATA_TOKEN (and the set declares
    SHARED_KEY for all of its commands); `keyed plain` declares none of its own. Both print the
    environment names they see, then what `--print` names: a variable's value, written in two halves
    with a pause between (a secret split across reads), or nothing."""

    name = "keyed"
    secrets = ["SHARED_KEY"]

    def contracts(self) -> list[Any]:
        from jobgate.services.registry import CommandContract, ParamSpec

        params = [ParamSpec(dest="print", flags=["--print"], kind="option")]
        return [
            CommandContract(
                command_set=self.name, stage="keyed", command="fetch", params=params, secrets=["DATA_TOKEN"]
            ),
            CommandContract(command_set=self.name, stage="keyed", command="plain", params=params),
        ]

    def warm(self) -> None:
        pass

    def run(self, argv: list[str]) -> int:
        options = dict(word[2:].split("=", 1) for word in argv[2:] if word.startswith("--"))
        print("names:", " ".join(sorted(os.environ)), flush=True)  # noqa: T201
        value = os.environ.get(options.get("print", ""), "")
        half = len(value) // 2
        sys.stdout.write(f"value: {value[:half]}")
        sys.stdout.flush()
        time.sleep(0.3)
        sys.stdout.write(f"{value[half:]} end\n")
        sys.stderr.write(f"also on stderr: {value}\n")
        return 0


class Files:
    """One command, `files write`, that writes a file as a real command would: a copy of its input (a
    text or JSON file) with a line added, or `--size` bytes; it exits with `--exit`, and its contract
    names exit 3 as partial success (a run that did part of its work)."""

    name = "files"

    def contracts(self) -> list[Any]:
        from jobgate.services.registry import CommandContract, ParamSpec

        params = [
            ParamSpec(
                dest="input",
                flags=["--input"],
                kind="option",
                role="input",
                media_types=["text/plain", "application/json"],
            ),
            ParamSpec(dest="output", flags=["--output"], kind="option", role="output", required=True),
            ParamSpec(dest="size", flags=["--size"], kind="option", type="integer"),
            ParamSpec(dest="exit", flags=["--exit"], kind="option", type="integer"),
        ]
        return [
            CommandContract(
                command_set=self.name,
                stage="files",
                command="write",
                params=params,
                partial_exit_codes=[3],
            )
        ]

    def warm(self) -> None:
        pass

    def run(self, argv: list[str]) -> int:
        options = dict(word[2:].split("=", 1) for word in argv[2:] if word.startswith("--"))
        target = Path(options["output"])
        target.parent.mkdir(parents=True, exist_ok=True)
        if "input" in options:
            data = Path(options["input"]).read_bytes() + b"copied\n"
        elif "size" in options:
            data = (b"0123456789abcdef" * (int(options["size"]) // 16 + 1))[: int(options["size"])]
        else:
            data = b'{"answer": 42}\n'
        target.write_bytes(data)
        print(f"wrote {target} ({len(data)} bytes)", file=sys.stderr)  # noqa: T201
        return int(options.get("exit", "0"))


# -- output, exit codes, signals --------------------------------------------------------------------


def hello(args: list[str]) -> int:
    print("hello stdout")  # noqa: T201
    print("hello stderr", file=sys.stderr)  # noqa: T201
    return int(args[0]) if args else 0


def exit_with(args: list[str]) -> int:
    code: Any = json.loads(args[0])
    sys.exit(code)


def fail(args: list[str]) -> int:
    raise ValueError("input grid has no rows")


def segfault(args: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.write(1, b"started\n")
    os.kill(os.getpid(), signal.SIGSEGV)
    return 0


def log_with_basic_config(args: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("cmd").info("wrote %s", args[0] if args else "nothing")
    return 0


def surroundings(args: list[str]) -> int:
    checked = ("SIGTERM", "SIGINT", "SIGPIPE", "SIGCHLD")
    defaults = {name: signal.getsignal(getattr(signal, name)) == signal.SIG_DFL for name in checked}
    identity = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
    Path("written-by-the-job.txt").write_text("ok\n")
    report = {
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "default_handlers": defaults,
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "stdin": sys.stdin.read(),
        **identity,
    }
    sys.stdout.write(json.dumps(report))
    return 0


def dump_env(args: list[str]) -> int:
    sys.stdout.write(json.dumps(dict(os.environ)))
    return 0


def sleep(args: list[str]) -> int:
    """Sleep; with a second argument, first leave this process's pid and its parent's in that file."""
    if len(args) > 1:
        _leave(Path(args[1]), {"job": os.getpid(), "parent": os.getppid()})
    print("started", flush=True)  # noqa: T201
    time.sleep(float(args[0]) if args else 30.0)
    return 0


def ignore_sigterm(args: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("started", flush=True)  # noqa: T201
    time.sleep(30)
    return 0


def flood(args: list[str]) -> int:
    """`flood_lines(count)` on stdout, then one line on stderr."""
    out = sys.stdout.buffer
    for start in range(0, int(args[0]), 10_000):
        out.write(flood_lines(int(args[0]), start, 10_000))
    out.flush()
    sys.stderr.write("flood done\n")
    return 0


def flood_lines(count: int, start: int = 0, batch: int | None = None) -> bytes:
    """Numbered lines of 100 bytes: what `flood` prints, for a test to compare with."""
    end = count if batch is None else min(count, start + batch)
    return b"".join(f"line {n:09d} ".encode().ljust(99, b".") + b"\n" for n in range(start, end))


# -- processes a job leaves behind --------------------------------------------------------------------


def spawn_descendants(args: list[str]) -> int:
    """A child in the job's group, one in a new session, and a daemon that double-forked and setsid.

    Their pids go to ``descendants.json`` in the work folder, or to the file named by a second
    argument; with ``wait`` first, the command then sleeps until it is killed.
    """
    in_group = subprocess.Popen([SLEEP, "60"])
    new_session = subprocess.Popen([SLEEP, "60"], start_new_session=True)
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the daemon: fork, setsid, fork again; the middle process exits
        os.close(read_fd)
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(60)
            os._exit(0)
        os.write(write_fd, str(daemon).encode())
        os._exit(0)
    os.close(write_fd)
    daemon_pid = int(os.read(read_fd, 32))
    os.close(read_fd)
    pids = {
        "job": os.getpid(),
        "parent": os.getppid(),
        "in_group": in_group.pid,
        "new_session": new_session.pid,
        "daemon": daemon_pid,
    }
    _leave(Path(args[1]) if len(args) > 1 else Path("descendants.json"), pids)
    print(json.dumps(pids), flush=True)  # noqa: T201
    if args and args[0] == "wait":
        time.sleep(60)
    return 0


def _leave(target: Path, pids: dict[str, int]) -> None:
    """Write the file at once (a test waits for it to appear)."""
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(pids))
    partial.rename(target)


# -- what a job can reach ---------------------------------------------------------------------------------


def connect_private(args: list[str]) -> int:
    port = int(args[0])
    codes = [
        socket.socket().connect_ex(("169.254.169.254", 80)),
        socket.socket().connect_ex(("localhost", port)),
    ]
    sys.stdout.write(json.dumps(codes) + "\n")
    socket.create_connection(("127.0.0.1", port), timeout=2)
    return 0


def connect_loopback(args: list[str]) -> int:
    socket.create_connection(("127.0.0.1", int(args[0])), timeout=2).close()
    return 0


def leave_traps(args: list[str]) -> int:
    outside = Path(args[0])
    Path("result.txt").write_text("fine\n")
    os.symlink(outside / "secret.txt", "secret.txt")
    os.symlink(outside, "escape")
    os.symlink("/etc/passwd", "passwd")
    Path("sub").mkdir()
    os.symlink("../secret.txt", "sub/again.txt")
    os.mkfifo("pipe")
    return 0


def probe_credentials(args: list[str]) -> int:
    """Look everywhere a command could for the worker's secrets, and print what it found as JSON.

    The secrets come reversed (comma-separated) and are only ever searched for as patterns whose own
    bytes are not the secret, so the probe cannot find itself.
    """
    patterns = [_pattern_of(reversed_secret) for reversed_secret in args[0].split(",")]
    me, parent = os.getpid(), os.getppid()
    report: dict[str, Any] = {
        "uid": os.getuid(),
        "self_environ": _found(_read(f"/proc/{me}/environ"), patterns),
        "parent_environ": _found(_read(f"/proc/{parent}/environ"), patterns),
        "environ_of": [pid for pid in _pids() if _found(_read(f"/proc/{pid}/environ"), patterns)],
        "memory_of": [pid for pid in [me, *_ancestors(me)] if _memory_holds(pid, patterns)],
        "credential_objects": sorted(
            {type(o).__name__ for o in gc.get_objects() if type(o).__name__.endswith("Credentials")}
        ),
        "readable_ancestor_memory": [pid for pid in _ancestors(me) if _readable(f"/proc/{pid}/mem")],
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


def _pattern_of(reversed_secret: str) -> re.Pattern[bytes]:
    chars = list(reversed(reversed_secret))
    # The second character in a class: this pattern's source never holds the secret's bytes in a row.
    source = re.escape(chars[0]) + "[" + re.escape(chars[1]) + "]" + re.escape("".join(chars[2:]))
    return re.compile(source.encode())


def _found(data: bytes | None, patterns: list[re.Pattern[bytes]]) -> bool:
    return data is not None and any(p.search(data) for p in patterns)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        stat = _read(f"/proc/{pid}/stat")
        if stat is None:
            break
        pid = int(stat.rsplit(b")", 1)[1].split()[1])
        if pid > 1:
            chain.append(pid)
    return chain


def _memory_holds(pid: int, patterns: list[re.Pattern[bytes]]) -> bool:
    """Whether any readable mapping of the process holds a secret (False when its memory is closed)."""
    maps = _read(f"/proc/{pid}/maps")
    if maps is None:
        return False
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return False
    try:
        for line in maps.decode().splitlines():
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if _region_holds(fd, start, end, patterns):
                return True
    finally:
        os.close(fd)
    return False


def _region_holds(fd: int, start: int, end: int, patterns: list[re.Pattern[bytes]]) -> bool:
    step, overlap = 8 * 1024 * 1024, 256
    offset = start
    while offset < end:
        try:
            data = os.pread(fd, min(step + overlap, end - offset), offset)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EFAULT, errno.EPERM, errno.EACCES):
                return False
            raise
        if any(p.search(data) for p in patterns):
            return True
        offset += step
    return False


PROBES: dict[str, Probe] = {
    probe.__name__: probe
    for probe in (
        hello,
        exit_with,
        fail,
        segfault,
        log_with_basic_config,
        surroundings,
        dump_env,
        sleep,
        ignore_sigterm,
        flood,
        spawn_descendants,
        connect_private,
        connect_loopback,
        leave_traps,
        probe_credentials,
    )
}
