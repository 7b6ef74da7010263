"""The SDK reads every page of a job's outputs, synchronously and asynchronously."""

from __future__ import annotations

import asyncio

import httpx

from tests.unit.client_fakes import JOB_ID, async_client_for, client_for


def pages(request: httpx.Request) -> httpx.Response:
    start = int(request.url.params.get("cursor") or 0)
    limit = int(request.url.params["limit"])
    names = [f"frames/{i:04d}.png" for i in range(250)]
    items = [{"name": n, "size": 1, "media_type": "image/png", "url": f"http://s.test/{n}"} for n in names]
    following = str(start + limit) if start + limit < len(items) else None
    return httpx.Response(200, json={"items": items[start : start + limit], "next_cursor": following})


def test_outputs_follows_every_cursor() -> None:
    client, recorder = client_for(pages)
    outputs = client.outputs(JOB_ID)
    assert [o.name for o in outputs] == [f"frames/{i:04d}.png" for i in range(250)]
    assert len(recorder.requests) == 3


def test_async_outputs_follows_every_cursor() -> None:
    client, _ = async_client_for(pages)
    outputs = asyncio.run(client.outputs(JOB_ID))
    assert len(outputs) == 250 and outputs[-1].name == "frames/0249.png"
