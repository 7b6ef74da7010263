"""Sync mode answers before API Gateway gives up: its wait counts from the request's arrival."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import API_KEY, Client
from tests.support.lambdas import FakeContext, HttpAnswer, http_event


def submit_sync(client: Client, body: dict[str, Any], *, arrived_s_ago: float) -> tuple[HttpAnswer, float]:
    """POST /v1/jobs as API Gateway hands it over `arrived_s_ago` seconds after it arrived (a cold
    start, a slow authorizer); answer the answer and how long the handler took."""
    event = http_event("POST", "/v1/jobs", body=body, headers={"X-API-Key": API_KEY})
    event["requestContext"]["timeEpoch"] = int((time.time() - arrived_s_ago) * 1000)
    started = time.monotonic()
    out = client.api.handler(event, FakeContext(function_name="api", timeout_s=29))
    took = time.monotonic() - started
    answer = HttpAnswer(status=out["statusCode"], headers=out.get("headers", {}), body=out["body"].encode())
    return answer, took


def test_a_slow_submit_still_answers_within_wait_s_of_the_requests_arrival(
    client: Client, make_asset: Callable[..., str], npy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = client.api._asgi.app.state.services
    store = services.store
    create = store.create

    def slow_create(job: Any) -> Any:
        time.sleep(1.0)  # a slow DynamoDB write (throttling, a cold connection)
        return create(job)

    monkeypatch.setattr(store, "create", slow_create)
    args = {"input": f"asset://{make_asset(npy_file, 'application/x-npy')}", "output": "map.png"}
    body = {"stage": "visualize", "command": "heatmap", "args": args, "mode": "sync", "wait_s": 25}
    # No worker runs: the job stays queued, so the answer is the 202 at the end of the wait.
    answer, took = submit_sync(client, body, arrived_s_ago=23.0)
    assert answer.status == 202
    assert answer.json()["status"] == "queued"
    assert 23.0 + took <= 25.5  # counted from the arrival, the slow write included; well before 29 s
    assert took >= 1.0
