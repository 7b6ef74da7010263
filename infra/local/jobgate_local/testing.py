"""Start `jobgate dev` as a user would, for tests and tools: a subprocess on free ports, read back its state.

with start_dev(template=Path("template.yaml"), workdir=tmp) as dev:
    httpx.get(f"{dev.http_url}/health/live")
# leaving the block sends Ctrl-C (SIGINT) and waits for the stack to stop

And, for a handler called in the caller's own process (tests, benchmarks): the context Lambda passes it,
and the events the local gateway and SQS pollers build, made from a few words.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .gateway_http import HttpRequest, build_event, request_id
from .poller import build_sqs_event
from .procs import pid_alive, wait_gone
from .template import HttpRoute


class DevStartError(RuntimeError):
    """`jobgate dev` exited or stayed silent before it was ready; the message carries its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def jobgate_command() -> list[str]:
    """The installed ``jobgate`` script next to this interpreter, else ``python -m jobgate_local.cli``."""
    script = Path(sys.executable).parent / "jobgate"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "jobgate_local.cli"]


@dataclass
class DevProcess:
    """A running `jobgate dev` and what its state file says."""

    process: subprocess.Popen[bytes]
    state_file: Path
    log_file: Path
    state: dict[str, Any]

    @property
    def http_url(self) -> str:
        return str(self.state["http_url"])

    @property
    def websocket_url(self) -> str:
        """Where WebSocket clients connect (``ws://127.0.0.1:<port>/<stage>``); add ``?api_key=``."""
        return str(self.state["websocket_url"])

    @property
    def api_key(self) -> str:
        return str(self.state["api_key"])

    @property
    def aws_endpoint_url(self) -> str:
        return str(self.state["aws_endpoint_url"])

    @property
    def resources(self) -> Mapping[str, str]:
        resources: Mapping[str, str] = self.state["resources"]
        return resources

    def faults(self, **settings: Any) -> dict[str, Any]:
        """Set fault injection on the running stack (see ``FaultSettings``; ``rate=0`` turns it off) and
        answer what is in force, with the count of each fault injected so far (no settings: just read)."""
        url = f"{self.aws_endpoint_url}/_jobgate/faults"
        data = json.dumps(settings).encode() if settings else None
        request = urllib.request.Request(url, data=data, method="POST" if settings else "GET")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            state: dict[str, Any] = json.loads(response.read())
        return state

    def child_pids(self) -> list[int]:
        """moto's and every sandbox's pid, as the state file recorded them at start."""
        pids = [int(self.state["moto_pid"])]
        pids += [int(pid) for function in self.state["functions"].values() for pid in function["pids"]]
        return pids

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a user would; the exit status once it has stopped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5.0)
            raise

    def leftover_pids(self, pids: Sequence[int], timeout: float = 5.0) -> list[int]:
        """The given processes still alive after ``timeout`` seconds."""
        wait_gone(pids, timeout)
        return [pid for pid in pids if pid_alive(pid)]


def launch_dev(
    *,
    template: Path,
    workdir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> DevProcess:
    """Start `jobgate dev` on free ports and wait for its state file (written once everything is up).

    Its state goes to `workdir/.jobgate/` (as `make dev`'s goes to the checkout's), so tools run in
    `workdir` find it; its log to `workdir/dev.log`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    state_file = workdir / ".jobgate" / "dev.json"
    log_file = workdir / "dev.log"
    state_file.unlink(missing_ok=True)
    command = [
        *jobgate_command(),
        "dev",
        "--template",
        str(template),
        "--port",
        str(free_port()),
        "--ws-port",
        str(free_port()),
        "--state-file",
        str(state_file),
        *args,
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=template.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while not state_file.exists():
        if process.poll() is not None:
            raise DevStartError(f"jobgate dev exited with {process.returncode}:\n{log_file.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise DevStartError(f"jobgate dev was not ready after {timeout:.0f} s:\n{log_file.read_text()}")
        time.sleep(0.1)
    state = json.loads(state_file.read_text())
    return DevProcess(process=process, state_file=state_file, log_file=log_file, state=state)


@contextmanager
def start_dev(
    *,
    template: Path,
    workdir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Iterator[DevProcess]:
    """:func:`launch_dev`, stopped with Ctrl-C when the block ends."""
    dev = launch_dev(template=template, workdir=workdir, args=args, env=env, timeout=timeout)
    try:
        yield dev
    finally:
        if dev.process.poll() is None:
            dev.stop()


# -- handlers called in-process ---------------------------------------------------------------


@dataclass
class FakeContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str = "function"
    timeout_s: float = 900.0
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/function"
    log_stream_name: str = "local"
    _start: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.timeout_s - (time.monotonic() - self._start)) * 1000)


_PROXY_ROUTE = HttpRoute(
    api="HttpApi", route_key="ANY /{proxy+}", method="ANY", path="/{proxy+}", function="ApiFunction"
)


def http_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The HTTP API (payload 2.0) event of a request to the ANY /{proxy+} route, as the local gateway
    builds it (over HTTPS, as API Gateway is reached). `body` is JSON unless it is bytes."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    sent = {
        "host": "api.example.test",
        "user-agent": "jobgate-local",
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    if body is not None and "content-type" not in sent:
        sent["content-type"] = "application/json"
    request = HttpRequest(
        method=method,
        raw_path=path,
        raw_query=urlencode(dict(query or {})),
        headers=list(sent.items()),
        body=raw,
        source_ip="127.0.0.1",
        port=443,
        scheme="https",
    )
    return build_event(
        request, _PROXY_ROUTE, {"proxy": path.lstrip("/")}, api_id="local", request_id=request_id()
    )


sqs_event = build_sqs_event  # the event an SQS event source hands its function for received messages
