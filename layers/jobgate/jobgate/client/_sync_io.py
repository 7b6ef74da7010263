"""`_async_io`'s names, synchronous: what the generated synchronous client calls as `_io`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from jobgate.client.models import JobEvent

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection as Connection

EventCallback = Callable[[JobEvent], None]
Sleep = Callable[[float], None]

sleep: Sleep = time.sleep


def read(fh: IO[bytes], size: int) -> bytes:
    return fh.read(size)


def write(fh: IO[bytes], data: bytes) -> None:
    fh.write(data)


def call(callback: EventCallback, event: JobEvent) -> None:
    callback(event)


def connect(url: str, *, open_timeout: float, close_timeout: float, user_agent: str) -> Connection:
    from websockets.sync.client import connect

    return connect(url, open_timeout=open_timeout, close_timeout=close_timeout, user_agent_header=user_agent)


def receive(socket: Connection, timeout: float) -> str | bytes:
    """The next message; TimeoutError when none came within `timeout` seconds."""
    return socket.recv(timeout=timeout)
