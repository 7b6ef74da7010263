"""Maps: one command over many items as chunk jobs, released max_parallel at a time, paused and resumed,
a chunk retried, merged into one file; the API and the worker as their roles on the strict local AWS."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jobgate.adapters.dynamo import JobStore
from jobgate.errors import StoreError
from jobgate.models import Job, JobStatus, utcnow
from jobgate.services import maps as maps_service
from jobgate.services.maps import MapAdvancer, chunk_job_id
from ulid import ULID

from tests.integration.conftest import API_KEY, Client
from tests.integration.test_job_events import FakeConnections
from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler, pump

SCHEMA = {
    "fields": [
        {"name": "id", "type": "int", "unique": True, "min": 1, "max": 10_000_000},
        {"name": "who", "type": "name"},
        {"name": "mail", "type": "email", "unique": True},
        {"name": "tier", "type": "choice", "values": ["gold", "silver"]},
    ]
}


@pytest.fixture
def schema(make_asset: Callable[..., str], tmp_path: Path) -> Callable[[dict[str, Any]], str]:
    def upload(document: dict[str, Any]) -> str:
        path = tmp_path / f"schema-{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(document))
        return f"asset://{make_asset(path, 'application/json')}"

    return upload


def synth_map(schema_ref: str, **extra: Any) -> dict[str, Any]:
    return {
        "stage": "synth",
        "command": "generate",
        "args": {"schema": schema_ref, "rows": 1250, "seed": 11, "output": "part.csv"},
        "over": "chunk",
        "items": {"range": [0, 8]},
        **extra,
    }


def drain(client: Client, rounds: int = 40) -> int:
    """Run the worker until the queue is empty: each chunk's end releases the next."""
    ran = 0
    for _ in range(rounds):
        done = client.run_worker()
        if done == 0:
            return ran
        ran += done
    return ran


def counts(client: Client, map_id: str) -> dict[str, Any]:
    view = client.call("GET", f"/v1/maps/{map_id}")
    assert view.status == 200, view.body
    return view.json()  # type: ignore[no-any-return]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - a presigned URL of the local S3
        return answer.read()  # type: ignore[no-any-return]


def test_a_synth_map_of_8_chunks_merges_into_10000_rows_with_one_header_and_unique_ids(
    client: Client, schema: Callable[[dict[str, Any]], str], store: JobStore
) -> None:
    created = client.call(
        "POST", "/v1/maps", body=synth_map(schema(SCHEMA), max_parallel=3, merge={"concat": "csv"})
    )
    assert created.status == 201, created.body
    view = created.json()
    map_id = view["map_id"]
    assert created.headers["location"] == f"/v1/maps/{map_id}"
    # Only max_parallel chunks are queued; the others wait, with no message in the queue.
    assert view["counts"]["queued"] == 3 and view["counts"]["waiting"] == 5, view["counts"]
    assert view["status"] == "queued"
    # Each chunk records where its input's file is, as a job does: its worker reads no asset.
    first = store.get(chunk_job_id(map_id, 0))
    assert [o.key for o in first.input_objects.values()][0].endswith("/schema-0.json")

    assert drain(client) == 9  # 8 chunks, then the merge
    view = counts(client, map_id)
    assert view["status"] == "succeeded", view
    assert view["counts"]["succeeded"] == 8
    assert view["merge"]["status"] == "succeeded"

    merged = client.call("GET", f"/v1/maps/{map_id}/download")
    assert merged.status == 307, merged.body
    text = fetch(merged.headers["location"]).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "who", "mail", "tier"]
    assert len(rows) == 10_001
    assert sum(r == rows[0] for r in rows) == 1  # one header
    assert len({r[0] for r in rows[1:]}) == 10_000 and len({r[2] for r in rows[1:]}) == 10_000

    # Chunks are paged, each with its job; a chunk previews its output inline.
    listed = client.call("GET", f"/v1/maps/{map_id}/chunks", query={"limit": "5"})
    assert listed.status == 200, listed.body
    page = listed.json()
    assert [c["chunk"] for c in page["items"]] == [0, 1, 2, 3, 4] and page["next_cursor"] == "5"
    rest = client.call("GET", f"/v1/maps/{map_id}/chunks", query={"limit": "5", "cursor": "5"}).json()
    assert [c["chunk"] for c in rest["items"]] == [5, 6, 7] and rest["next_cursor"] is None
    assert all(c["job"]["args"]["chunk"] == c["chunk"] for c in page["items"] + rest["items"])
    one = client.call("GET", f"/v1/maps/{map_id}/chunks/3", query={"preview": "1"}).json()
    assert one["job"]["status"] == "succeeded"
    preview = one["preview"]["text"].splitlines()
    assert preview[0] == "id,who,mail,tier" and len(preview) == 20 and one["preview"]["truncated"]
    # Every chunk and the merge ended: the map left the sweeper's index of open maps.
    assert store.active_records("map") == []
    # A finished map cannot be paused.
    paused = client.call("POST", f"/v1/maps/{map_id}/pause")
    assert paused.status == 409, paused.body


