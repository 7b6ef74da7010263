"""Emulated Lambda functions: a pool of sandbox processes per function, one event at a time each.

Each sandbox is a fresh interpreter (``python -m jobgate_local.runtime``), never forked from the
threaded stack, so a handler that forks (the worker) forks from a clean parent. It leads its own
session, so a timeout kills it together with every job child it forked, and Ctrl-C on the console
reaches only the stack, which then stops the sandboxes itself.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .logs import OutputPump, function_logger
from .procs import kill_tree, terminate_tree, wait_gone

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"

# Lambda's limit on a synchronous invocation's request and response payloads (6 MB).
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024

# Environment variables Lambda sets itself; a function's configuration cannot override them.
_RESERVED_PREFIXES = ("AWS_", "_HANDLER", "_X_AMZN", "LAMBDA_")
_LOCAL_DEFAULTS = {
    # No X-Ray daemon runs locally; the Powertools tracer would only complain about it.
    "POWERTOOLS_TRACE_DISABLED": "true",
    "AWS_XRAY_SDK_ENABLED": "false",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TZ": ":UTC",
}


@dataclass(frozen=True)
class FunctionConfig:
    """What the template says about one function, with its environment already resolved."""

    logical_id: str
    function_name: str
    code_dir: Path
    handler: str
    timeout_s: float = 3.0
    memory_mb: int = 128
    environment: Mapping[str, str] = field(default_factory=dict)
    region: str = REGION
    account_id: str = ACCOUNT_ID

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"


@dataclass(frozen=True)
class InvokeError:
    """A failed invoke as Lambda reports it: ``errorType`` and ``errorMessage`` (and the whole error)."""

    error_type: str
    message: str
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InvokeResult:
    request_id: str
    payload: Any = None
    error: InvokeError | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class PoolClosedError(Exception):
    """The function's pool has been stopped."""


class NoCapacityError(Exception):
    """Every sandbox of the function stayed busy for as long as the caller would wait."""


