"""A job that writes thousands of files ends like any other; its outputs are paged, found and staged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
from jobgate.adapters.dynamo import MAX_ITEM_BYTES, item_size

from tests.integration.conftest import Client
from tests.support.aws import Resources

pytestmark = pytest.mark.zyra

FILES = 3000


class _Frames(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"frame {Path(self.path).stem}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def frames_server() -> Iterator[str]:
    """A loopback site with one small file per URL, as a data portal lists its frames."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Frames)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def job_item(resources: Resources, job_id: str) -> dict[str, Any]:
    key = {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}
    got = boto3.client("dynamodb").get_item(TableName=resources.table_name, Key=key, ConsistentRead=True)
    item: dict[str, Any] = got["Item"]
    return item


def every_output(client: Client, job_id: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query: dict[str, str] = {"limit": str(limit)}
    for _ in range(FILES):
        page = client.call("GET", f"/v1/jobs/{job_id}/outputs", query=query)
        assert page.status == 200, page.body
        body = page.json()
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        if body["next_cursor"] is None:
            return items
        query = {"limit": str(limit), "cursor": body["next_cursor"]}
    raise AssertionError("the pages never ended")


def test_job_with_3000_outputs_succeeds_and_every_output_is_listed_found_and_staged(
    client: Client, make_asset: Callable[..., str], frames_server: str, tmp_path: Path
) -> None:
    urls = tmp_path / "frames.txt"
    urls.write_text("".join(f"{frames_server}/frames/{i:04d}.txt\n" for i in range(FILES)))
    fetch = {"url": f"{frames_server}/", "manifest": f"asset://{make_asset(urls, 'text/plain')}"}
    fetch["output_dir"] = "frames"
    last = f"frames/{FILES - 1:04d}.txt"
    body = {
        "steps": [
            {"name": "fetch", "stage": "acquire", "command": "http", "args": fetch},
            {
                "name": "copy",
                "stage": "disseminate",
                "command": "local",
                "args": {"input": f"step://fetch/{last}", "path": "copy.txt"},
            },
        ]
    }
    created = client.call("POST", "/v1/pipelines", body=body)
    assert created.status == 201, created.body
    ids = {s["name"]: s["job"]["job_id"] for s in created.json()["steps"]}

    for _ in range(5):  # the fetch step, then the copy step it queued
        if client.run_worker() == 0:
            break
    job = client.call("GET", f"/v1/jobs/{ids['fetch']}").json()
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job["error"]
    assert job["output_count"] == FILES
    assert 0 < len(job["outputs"]) < FILES  # the record keeps a first page only
    # The stored record stays far under DynamoDB's item limit (moto does not enforce it).
    assert item_size(job_item(client.resources, ids["fetch"])) < MAX_ITEM_BYTES // 4

    listed = every_output(client, ids["fetch"], limit=100)
    assert [o["name"] for o in listed] == [f"frames/{i:04d}.txt" for i in range(FILES)]
    assert all(o["url"] and o["size"] == len(f"frame {i:04d}\n") for i, o in enumerate(listed))

    found = client.call("GET", f"/v1/jobs/{ids['fetch']}/download", query={"name": last})
    assert found.status == 307, found.body
    assert urlparse(found.headers["location"]).path.endswith(f"/{ids['fetch']}/a1/{last}")
    missing = client.call("GET", f"/v1/jobs/{ids['fetch']}/download", query={"name": "frames/9999.txt"})
    assert missing.status == 404

    # The next step read an output past the record's first page: it was staged from the manifest.
    copy = client.call("GET", f"/v1/jobs/{ids['copy']}").json()
    assert copy["status"] == "succeeded", (copy["error"], copy["stderr"][-500:])
    [out] = copy["outputs"]
    url = client.call("GET", f"/v1/jobs/{ids['copy']}/outputs").json()["items"][0]["url"]
    key = urlparse(url).path.split("/", 2)[2]
    data = boto3.client("s3").get_object(Bucket=client.resources.bucket_name, Key=key)["Body"].read()
    assert data == f"frame {FILES - 1:04d}\n".encode() and out["size"] == len(data)
    assert parse_qs(urlparse(url).query)  # a presigned URL


def test_outputs_cursor_of_another_job_is_refused(
    client: Client, make_asset: Callable[..., str], npy_file: Path
) -> None:
    args = {"input": f"asset://{make_asset(npy_file, 'application/x-npy')}", "output": "m.png"}
    args.update(no_coastline=True, no_borders=True, no_gridlines=True)
    ids = [
        client.submit({"stage": "visualize", "command": "heatmap", "args": args}).json()["job_id"]
        for _ in range(2)
    ]
    client.run_worker()
    first = client.call("GET", f"/v1/jobs/{ids[0]}/outputs", query={"limit": "1"}).json()
    assert [o["name"] for o in first["items"]] == ["m.png"] and first["next_cursor"] is None
    forged = client.call("GET", f"/v1/jobs/{ids[1]}/outputs", query={"cursor": "eyJqIjoieCIsIm8iOjF9"})
    assert forged.status == 422
