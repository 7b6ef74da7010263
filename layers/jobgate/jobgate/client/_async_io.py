"""What the asyncio client does where the two clients differ beyond `async`/`await`: sleeping, file
reads and writes, WebSocket connections, event callbacks. `_sync_io` has the same names, synchronous;
the synchronous client is generated from the asyncio one (infra/generate_sync_client.py), which imports
this module under the name `_io` and gets `_sync_io` in its place."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING

from jobgate.client.models import JobEvent

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as Connection

EventCallback = Callable[[JobEvent], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[None]]

sleep: Sleep = asyncio.sleep


async def read(fh: IO[bytes], size: int) -> bytes:
    return await asyncio.to_thread(fh.read, size)


async def write(fh: IO[bytes], data: bytes) -> None:
    await asyncio.to_thread(fh.write, data)


async def call(callback: EventCallback, event: JobEvent) -> None:
    pending = callback(event)
    if inspect.isawaitable(pending):
        await pending


async def connect(url: str, *, open_timeout: float, close_timeout: float, user_agent: str) -> Connection:
    from websockets.asyncio.client import connect

    return await connect(
        url, open_timeout=open_timeout, close_timeout=close_timeout, user_agent_header=user_agent
    )


async def receive(socket: Connection, timeout: float) -> str | bytes:
    """The next message; TimeoutError when none came within `timeout` seconds."""
    return await asyncio.wait_for(socket.recv(), timeout)
