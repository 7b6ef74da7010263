"""Inside one emulated Lambda sandbox: import the handler once, then run one event at a time.

Started as ``python -m jobgate_local.runtime <fd>`` in a fresh interpreter (never forked from the
threaded stack), with the function's folder as the working directory, the function's environment,
and ``fd`` a socket to the stack. Everything on the socket is JSON, as it is between Lambda and a runtime.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Handler = Callable[[Any, "LambdaContext"], Any]

_current_request_id = ""


class LambdaContext:
    """The context object Lambda's Python runtime passes to a handler."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        # A string, as in Lambda's runtime (it comes from AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


def _error(error_type: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    if _current_request_id:
        error["requestId"] = _current_request_id
    if exc is not None:
        error["stackTrace"] = traceback.format_tb(exc.__traceback__)
    return error


def load_handler(spec: str) -> tuple[Handler | None, dict[str, Any] | None]:
    """Import ``module.function`` from the task root, naming failures as Lambda's runtime does."""
    module_name, _, function_name = spec.rpartition(".")
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, _error(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}", exc
        )
    except SyntaxError as exc:
        return None, _error(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}", exc
        )
    except Exception as exc:  # an error in the module's init code fails the cold start
        return None, _error(type(exc).__name__, str(exc), exc)
    handler = getattr(module, function_name, None)
    if not callable(handler):
        return None, _error(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return handler, None


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def invoke(handler: Handler, payload: bytes, context: LambdaContext) -> tuple[bool, bytes]:
    """Run the handler on one event; (True, response JSON) or (False, error JSON)."""
    try:
        event = json.loads(payload)
        result = handler(event, context)
    except Exception as exc:
        error = _error(type(exc).__name__, str(exc), exc)
        sys.stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")
        traceback.print_exc()
        return False, json.dumps(error).encode()
    try:
        return True, json.dumps(result, default=_json_default).encode()
    except (TypeError, ValueError) as exc:
        return False, json.dumps(
            _error("Runtime.MarshalError", f"Unable to marshal response: {exc}")
        ).encode()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _current_request_id
        return True


def _configure_logging() -> None:
    """The root handler Lambda's Python runtime installs, in its format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s")
    )
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def serve(conn: Connection) -> int:
    """Cold start, then answer invokes until the stack closes the socket."""
    global _current_request_id
    handler, init_error = load_handler(os.environ["_HANDLER"])
    if init_error is not None:
        sys.stderr.write(f"[ERROR] {init_error['errorType']}: {init_error['errorMessage']}\n")
    conn.send_bytes(json.dumps({"type": "init", "ok": handler is not None, "error": init_error}).encode())
    while True:
        try:
            header = json.loads(conn.recv_bytes())
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return 0
        _current_request_id = header["request_id"]
        if handler is None:  # Lambda initialises again on the next invoke after a failed cold start
            handler, init_error = load_handler(os.environ["_HANDLER"])
        if handler is None:
            ok, body = False, json.dumps(init_error).encode()
        else:
            context = LambdaContext(
                header["request_id"], header["deadline_ms"], header["invoked_function_arn"]
            )
            ok, body = invoke(handler, payload, context)
        sys.stdout.flush()
        sys.stderr.flush()
        _current_request_id = ""
        conn.send_bytes(json.dumps({"type": "result", "ok": ok}).encode())
        conn.send_bytes(body)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd = int(args[0])
    # Job children the handler forks must not hold the stack's socket.
    os.set_inheritable(fd, False)
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    if task_root in sys.path:
        sys.path.remove(task_root)
    sys.path.insert(0, task_root)
    _configure_logging()
    return serve(Connection(fd))


if __name__ == "__main__":
    sys.exit(main())