def test_pause_holds_the_waiting_chunks_resume_releases_them_and_a_chunk_retries(
    client: Client, schema: Callable[[dict[str, Any]], str]
) -> None:
    body = synth_map(schema(SCHEMA), max_parallel=1, items={"range": [0, 4]})
    body["args"]["rows"] = 10
    map_id = client.call("POST", "/v1/maps", body=body).json()["map_id"]
    paused = client.call("POST", f"/v1/maps/{map_id}/pause")
    assert paused.status == 200 and paused.json()["status"] == "paused", paused.body

    assert drain(client) == 1  # the chunk already released runs; nothing new starts
    view = counts(client, map_id)
    assert view["status"] == "paused"
    assert view["counts"] | {} == {**view["counts"], "succeeded": 1, "waiting": 3, "queued": 0}

    resumed = client.call("POST", f"/v1/maps/{map_id}/resume").json()
    assert resumed["status"] == "running" and resumed["counts"]["queued"] == 1
    assert drain(client) == 3
    assert counts(client, map_id)["status"] == "succeeded"

    first = client.call("GET", f"/v1/maps/{map_id}/chunks/2").json()["job"]
    retried = client.call("POST", f"/v1/maps/{map_id}/chunks/2/retry")
    assert retried.status == 201, retried.body
    retry = retried.json()["job"]
    assert retry["job_id"] != first["job_id"] and retry["status"] == "queued"
    assert drain(client) == 1
    again = client.call("GET", f"/v1/maps/{map_id}/chunks/2").json()["job"]
    assert again["job_id"] == retry["job_id"] and again["status"] == "succeeded"
    assert again["args"] == first["args"]

    # No merge was asked: merging now needs a concat; the merge is a job of its own.
    assert client.call("POST", f"/v1/maps/{map_id}/merge", body={}).status == 409
    merging = client.call("POST", f"/v1/maps/{map_id}/merge", body={"concat": "csv"})
    assert merging.status == 202, merging.body
    assert merging.json()["merge"]["status"] == "queued"
    assert drain(client) == 1
    rows = fetch(client.call("GET", f"/v1/maps/{map_id}/download").headers["location"]).decode().splitlines()
    assert len(rows) == 41 and rows[0] == "id,who,mail,tier"


def test_a_map_is_checked_whole_before_anything_is_written(
    client: Client, schema: Callable[[dict[str, Any]], str], store: JobStore
) -> None:
    ref = schema(SCHEMA)
    unknown = client.call("POST", "/v1/maps", body=synth_map(ref, over="colour"))
    assert unknown.status == 422, unknown.body
    assert unknown.json()["errors"][0]["loc"] == ["body", "over"]

    bad_item = synth_map(ref, over="rows", items=[10, 20, 0, 30])
    bad_item["args"].pop("rows")
    refused = client.call("POST", "/v1/maps", body=bad_item)
    assert refused.status == 422, refused.body
    assert refused.json()["errors"][0]["loc"][:3] == ["body", "items", 2]
    assert "Item 2" in refused.json()["detail"]

    too_many = client.call("POST", "/v1/maps", body=synth_map(ref, items={"range": [0, 10_001]}))
    assert too_many.status == 422, too_many.body
    assert store.active_records("map") == []
    assert client.call("GET", "/v1/jobs").json()["items"] == []


