"""Files in and out through presigned URLs over real HTTP (moto in server mode), and the checks
that moto does not enforce, tested in our own code."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import xarray as xr
from ulid import ULID

from tests.integration.conftest import Client
from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler

pytestmark = pytest.mark.zyra

FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}


def upload(client: Client, path: Path, media_type: str, size: int | None = None) -> dict[str, Any]:
    """What a frontend does: ask for a presigned POST, then send the file straight to S3."""
    declared = path.stat().st_size if size is None else size
    ticket = client.call(
        "POST", "/v1/uploads", body={"filename": path.name, "media_type": media_type, "size": declared}
    )
    assert ticket.status == 201, ticket.body
    post = ticket.json()["upload"]
    with path.open("rb") as fh:
        answer = httpx.post(post["url"], data=post["fields"], files={"file": (path.name, fh, media_type)})
    assert answer.status_code in (200, 201, 204), answer.text
    return ticket.json()  # type: ignore[no-any-return]


def available(client: Client, asset_id: str) -> dict[str, Any]:
    asset = client.call("GET", f"/v1/assets/{asset_id}").json()
    assert asset["status"] == "AVAILABLE", asset
    return asset  # type: ignore[no-any-return]


def run(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    submitted = client.submit(body)
    assert submitted.status == 202, submitted.body
    client.run_worker()
    return client.call("GET", f"/v1/jobs/{submitted.json()['job_id']}").json()  # type: ignore[no-any-return]


def download_outputs(client: Client, job: dict[str, Any]) -> dict[str, bytes]:
    """Every output through its presigned GET, checked against the sha256 the worker recorded."""
    listed = client.call("GET", f"/v1/jobs/{job['job_id']}/outputs").json()["items"]
    got = {}
    for item in listed:
        data = httpx.get(item["url"]).raise_for_status().content
        assert hashlib.sha256(data).hexdigest() == item["sha256"], item["name"]
        assert len(data) == item["size"]
        got[item["name"]] = data
    return got


def test_presigned_post_policy_pins_key_type_size_and_expiry(client: Client, tmp_path: Path) -> None:
    ticket = client.call(
        "POST", "/v1/uploads", body={"filename": "field.npy", "media_type": "application/x-npy", "size": 1234}
    ).json()
    fields = ticket["upload"]["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert ["content-length-range", 1234, 1234] in conditions
    assert {"Content-Type": "application/x-npy"} in conditions
    assert {"key": fields["key"]} in conditions
    assert fields["key"] == f"uploads/default/{ticket['asset_id']}/field.npy"
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    left = (expires - datetime.now(UTC)).total_seconds()
    assert 840 < left <= 900
    assert ticket["asset"]["status"] == "PENDING"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filename": "../etc/passwd", "media_type": "text/plain", "size": 10}, "filename"),
        ({"filename": "a.npy", "media_type": "not a type", "size": 10}, "media_type"),
        ({"filename": "a.npy", "media_type": "application/x-npy", "size": 0}, "size"),
    ],
)
def test_bad_upload_requests_are_refused(client: Client, body: dict[str, Any], field: str) -> None:
    answer = client.call("POST", "/v1/uploads", body=body)
    assert answer.status == 422
    assert answer.json()["errors"][0]["loc"] == ["body", field]


def test_csv_upload_into_timeseries(client: Client, tmp_path: Path) -> None:
    csv = tmp_path / "series.csv"
    csv.write_text("time,value\n" + "".join(f"2026-11-{d:02d},{d * 1.5}\n" for d in range(1, 21)))
    ticket = upload(client, csv, "text/csv")
    asset = available(client, ticket["asset_id"])
    assert asset["size"] == csv.stat().st_size and asset["etag"]
    args = {"input": f"asset://{ticket['asset_id']}", "x": "time", "y": "value", "output": "ts.png"}
    job = run(client, {"stage": "visualize", "command": "timeseries", "args": args})
    assert job["status"] == "succeeded", job["stderr"]
    outputs = download_outputs(client, job)
    assert outputs["ts.png"].startswith(b"\x89PNG")
    not_asked = client.call("GET", f"/v1/jobs/{job['job_id']}/download", query={"zip": "1"})
    assert not_asked.status == 409 and "zip_outputs" in not_asked.json()["detail"]


def test_netcdf_upload_into_heatmap_with_var(client: Client, tmp_path: Path) -> None:
    nc = tmp_path / "temp.nc"
    lat, lon = np.linspace(-45, 45, 19), np.linspace(-90, 90, 37)
    field = np.cos(np.radians(lat))[:, None] * np.sin(np.radians(lon))[None, :]
    xr.Dataset({"temp": (("lat", "lon"), field)}, coords={"lat": lat, "lon": lon}).to_netcdf(nc)
    ticket = upload(client, nc, "application/x-netcdf")
    available(client, ticket["asset_id"])
    args = {"input": f"asset://{ticket['asset_id']}", "var": "temp", "output": "temp.png", **FLAGS}
    job = run(client, {"stage": "visualize", "command": "heatmap", "args": args})
    assert job["status"] == "succeeded", job["stderr"]
    assert download_outputs(client, job)["temp.png"].startswith(b"\x89PNG")


def test_multi_output_heatmap_frames(client: Client, tmp_path: Path) -> None:
    ids = []
    for i in range(3):
        path = tmp_path / f"f{i}.npy"
        np.save(path, np.random.default_rng(i).random((12, 24)))
        ids.append(upload(client, path, "application/x-npy")["asset_id"])
    args = {
        "inputs": [f"asset://{a}" for a in ids],
        "output_dir": "frames",
        "output_names": ["a.png", "b.png", "c.png"],
        **FLAGS,
    }
    job = run(client, {"stage": "visualize", "command": "heatmap", "args": args, "zip_outputs": True})
    assert job["status"] == "succeeded", job["stderr"]
    outputs = download_outputs(client, job)
    assert sorted(outputs) == ["frames/a.png", "frames/b.png", "frames/c.png"]
    packed = client.call("GET", f"/v1/jobs/{job['job_id']}/download", query={"zip": "1"})
    assert packed.status == 307
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(packed.headers["location"]).content))
    assert {n: archive.read(n) for n in archive.namelist()} == outputs
    assert all(data.startswith(b"\x89PNG") for data in outputs.values())
    several = client.call("GET", f"/v1/jobs/{job['job_id']}/download")
    assert several.status == 409
    assert sorted(several.json()["outputs"]) == sorted(outputs)
    one = client.call("GET", f"/v1/jobs/{job['job_id']}/download", query={"name": "frames/b.png"})
    assert one.status == 307
    assert httpx.get(one.headers["location"]).content == outputs["frames/b.png"]


def test_declared_size_mismatch_marks_the_asset_failed(
    client: Client, tmp_path: Path, npy_file: Path
) -> None:
    declared = npy_file.stat().st_size + 10
    ticket = client.call(
        "POST",
        "/v1/uploads",
        body={"filename": npy_file.name, "media_type": "application/x-npy", "size": declared},
    ).json()
    post = ticket["upload"]
    sent = httpx.post(
        post["url"], data=post["fields"], files={"file": (npy_file.name, npy_file.read_bytes())}
    )
    assert sent.status_code == 400 and "EntityTooSmall" in sent.text  # S3 holds the upload to its policy
    # An object that got there some other way (written outside the presigned POST) is still caught.
    boto3.client("s3").put_object(
        Bucket=client.resources.bucket_name, Key=post["fields"]["key"], Body=npy_file.read_bytes()
    )
    asset = client.call("GET", f"/v1/assets/{ticket['asset_id']}").json()
    assert asset["status"] == "FAILED"
    assert "declared" in asset["reason"] and "bytes" in asset["reason"]


def test_content_that_contradicts_the_declared_type_fails(client: Client, tmp_path: Path) -> None:
    fake = tmp_path / "fake.npy"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    ticket = upload(client, fake, "application/x-npy")
    asset = client.call("GET", f"/v1/assets/{ticket['asset_id']}").json()
    assert asset["status"] == "FAILED" and "image/png" in asset["reason"]


@pytest.mark.parametrize(
    ("name", "content", "recorded"),
    [
        ("field.npy", None, "application/x-npy"),  # the content tells
        ("table.csv", b"time,value\n1,2\n", "text/csv"),  # only the name tells
        ("blob.unknownext", b"\x00\x01\x02 no magic", "application/octet-stream"),  # nothing tells
    ],
)
def test_octet_stream_means_unknown_and_the_asset_records_what_it_is(
    client: Client, tmp_path: Path, npy_file: Path, name: str, content: bytes | None, recorded: str
) -> None:
    # What browsers, n8n and most HTTP tools declare for a type they do not know.
    path = tmp_path / name
    path.write_bytes(npy_file.read_bytes() if content is None else content)
    ticket = upload(client, path, "application/octet-stream")
    asset = client.call("GET", f"/v1/assets/{ticket['asset_id']}").json()
    assert (asset["status"], asset["media_type"], asset["reason"]) == ("AVAILABLE", recorded, None)
    if recorded == "application/x-npy":
        args = {"input": f"asset://{asset['asset_id']}", "output": "m.png", **FLAGS}
        job = run(client, {"stage": "visualize", "command": "heatmap", "args": args})
        assert job["status"] == "succeeded", job


@pytest.mark.parametrize(
    ("size", "status", "slug"),
    [
        (10 * 10**12, 413, "upload-too-large"),  # 10 TB: more than a tenant may upload in a day
        (10_000 * 5 * 2**30 + 1, 422, "validation"),  # more than S3 can hold in one object
    ],
)
def test_a_size_that_can_never_be_granted_is_not_a_429(
    client: Client, size: int, status: int, slug: str
) -> None:
    answer = client.call(
        "POST", "/v1/uploads", body={"filename": "huge.npy", "media_type": "application/x-npy", "size": size}
    )
    assert answer.status == status, answer.body
    problem = answer.json()
    assert problem["type"] == f"urn:jobgate:problem:{slug}" and "retry_after" not in problem
    assert "retry-after" not in answer.headers


def test_a_job_naming_a_failed_asset_says_why_it_failed(client: Client, tmp_path: Path) -> None:
    fake = tmp_path / "fake.npy"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    failed = upload(client, fake, "application/x-npy")["asset_id"]
    args = {"input": f"asset://{failed}", "output": "x.png", **FLAGS}
    answer = client.submit({"stage": "visualize", "command": "heatmap", "args": args})
    assert answer.status == 409, answer.body
    problem = answer.json()
    assert problem["type"] == "urn:jobgate:problem:asset-failed"
    assert "FAILED" in problem["detail"] and "image/png" in problem["detail"]
    assert "image/png" in problem["reason"]


def test_s3_event_settles_the_asset(client: Client, npy_file: Path, stack_env: Resources) -> None:
    ticket = upload(client, npy_file, "application/x-npy")
    key = ticket["upload"]["fields"]["key"]
    event = {"Records": [{"s3": {"bucket": {"name": stack_env.bucket_name}, "object": {"key": key}}}]}
    record = {
        "messageId": "m1",
        "receiptHandle": "r1",
        "body": json.dumps(event),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:uploads",
        "awsRegion": "us-east-1",
    }
    assets_fn = load_handler("assets")
    assert assets_fn.handler({"Records": [record]}, FakeContext()) == {"batchItemFailures": []}
    from jobgate.adapters import aws as aws_clients
    from jobgate.adapters.dynamo import JobStore

    store = JobStore(aws_clients.dynamodb(), stack_env.table_name, __import__("datetime").timedelta(days=1))
    assert store.get_asset(ticket["asset_id"], tenant="default").status == "AVAILABLE"


def test_job_inputs_are_checked_before_queueing(client: Client, tmp_path: Path, npy_file: Path) -> None:
    def submit(asset_id: str) -> Any:
        args = {"input": f"asset://{asset_id}", "output": "x.png", **FLAGS}
        return client.submit({"stage": "visualize", "command": "heatmap", "args": args})

    unknown = submit(str(ULID()))
    assert unknown.status == 404 and "input" in unknown.json()["detail"]
    pending = client.call(
        "POST", "/v1/uploads", body={"filename": "p.npy", "media_type": "application/x-npy", "size": 10}
    ).json()
    not_ready = submit(pending["asset_id"])
    assert not_ready.status == 409 and "PENDING" in not_ready.json()["detail"]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    wrong = submit(upload(client, text, "text/plain")["asset_id"])
    assert wrong.status == 422
    assert wrong.json()["errors"][0]["loc"] == ["body", "args", "input"]
    queue = boto3.client("sqs").get_queue_attributes(
        QueueUrl=client.resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert queue["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_expired_output_download_is_gone(client: Client, npy_file: Path) -> None:
    ticket = upload(client, npy_file, "application/x-npy")
    available(client, ticket["asset_id"])
    args = {"input": f"asset://{ticket['asset_id']}", "output": "m.png", **FLAGS}
    job = run(client, {"stage": "visualize", "command": "heatmap", "args": args})
    key = f"results/default/{job['job_id']}/a{job['attempts']}/m.png"
    boto3.client("s3").delete_object(
        Bucket=client.resources.bucket_name, Key=key
    )  # as the lifecycle rule would
    gone = client.call("GET", f"/v1/jobs/{job['job_id']}/download")
    assert gone.status == 410
    assert "expired" in gone.json()["detail"]


def test_large_upload_gets_a_multipart_plan(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = client.api._asgi.app.state.services.assets._limits
    monkeypatch.setattr(limits, "max_bytes", 5 * 1024 * 1024)
    monkeypatch.setattr(limits, "part_bytes", 5 * 1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(0).bytes(6 * 1024 * 1024 + 17))
    ticket = client.call(
        "POST",
        "/v1/uploads",
        body={"filename": "big.bin", "media_type": "application/octet-stream", "size": 6291473},
    ).json()
    plan = ticket["upload"]
    assert plan["method"] == "MULTIPART" and [p["size"] for p in plan["parts"]] == [5242880, 1048593]
    data, parts, offset = big.read_bytes(), [], 0
    for part in plan["parts"]:
        answer = httpx.put(part["url"], content=data[offset : offset + part["size"]]).raise_for_status()
        parts.append({"part_number": part["part_number"], "etag": answer.headers["etag"]})
        offset += part["size"]
    done = client.call("POST", plan["complete_url"], body={"parts": parts})
    assert done.status == 200, done.body
    assert done.json()["status"] == "AVAILABLE"
    url = client.call("GET", f"/v1/assets/{ticket['asset_id']}/download").headers["location"]
    assert httpx.get(url).content == data
