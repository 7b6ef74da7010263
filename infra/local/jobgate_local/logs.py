"""The dev console: the stack's own log lines and every emulated function's output, each line prefixed."""

from __future__ import annotations

import logging
import sys
import threading
from typing import IO, TextIO

ROOT_LOGGER = "jobgate_local"


class _ConsoleFormatter(logging.Formatter):
    """``12:00:01 ApiFunction[1] | line``; the level is shown only when it is a warning or worse."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        if name.startswith(f"{ROOT_LOGGER}.fn."):
            name = name.removeprefix(f"{ROOT_LOGGER}.fn.")
        elif name.startswith(ROOT_LOGGER):
            name = "jobgate"
        level = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        line = f"{self.formatTime(record, '%H:%M:%S')} {name:<18} | {level}{record.getMessage()}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def setup_logging(stream: TextIO | None = None, *, verbose: bool = False) -> logging.Handler:
    """Send the stack's logs (and the functions' output) to ``stream``, stderr by default."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_ConsoleFormatter())
    root = logging.getLogger(ROOT_LOGGER)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    return handler


def function_logger(label: str) -> logging.Logger:
    """The logger a function's output goes to; its name is the console prefix."""
    return logging.getLogger(f"{ROOT_LOGGER}.fn.{label}")


class OutputPump:
    """Copies a child's combined stdout/stderr to a logger, line by line, until the pipe closes."""

    def __init__(self, pipe: IO[bytes], logger: logging.Logger) -> None:
        self._pipe = pipe
        self._logger = logger
        self._thread = threading.Thread(target=self._run, name=f"pump-{logger.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._pipe:
            for raw in iter(self._pipe.readline, b""):
                self._logger.info("%s", raw.decode("utf-8", "replace").rstrip("\r\n"))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