class _Sandbox:
    """One sandbox process and the socket the stack talks to it on."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], conn: Connection, pump: OutputPump) -> None:
        self.index = index
        self.proc = proc
        self.conn = conn
        self.pump = pump
        self.initialised = False

    def destroy(self, grace: float = 0.0) -> None:
        if grace > 0:
            terminate_tree(self.proc.pid, grace)
        else:
            wait_gone(kill_tree(self.proc.pid), 2.0)
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            logger.warning("sandbox %s did not exit", self.proc.pid)
        self.conn.close()
        self.pump.join(timeout=1.0)


class FunctionPool:
    """``size`` warm sandboxes of one function; ``invoke`` takes a free one or waits for one."""

    def __init__(
        self,
        config: FunctionConfig,
        size: int,
        *,
        aws_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        init_timeout_s: float = 120.0,
    ) -> None:
        if size < 1:
            raise ValueError("a function pool needs at least one sandbox")
        if not config.code_dir.is_dir():
            raise FileNotFoundError(f"{config.logical_id}: code folder {config.code_dir} does not exist")
        self.config = config
        self.size = size
        self._aws_env = dict(aws_env or {})
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._python = python
        self._init_timeout_s = init_timeout_s
        self._idle: queue.Queue[_Sandbox] = queue.Queue()
        self._sandboxes: dict[int, _Sandbox] = {}
        self._lock = threading.Lock()
        self._closed = False
        # Each sandbox has a /tmp of its own, as on Lambda: a worker that empties its work folder at
        # cold start must not remove another sandbox's running job.
        self._tmp_root = Path(tempfile.mkdtemp(prefix=f"jobgate-{config.logical_id}-"))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for index in range(1, self.size + 1):
            self._idle.put(self._spawn(index))

    def wait_ready(self, timeout: float) -> dict[str, Mapping[str, Any] | None]:
        """Wait for every idle sandbox's cold start; sandbox label -> its init error (None when fine)."""
        deadline = time.monotonic() + timeout
        taken: list[_Sandbox] = []
        outcome: dict[str, Mapping[str, Any] | None] = {}
        try:
            while len(taken) < self.size:
                try:
                    taken.append(self._idle.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            for sandbox in taken:
                outcome[self._label(sandbox)] = self._await_init(
                    sandbox, max(0.1, deadline - time.monotonic())
                )
        finally:
            for sandbox in taken:
                self._release(sandbox)
        return outcome

    def stop(self, grace: float = 1.0) -> None:
        with self._lock:
            self._closed = True
            sandboxes = list(self._sandboxes.values())
            self._sandboxes.clear()
        threads = [threading.Thread(target=s.destroy, args=(grace,), daemon=True) for s in sandboxes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=grace + 5.0)
        shutil.rmtree(self._tmp_root, ignore_errors=True)

    def pids(self) -> list[int]:
        with self._lock:
            return [s.proc.pid for s in self._sandboxes.values()]

    # -- invoking --------------------------------------------------------------------------------

    def invoke(self, event: Any, *, acquire_timeout: float | None = None) -> InvokeResult:
        """Run one event on a free sandbox, as a synchronous Lambda invoke (RequestResponse)."""
        request_id = str(uuid.uuid4())
        payload = json.dumps(event).encode()
        if len(payload) > MAX_SYNC_PAYLOAD_BYTES:
            message = f"Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the Invoke operation"
            return InvokeResult(request_id, error=InvokeError("RequestEntityTooLargeException", message))
        sandbox = self._acquire(acquire_timeout)
        healthy = False
        try:
            result, healthy = self._invoke_on(sandbox, request_id, payload)
        finally:
            if healthy:
                self._release(sandbox)
            else:
                self._replace(sandbox)
        return result

    def _invoke_on(self, sandbox: _Sandbox, request_id: str, payload: bytes) -> tuple[InvokeResult, bool]:
        started = time.monotonic()
        timeout = self.config.timeout_s
        if not sandbox.initialised:
            init_error = self._await_init(sandbox, self._init_timeout_s)
            if init_error is not None and init_error.get("errorType") == "Sandbox.Timedout":
                return self._failed(request_id, init_error, started), False
        header = {
            "type": "invoke",
            "request_id": request_id,
            "deadline_ms": int((time.time() + timeout) * 1000),
            "invoked_function_arn": self.config.arn,
        }
        logger.debug("START RequestId: %s %s", request_id, self._label(sandbox))
        try:
            sandbox.conn.send_bytes(json.dumps(header).encode())
            sandbox.conn.send_bytes(payload)
            if not sandbox.conn.poll(timeout):
                return self._timed_out(sandbox, request_id, started), False
            answer = json.loads(sandbox.conn.recv_bytes())
            body = sandbox.conn.recv_bytes()
        except (EOFError, OSError):
            return self._crashed(sandbox, request_id, started), False
        duration = (time.monotonic() - started) * 1000
        logger.debug("REPORT RequestId: %s Duration: %.2f ms", request_id, duration)
        if len(body) > MAX_SYNC_PAYLOAD_BYTES:
            error = {
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": f"Response payload size exceeded maximum allowed payload size "
                f"({MAX_SYNC_PAYLOAD_BYTES} bytes).",
            }
            return self._failed(request_id, error, started), True
        if answer["ok"]:
            return InvokeResult(request_id, payload=json.loads(body), duration_ms=duration), True
        return self._failed(request_id, json.loads(body), started), True

    def _await_init(self, sandbox: _Sandbox, timeout: float) -> Mapping[str, Any] | None:
        if sandbox.initialised:
            return None
        try:
            if not sandbox.conn.poll(timeout):
                return {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Init timed out after {timeout:.0f} s",
                }
            message = json.loads(sandbox.conn.recv_bytes())
        except (EOFError, OSError):
            return {"errorType": "Runtime.ExitError", "errorMessage": "Runtime exited during init"}
        sandbox.initialised = True
        error: Mapping[str, Any] | None = message.get("error")
        if error is not None:
            logger.error(
                "%s cold start failed: %s: %s",
                self._label(sandbox),
                error.get("errorType"),
                error.get("errorMessage"),
            )
        return error

    def _failed(self, request_id: str, error: Mapping[str, Any], started: float) -> InvokeResult:
        return InvokeResult(
            request_id,
            error=InvokeError(
                str(error.get("errorType", "Unhandled")), str(error.get("errorMessage", "")), error
            ),
            duration_ms=(time.monotonic() - started) * 1000,
        )

    def _timed_out(self, sandbox: _Sandbox, request_id: str, started: float) -> InvokeResult:
        message = f"RequestId: {request_id} Error: Task timed out after {self.config.timeout_s:.2f} seconds"
        function_logger(self._label(sandbox)).info(
            "%s %s Task timed out after %.2f seconds",
            datetime.now(UTC).isoformat(timespec="milliseconds"),
            request_id,
            self.config.timeout_s,
        )
        error = {"errorType": "Sandbox.Timedout", "errorMessage": message}
        return self._failed(request_id, error, started)

    def _crashed(self, sandbox: _Sandbox, request_id: str, started: float) -> InvokeResult:
        try:
            code = sandbox.proc.wait(timeout=2.0)
            status = f"signal: {-code}" if code < 0 else f"exit status {code}"
        except subprocess.TimeoutExpired:
            status = "connection lost"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {status}"
        logger.log(logging.DEBUG if self._closed else logging.ERROR, "%s %s", self._label(sandbox), message)
        return self._failed(request_id, {"errorType": "Runtime.ExitError", "errorMessage": message}, started)

    # -- sandboxes -------------------------------------------------------------------------------

    def _acquire(self, timeout: float | None) -> _Sandbox:
        if self._closed:
            raise PoolClosedError(self.config.logical_id)
        try:
            return self._idle.get(timeout=timeout)
        except queue.Empty:
            raise NoCapacityError(self.config.logical_id) from None

    def _release(self, sandbox: _Sandbox) -> None:
        if self._closed:
            return
        self._idle.put(sandbox)

    def _replace(self, sandbox: _Sandbox) -> None:
        """A sandbox that timed out or died goes, with all it started; a fresh one takes its place."""
        with self._lock:
            current = self._sandboxes.get(sandbox.index)
            if current is sandbox:
                del self._sandboxes[sandbox.index]
        sandbox.destroy()
        if self._closed:
            return
        try:
            self._idle.put(self._spawn(sandbox.index))
        except PoolClosedError:
            pass
        except OSError:
            logger.exception("could not start a new sandbox for %s", self.config.logical_id)

    def _spawn(self, index: int) -> _Sandbox:
        parent_sock, child_sock = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [self._python, "-m", "jobgate_local.runtime", str(child_sock.fileno())],
                cwd=self.config.code_dir,
                env=self._environment(index),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(child_sock.fileno(),),
                start_new_session=True,
            )
        except OSError:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        assert proc.stdout is not None
        label = self._label_for(index)
        sandbox = _Sandbox(
            index, proc, Connection(parent_sock.detach()), OutputPump(proc.stdout, function_logger(label))
        )
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._sandboxes[index] = sandbox
        if closed:
            sandbox.destroy()
            raise PoolClosedError(self.config.logical_id)
        logger.debug("started sandbox %s (pid %s)", label, proc.pid)
        return sandbox

    def _environment(self, index: int) -> dict[str, str]:
        """The host's environment without anything AWS, then Lambda's variables and the function's own."""
        config = self.config
        tmp = self._tmp_root / str(index)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            key: value
            for key, value in self._base_env.items()
            if not key.startswith(_RESERVED_PREFIXES) and not key.startswith(("JOBGATE_", "POWERTOOLS_"))
        }
        env.update(_LOCAL_DEFAULTS)
        env["TMPDIR"] = str(tmp)
        env.update(config.environment)
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        env.update(
            {
                "AWS_REGION": config.region,
                "AWS_DEFAULT_REGION": config.region,
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
                "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[$LATEST]{uuid.uuid4().hex}",
                "LAMBDA_TASK_ROOT": str(config.code_dir),
                "_HANDLER": config.handler,
            }
        )
        env.update(self._aws_env)
        return env

    def _label(self, sandbox: _Sandbox) -> str:
        return self._label_for(sandbox.index)

    def _label_for(self, index: int) -> str:
        return f"{self.config.logical_id}[{index}]" if self.size > 1 else self.config.logical_id
