"""ASGI middleware: refuse request bodies over the limit before any route or parser sees them; give
each request its deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobgate.adapters import aws
from jobgate.api.problems import problem

# API Gateway's HTTP API answers 504 when the integration has not answered 30 s after the request
# arrived, and the API's Lambda is stopped 29 s after its invocation began (which is later, after any
# cold start). Every AWS call of a request ends by 28 s after its arrival, which leaves a second to answer.
REQUEST_BUDGET_S = 28.0
ANSWER_MARGIN_S = 1.0
# A request stamped older than API Gateway would wait for, or in the future, is not a live request
# (a replayed sample event, a skewed clock): its arrival is taken to be now.
_GATEWAY_TIMEOUT_S = 30.0
_CLOCK_SKEW_S = 2.0
TIMES_KEY = "jobgate.times"


@dataclass(frozen=True)
class RequestTimes:
    """When a request arrived and by when its AWS calls must end, both as time.monotonic()."""

    arrived: float
    deadline: float

    def wait_until(self, wait_s: float) -> float:
        """Until when a request may wait for a job: `wait_s` after its arrival, and early enough for
        one more read of the job (one AWS attempt) to end before the deadline."""
        return min(self.arrived + wait_s, self.deadline - aws.API.attempt_s)


def request_times(
    scope: Scope,
    *,
    wall: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> RequestTimes:
    """From API Gateway's `requestContext.timeEpoch` (ms) when the event has one, else from now; and
    never past what the Lambda context says is left."""
    now, now_wall = monotonic(), wall()
    event = scope.get("aws.event") or {}
    stamp = (event.get("requestContext") or {}).get("timeEpoch") if isinstance(event, dict) else None
    arrived = now
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        age = now_wall - stamp / 1000.0
        if -_CLOCK_SKEW_S <= age <= _GATEWAY_TIMEOUT_S:
            arrived = now - max(0.0, age)
    deadline = arrived + REQUEST_BUDGET_S
    remaining_ms = getattr(scope.get("aws.context"), "get_remaining_time_in_millis", None)
    if callable(remaining_ms):
        deadline = min(deadline, now + remaining_ms() / 1000.0 - ANSWER_MARGIN_S)
    return RequestTimes(arrived=arrived, deadline=deadline)


class RequestDeadline:
    """Puts the request's times in its scope and bounds every AWS call it makes by its deadline."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        times = request_times(scope)
        scope[TIMES_KEY] = times
        # A context variable: the route's thread (FastAPI copies the context into it) sees it too.
        with aws.deadline(times.deadline):
            await self.app(scope, receive, send)


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
