"""Every sample event in events/ (what `sam local invoke -e` takes) runs through its handler."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Asset, AssetStatus, Job, utcnow
from ulid import ULID

from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler

pytestmark = pytest.mark.zyra

EVENTS = Path(__file__).resolve().parents[2] / "events"
JOB_ID = "01JD7Q9A1B2C3D4E5F6G7H8J9K"
ASSET_ID = "01JD7Q8W6S3N2K1M0P9R8T7V6X"


def event(name: str) -> dict[str, object]:
    return json.loads((EVENTS / name).read_text())  # type: ignore[no-any-return]


def answer(out: dict[str, object]) -> tuple[int, object]:
    body = str(out.get("body") or "")
    raw = base64.b64decode(body) if out.get("isBase64Encoded") else body.encode()
    return int(out["statusCode"]), (json.loads(raw) if raw.startswith(b"{") else raw)  # type: ignore[call-overload]


@pytest.fixture
def seeded(resources: Resources, monkeypatch: pytest.MonkeyPatch, npy_file: Path) -> JobStore:
    for key, value in resources.env().items():
        monkeypatch.setenv(key, value)
    key = event("api-list-commands.json")["headers"]["x-api-key"]  # type: ignore[index]
    monkeypatch.setenv("JOBGATE_API_KEY", key)
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    s3_key = f"uploads/default/{ASSET_ID}/field.npy"
    boto3.client("s3").put_object(Bucket=resources.bucket_name, Key=s3_key, Body=npy_file.read_bytes())
    store.put_asset(
        Asset(
            asset_id=ASSET_ID,
            tenant="default",
            filename="field.npy",
            media_type="application/x-npy",
            size=npy_file.stat().st_size,
            status=AssetStatus.AVAILABLE,
            key=s3_key,
            created_at=utcnow(),
        )
    )
    store.create(
        Job(
            job_id=JOB_ID,
            tenant="default",
            stage="visualize",
            command="heatmap",
            args={
                "input": f"asset://{ASSET_ID}",
                "output": "map.png",
                "no_coastline": True,
                "no_borders": True,
            },
            inputs={"input": ASSET_ID},
            timeout_s=60,
            request_hash="sample",
            created_at=utcnow(),
        )
    )
    return store


def test_every_sample_event_is_tested() -> None:
    names = {p.name for p in EVENTS.glob("*.json")}
    assert names == {
        "api-health-live.json",
        "api-list-commands.json",
        "api-submit-job.json",
        "api-get-job.json",
        "api-list-jobs.json",
        "api-cancel-job.json",
        "worker-sqs-job.json",
        "deadletter-sqs-job.json",
        "ws-connect.json",
        "ws-subscribe.json",
        "ws-disconnect.json",
        "sweeper-schedule.json",
        "assets-s3-upload.json",
    }


def test_sample_events_through_their_handlers(seeded: JobStore) -> None:
    api = load_handler("api")
    call = lambda name: answer(api.handler(event(name), FakeContext(function_name="api")))  # noqa: E731

    assert call("api-health-live.json")[0] == 200
    status, commands = call("api-list-commands.json")
    assert status == 200 and "visualize" in commands["stages"]  # type: ignore[index]
    status, job = call("api-get-job.json")
    assert status == 200 and job["status"] == "queued"  # type: ignore[index]
    status, submitted = call("api-submit-job.json")
    assert status == 202 and submitted["run_id"] == "sample-heatmap-1"  # type: ignore[index]

    worker = load_handler("worker")
    assert worker.handler(event("worker-sqs-job.json"), FakeContext(function_name="worker")) == {
        "batchItemFailures": []
    }
    status, page = call("api-list-jobs.json")
    assert status == 200 and [j["job_id"] for j in page["items"]] == [JOB_ID]  # type: ignore[index]

    # The dead-letter handler leaves a finished job as it is.
    deadletter = load_handler("deadletter")
    deadletter.handler(event("deadletter-sqs-job.json"), FakeContext(function_name="deadletter"))
    assert seeded.get(JOB_ID).status == "succeeded"
    status, problem = call("api-cancel-job.json")
    assert status == 409 and problem["type"] == "urn:jobgate:problem:invalid-transition"  # type: ignore[index]


def test_upload_sample_event_through_the_assets_function(
    resources: Resources, monkeypatch: pytest.MonkeyPatch, npy_file: Path
) -> None:
    for key, value in resources.env().items():
        monkeypatch.setenv(key, value)
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    s3_key = f"uploads/default/{ASSET_ID}/field.npy"
    boto3.client("s3").put_object(
        Bucket=resources.bucket_name, Key=s3_key, Body=npy_file.read_bytes(), ContentType="application/x-npy"
    )
    store.put_asset(
        Asset(
            asset_id=ASSET_ID,
            tenant="default",
            filename="field.npy",
            media_type="application/x-npy",
            size=npy_file.stat().st_size,
            key=s3_key,
            created_at=utcnow(),
        )
    )
    assets = load_handler("assets")
    out = assets.handler(event("assets-s3-upload.json"), FakeContext(function_name="assets"))
    assert out == {"batchItemFailures": []}
    assert store.get_asset(ASSET_ID, tenant="default").status == AssetStatus.AVAILABLE


def test_websocket_sample_events_through_their_handler(
    seeded: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = load_handler("ws")
    sent: list[tuple[str, dict[str, object]]] = []
    services = ws._subscriptions
    monkeypatch.setattr(services._publisher, "send", lambda cid, msg: sent.append((cid, msg)) or True)
    ctx = FakeContext(function_name="ws")
    assert ws.handler(event("ws-connect.json"), ctx) == {"statusCode": 200}
    assert ws.handler(event("ws-subscribe.json"), ctx) == {"statusCode": 200}
    assert sent[0][0] == "Q1Jw_cqHIAMCJ4w=" and sent[0][1]["type"] == "snapshot"
    assert sent[0][1]["job"]["job_id"] == JOB_ID  # type: ignore[index]
    assert ws.handler(event("ws-disconnect.json"), ctx) == {"statusCode": 200}
    refused = event("ws-connect.json")
    refused["queryStringParameters"] = {"api_key": "wrong"}
    assert ws.handler(refused, ctx)["statusCode"] == 401


def test_schedule_sample_event_through_the_sweeper(seeded: JobStore) -> None:
    # Queued an hour ago and no send of its message recorded: it lost its message; send it again.
    # (The sample job was queued just now: its sender still has time to record its send.)
    an_hour_ago = utcnow() - timedelta(hours=1)
    lost, _ = seeded.create(
        seeded.get(JOB_ID).model_copy(
            update={
                "job_id": str(ULID.from_timestamp(an_hour_ago.timestamp())),
                "created_at": an_hour_ago,
                "queued_at": None,
            }
        )
    )
    sweeper = load_handler("sweeper")
    out = sweeper.handler(event("sweeper-schedule.json"), FakeContext(function_name="sweeper"))
    assert out == {"requeued": [lost.job_id], "rescued": [], "failed": []}
