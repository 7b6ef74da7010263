"""An API that answers like jobgate's, in-process (httpx.MockTransport), for the client's unit tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from jobgate.client import AsyncClient, Client, RetryPolicy

API = "http://api.test"
KEY = "unit-test-key"
JOB_ID = "01JD7Q9A1B2C3D4E5F6G7H8J9K"

Handler = Callable[[httpx.Request], httpx.Response]


def job_doc(job_id: str = JOB_ID, status: str = "queued", **fields: Any) -> dict[str, Any]:
    """A job as GET /v1/jobs/{id} answers it."""
    doc: dict[str, Any] = {
        "job_id": job_id,
        "run_id": None,
        "stage": "visualize",
        "command": "heatmap",
        "args": {"output": "map.png"},
        "status": status,
        "progress": 0.0,
        "exit_code": None,
        "stdout": "",
        "stderr": "",
        "error": None,
        "outputs": [],
        "attempts": 0,
        "timeout_s": 600,
        "cancel_requested": False,
        "created_at": "2026-11-22T02:00:00Z",
        "started_at": None,
        "finished_at": None,
        "links": {
            "self": f"/v1/jobs/{job_id}",
            "logs": f"/v1/jobs/{job_id}/logs",
            "outputs": f"/v1/jobs/{job_id}/outputs",
            "download": f"/v1/jobs/{job_id}/download",
            "websocket": None,
        },
    }
    doc.update(fields)
    return doc


def problem(
    status: int, slug: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    body = {
        "type": f"urn:jobgate:problem:{slug}",
        "title": extra.pop("title", slug.replace("-", " ").capitalize()),
        "status": status,
        "detail": detail,
        "instance": extra.pop("instance", "/v1/jobs"),
        **extra,
    }
    return httpx.Response(
        status,
        content=json.dumps(body),
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


class Recorder:
    """Every request the fake API saw, and every pause the client took."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def seen(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests if method in (None, r.method)]


FAST = RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.05)


def client_for(handler: Handler, **kwargs: Any) -> tuple[Client, Recorder]:
    recorder = Recorder(handler)
    client = Client(
        API,
        KEY,
        transport=httpx.MockTransport(recorder),
        sleep=recorder.sleep,
        retry=kwargs.pop("retry", FAST),
        **kwargs,
    )
    return client, recorder


def async_client_for(handler: Handler, **kwargs: Any) -> tuple[AsyncClient, Recorder]:
    recorder = Recorder(handler)
    client = AsyncClient(
        API,
        KEY,
        transport=httpx.MockTransport(recorder),
        sleep=recorder.async_sleep,
        retry=kwargs.pop("retry", FAST),
        **kwargs,
    )
    return client, recorder
