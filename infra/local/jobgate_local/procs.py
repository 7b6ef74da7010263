"""Process and port helpers: reserve listening ports up front, and kill a process with all it started."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")


class StartupError(Exception):
    """The local stack cannot start; the message is one line for the console."""


class PortInUseError(StartupError):
    """A port the local stack needs is taken by another program."""

    def __init__(self, host: str, port: int, purpose: str, hint: str = "") -> None:
        self.host, self.port, self.purpose = host, port, purpose
        message = f"port {port} on {host} is already in use ({purpose})"
        super().__init__(f"{message}; {hint}" if hint else message)


def reserve_port(host: str, port: int, purpose: str, hint: str = "") -> socket.socket:
    """Bind and listen now, so a port in use is found before anything starts and no one can take it later.

    Port 0 takes any free port; read it back with ``sock.getsockname()[1]``.
    """
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every small answer waits for the client's delayed ACK (about 40 ms).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restarted stack rebind while the previous one's connections sit in TIME_WAIT; a port that
    # another socket is listening on still fails with EADDRINUSE.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUseError(host, port, purpose, hint) from exc
        raise
    return sock


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _read_stat(pid)
    return stat is None or stat[0] != "Z"


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of a process from /proc, or None where /proc cannot tell."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself hold spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _all_stats() -> dict[int, tuple[str, int, int]]:
    stats: dict[int, tuple[str, int, int]] = {}
    if not _PROC.is_dir():
        return stats
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def process_tree(pid: int) -> set[int]:
    """The process, every descendant, and every process in its session (our sandboxes lead their own).

    A job child re-parented to init after its parent died is still found through its session.
    """
    stats = _all_stats()
    found = {pid}
    found.update(p for p, (_, _, sid) in stats.items() if sid == pid)
    children: dict[int, list[int]] = {}
    for p, (_, ppid, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> set[int]:
    """Send ``sig`` to a process and all it started (see :func:`process_tree`); returns the pids signalled."""
    pids = process_tree(pid)
    for target in pids:
        _signal(target, sig)
    try:
        os.killpg(pid, sig)  # where /proc is missing, the process group is the best we know
    except (ProcessLookupError, PermissionError):
        pass
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of the processes is alive; True when they are all gone in time."""
    remaining = set(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = {p for p in remaining if pid_alive(p)}
        if not remaining:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def terminate_tree(pid: int, grace: float) -> None:
    """SIGTERM the tree, then SIGKILL whatever is left after ``grace`` seconds."""
    pids = kill_tree(pid, signal.SIGTERM)
    if not wait_gone(pids, grace):
        pids |= kill_tree(pid, signal.SIGKILL)
        wait_gone(pids, 2.0)
