"""ASGI middleware: refuse request bodies over the limit before any route or parser sees them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobgate.api.problems import problem


class BodySizeLimit:
    """413 problem for a body larger than `max_bytes`, judged by Content-Length and by the bytes.

    The declared length is checked first (nothing is read); a body without one, or longer than it
    declared, is read up to the limit and refused as soon as it passes it. A body within the limit
    is handed on unchanged.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, f"The body declares {declared} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; the app sees the same.
                await self.app(scope, _replay([message], receive), send)
                return
            body.extend(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if len(body) > self.max_bytes:
                await self._refuse(scope, send, f"The body is over {self.max_bytes} bytes")
                return
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        response = problem(
            Request(scope),
            413,
            slug="payload-too-large",
            title="Request body too large",
            detail=f"{what}; this API takes at most {self.max_bytes}.",
            limit=self.max_bytes,
        )
        await response(scope, _no_more_body, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], then: Receive) -> Receive:
    """Hand out the messages already read, then whatever the server sends next (a disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


async def _no_more_body() -> Message:
    return {"type": "http.disconnect"}