def test_a_map_whose_chunks_all_succeeded_has_not_ended_before_its_merge(
    client: Client, schema: Callable[[dict[str, Any]], str]
) -> None:
    body = synth_map(schema(SCHEMA), max_parallel=8, merge={"concat": "csv"})
    map_id = client.call("POST", "/v1/maps", body=body).json()["map_id"]
    assert pump(client.worker, client.resources.queue_url, max_batches=8) == 8  # the chunks, not the merge
    view = counts(client, map_id)
    assert view["counts"]["succeeded"] == 8
    # No merged file yet: a client waiting for the map to end (jobgate map --wait) must wait on.
    assert view["status"] == "running", view
    assert view["merge"]["status"] == "queued"
    assert client.run_worker() == 1
    view = counts(client, map_id)
    assert view["status"] == "succeeded" and view["merge"]["status"] == "succeeded", view


def test_a_map_with_a_failed_chunk_merges_only_when_forced(
    client: Client, schema: Callable[[dict[str, Any]], str]
) -> None:
    # A unique domain of 100 values: chunks 0 and 1 (50 rows each) fit, chunk 2 cannot and exits 2.
    small = {"fields": [{"name": "n", "type": "int", "unique": True, "min": 0, "max": 99}]}
    body = synth_map(schema(small), items={"range": [0, 3]}, merge={"concat": "csv"})
    body["args"]["rows"] = 50
    map_id = client.call("POST", "/v1/maps", body=body).json()["map_id"]
    assert drain(client) == 3  # no merge starts: a chunk failed
    view = counts(client, map_id)
    assert view["status"] == "failed" and view["counts"]["failed"] == 1 and view["merge"] is None

    refused = client.call("POST", f"/v1/maps/{map_id}/merge", body={})
    assert refused.status == 409, refused.body
    assert refused.json()["chunks"] == [2] and "Chunk(s) 2 " in refused.json()["detail"]
    assert client.call("GET", f"/v1/maps/{map_id}/download").status == 409

    forced = client.call("POST", f"/v1/maps/{map_id}/merge", body={"force": True})
    assert forced.status == 202, forced.body
    assert drain(client) == 1
    rows = fetch(client.call("GET", f"/v1/maps/{map_id}/download").headers["location"]).decode().splitlines()
    assert rows[0] == "n" and len(rows) == 101 and len(set(rows[1:])) == 100


def test_cancelling_a_map_ends_every_waiting_and_queued_chunk(
    client: Client, schema: Callable[[dict[str, Any]], str]
) -> None:
    map_id = client.call("POST", "/v1/maps", body=synth_map(schema(SCHEMA), max_parallel=2)).json()["map_id"]
    cancelled = client.call("DELETE", f"/v1/maps/{map_id}")
    assert cancelled.status == 200, cancelled.body
    view = cancelled.json()
    assert view["status"] == "cancelled" and view["counts"]["cancelled"] == 8, view["counts"]
    assert drain(client) == 2  # the two queued messages find their jobs cancelled and run nothing
    assert counts(client, map_id)["counts"]["cancelled"] == 8
    assert client.call("POST", f"/v1/maps/{map_id}/pause").status == 409


