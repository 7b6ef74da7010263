"""What the egress guard in a job's child covers, and what it does not (docs/security.md, "Egress").

It covers Python sockets in the command's own process, and refuses to start a program whose command
line names a URL the policy refuses. It does not see the sockets of native code: a program that finds
a private address by itself (a config file, a redirect, its own lookup), or a fresh interpreter,
connects. These tests run a real `curl` and a real Python from a forked, guarded child.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobgate.services.egress import EgressPolicy

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener: a connection to accept means a command reached 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(1.0)
    yield sock
    sock.close()


def reached(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except TimeoutError:
        return False
    return True


def in_guarded_child(behaviour: Callable[[], dict[str, object]], report: Path) -> dict[str, object]:
    """Run `behaviour` in a forked child under the guard, as the worker runs a command; its report."""

    def command(argv: list[str]) -> int:
        report.write_text(json.dumps(behaviour()))
        return 0

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            EgressPolicy().guarded(command)([])
        except BaseException:
            report.write_text(json.dumps({"crashed": traceback.format_exc()}))
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)
    return dict(json.loads(report.read_text()))


def run(argv: list[str]) -> dict[str, object]:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except PermissionError as exc:
        return {"refused": str(exc)}
    return {"exit": done.returncode}


def test_python_sockets_of_the_command_are_refused(listener: socket.socket, tmp_path: Path) -> None:
    port = listener.getsockname()[1]
    got = in_guarded_child(lambda: {"code": socket.socket().connect_ex(("127.0.0.1", port))}, tmp_path / "r")
    assert got == {"code": 13}  # EACCES
    assert not reached(listener)


@needs_curl
def test_a_program_given_a_refused_url_on_its_command_line_is_not_started(
    listener: socket.socket, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/latest/meta-data/"
    got = in_guarded_child(lambda: run([str(CURL), "-s", "-m", "3", url]), tmp_path / "r")
    assert "egress policy" in str(got.get("refused")), got
    assert not reached(listener)


@needs_curl
def test_a_native_program_that_finds_the_address_itself_is_not_stopped(
    listener: socket.socket, tmp_path: Path
) -> None:
    # The documented limit: the URL reaches curl through a file, not its command line, and curl's own
    # socket is native code the guard cannot see. Only the network around the worker stops this.
    config = tmp_path / "curl.cfg"
    config.write_text(f'url = "http://127.0.0.1:{listener.getsockname()[1]}/"\n')
    got = in_guarded_child(lambda: run([str(CURL), "-s", "-m", "3", "-K", str(config)]), tmp_path / "r")
    assert "exit" in got, got
    assert reached(listener)


def test_a_fresh_interpreter_started_by_the_command_is_not_guarded(
    listener: socket.socket, tmp_path: Path
) -> None:
    code = f"import socket; socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), 3)"
    got = in_guarded_child(lambda: run([sys.executable, "-c", code]), tmp_path / "r")
    assert got == {"exit": 0}
    assert reached(listener)