def test_a_release_lost_with_its_worker_is_made_up_by_the_sweeper(
    client: Client, schema: Callable[[dict[str, Any]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = synth_map(schema(SCHEMA), max_parallel=1, items={"range": [0, 3]})
    body["args"]["rows"] = 10
    map_id = client.call("POST", "/v1/maps", body=body).json()["map_id"]

    def lost(*_: object) -> None:
        raise StoreError("DynamoDB unreachable: the worker died here")

    with monkeypatch.context() as patched:
        patched.setattr(MapAdvancer, "release", lost)
        assert drain(client) == 1  # chunk 0 ends; releasing chunk 1 fails
    view = counts(client, map_id)
    assert view["counts"]["succeeded"] == 1 and view["counts"]["waiting"] == 2, view["counts"]

    sweeper = load_handler("sweeper")  # as its role: the map pass's calls are allowed to it
    sweeper.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, FakeContext())
    assert counts(client, map_id)["counts"]["queued"] == 1
    assert drain(client) == 2
    assert counts(client, map_id)["status"] == "succeeded"


def test_chunks_whose_map_was_never_written_are_cancelled_by_the_sweeper(
    store: JobStore, stack_env: Resources
) -> None:
    # The API died between writing a map's chunks and its record: the chunks can never be released.
    created = utcnow() - timedelta(minutes=11)
    map_id = str(ULID.from_timestamp(created.timestamp()))
    chunks = [
        Job(
            job_id=chunk_job_id(map_id, n),
            tenant="default",
            stage="synth",
            command="generate",
            args={"chunk": n},
            status=JobStatus.BLOCKED,
            timeout_s=60,
            request_hash="h",
            created_at=created,
            map_id=map_id,
            chunk=n,
        )
        for n in range(3)
    ]
    store.put_new_jobs(chunks)
    sweeper = load_handler("sweeper")
    sweeper.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, FakeContext())
    ended = store.get_many([c.job_id for c in chunks])
    assert {j.status for j in ended.values()} == {JobStatus.CANCELLED}
    assert all(j.error is not None and "never accepted" in j.error.message for j in ended.values())


def test_a_websocket_subscription_to_a_map_follows_its_chunks_and_the_merge_written_later(
    client: Client, schema: Callable[[dict[str, Any]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = FakeConnections()
    monkeypatch.setattr(client.worker._worker._publisher, "_connections", conns)
    api_services = client.api._asgi.app.state.services
    monkeypatch.setattr(api_services.publisher, "_connections", conns)
    body = synth_map(schema(SCHEMA), items={"range": [0, 2]}, merge={"concat": "csv"})
    body["args"]["rows"] = 5
    view = client.call("POST", "/v1/maps", body=body).json()
    api_services.subscriptions.connect("c1", API_KEY)
    api_services.subscriptions.subscribe_map("c1", view["map_id"])
    snapshots = [m for m in conns.sent["c1"] if m["type"] == "snapshot"]
    assert sorted(m["job"]["chunk"] for m in snapshots) == [0, 1]

    assert drain(client) == 3
    ends = {m["job_id"]: m["status"] for m in conns.sent["c1"] if m["type"] == "status" and m["seq"] > 1}
    merge_id = counts(client, view["map_id"])["merge"]["job_id"]
    assert ends == dict.fromkeys([*(m["job_id"] for m in snapshots), merge_id], "succeeded")
    merge_events = [m for m in conns.sent["c1"] if m.get("job_id") == merge_id]
    assert [m["seq"] for m in merge_events] == list(range(1, len(merge_events) + 1))  # from its first

    api_services.subscriptions.subscribe_map("c1", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert conns.sent["c1"][-1]["code"] == "not_found"


def test_a_waiting_chunk_cancelled_alone_frees_no_slot(
    client: Client, schema: Callable[[dict[str, Any]], str]
) -> None:
    body = synth_map(schema(SCHEMA), max_parallel=1, items={"range": [0, 4]})
    map_id = client.call("POST", "/v1/maps", body=body).json()["map_id"]
    waiting = client.call("GET", f"/v1/maps/{map_id}/chunks/3").json()["job"]
    assert waiting["status"] == "blocked"
    assert client.call("DELETE", f"/v1/jobs/{waiting['job_id']}").status == 200
    view = counts(client, map_id)["counts"]
    assert (view["queued"], view["waiting"], view["cancelled"]) == (1, 2, 1), view


def test_a_repeated_run_id_answers_the_same_map_and_another_request_is_a_409(
    client: Client, schema: Callable[[dict[str, Any]], str]
) -> None:
    body = synth_map(schema(SCHEMA), run_id="nightly-2026-11-29")
    first = client.call("POST", "/v1/maps", body=body)
    again = client.call("POST", "/v1/maps", body=body)
    assert (first.status, again.status) == (201, 200), again.body
    assert again.json()["map_id"] == first.json()["map_id"]
    other = client.call("POST", "/v1/maps", body={**body, "max_parallel": 2})
    assert other.status == 409 and other.json()["map_id"] == first.json()["map_id"], other.body


def test_the_request_releases_a_bounded_number_and_the_sweeper_reaches_max_parallel(
    client: Client, schema: Callable[[dict[str, Any]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maps_service, "API_RELEASES", 2)
    body = synth_map(schema(SCHEMA), max_parallel=5, items={"range": [0, 6]})
    created = client.call("POST", "/v1/maps", body=body).json()
    assert (created["counts"]["queued"], created["counts"]["waiting"]) == (2, 4)
    load_handler("sweeper").handler({"source": "aws.events", "detail-type": "Scheduled Event"}, FakeContext())
    view = counts(client, created["map_id"])["counts"]
    assert (view["queued"], view["waiting"]) == (5, 1), view
