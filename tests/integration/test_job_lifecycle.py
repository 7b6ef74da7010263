"""A job from POST /v1/jobs through the queue and the worker to what the client reads back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from jobgate.adapters.dynamo import JobStore
from jobgate.models import Job, JobStatus, utcnow

from tests.integration.conftest import Client
from tests.support.aws import Resources
from tests.support.lambdas import FakeContext, load_handler, sqs_event

pytestmark = pytest.mark.zyra

HEATMAP_FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}


def heatmap(asset_id: str, **extra: object) -> dict[str, object]:
    args = {"input": f"asset://{asset_id}", "output": "map.png", **HEATMAP_FLAGS}
    return {"stage": "visualize", "command": "heatmap", "args": args, **extra}


def test_heatmap_job_succeeds_with_png_output(
    client: Client, make_asset: Callable[..., str], npy_file: Path
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    submitted = client.submit(heatmap(asset))
    assert submitted.status == 202, submitted.body
    job = submitted.json()
    assert job["status"] == "queued"
    assert submitted.headers["location"] == f"/v1/jobs/{job['job_id']}"

    assert client.run_worker() == 1

    done = client.call("GET", f"/v1/jobs/{job['job_id']}").json()
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0
    assert done["progress"] == 1.0
    assert done["attempts"] == 1
    outputs = {o["name"]: o for o in done["outputs"]}
    assert outputs["map.png"]["media_type"] == "image/png"
    assert "map.png" in done["stderr"]  # zyra logs each path it writes

    listed = client.call("GET", f"/v1/jobs/{job['job_id']}/outputs").json()["items"]
    assert [o["name"] for o in listed] == ["map.png"]
    key = f"results/default/{job['job_id']}/a1/map.png"
    png = boto3.client("s3").get_object(Bucket=client.resources.bucket_name, Key=key)["Body"].read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) == outputs["map.png"]["size"]

    stderr = client.call("GET", f"/v1/jobs/{job['job_id']}/logs", query={"stream": "stderr"})
    assert stderr.status == 200
    assert stderr.headers["content-type"].startswith("text/plain")
    assert b"map.png" in stderr.body

    download = client.call("GET", f"/v1/jobs/{job['job_id']}/download")
    assert download.status == 307
    assert "map.png" in download.headers["location"]


def test_corrupt_input_fails_with_exit_code_and_traceback(
    client: Client, make_asset: Callable[..., str], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"this is not a numpy file")
    job = client.submit(heatmap(make_asset(bad, "application/x-npy"))).json()
    client.run_worker()
    done = client.call("GET", f"/v1/jobs/{job['job_id']}").json()
    assert done["status"] == "failed"
    assert done["exit_code"] not in (0, None)
    assert done["error"]["type"] == "exit"
    assert "Cannot load file" in done["stderr"]
    assert done["outputs"] == []


def test_missing_input_file_fails_in_the_command(client: Client, tmp_path: Path) -> None:
    # scan-frames reads a folder inside the work folder; nothing is there, so zyra itself fails.
    submitted = client.submit(
        {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "nowhere"}}
    )
    assert submitted.status == 202, submitted.body
    client.run_worker()
    done = client.call("GET", f"/v1/jobs/{submitted.json()['job_id']}").json()
    assert done["status"] == "failed", done
    assert done["exit_code"] not in (0, None)
    assert "nowhere" in done["stderr"]


def test_sync_mode_returns_the_finished_job_in_one_call(
    client: Client, make_asset: Callable[..., str], npy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lambda would run the worker elsewhere while the API waits; here the wait itself drives it, on a
    # thread of its own (a fresh context: not under the API request's deadline, as on Lambda).
    services = client.api._asgi.app.state.services

    def run_worker_elsewhere(_s: float) -> None:
        worker = threading.Thread(target=client.run_worker)
        worker.start()
        worker.join()

    monkeypatch.setattr(services.jobs, "_sleep", run_worker_elsewhere)
    answer = client.submit(heatmap(make_asset(npy_file, "application/x-npy"), mode="sync", wait_s=20))
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "succeeded"
    assert answer.json()["exit_code"] == 0


def test_sync_mode_past_wait_s_answers_202_with_the_job(
    client: Client, make_asset: Callable[..., str], npy_file: Path
) -> None:
    answer = client.submit(heatmap(make_asset(npy_file, "application/x-npy"), mode="sync", wait_s=0.2))
    assert answer.status == 202
    assert answer.json()["status"] == "queued"


def test_duplicate_run_id_returns_existing_job(
    client: Client, make_asset: Callable[..., str], npy_file: Path
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    first = client.submit(heatmap(asset, run_id="nightly-2026-11-22"))
    again = client.submit(heatmap(asset, run_id="nightly-2026-11-22"))
    assert first.status == again.status == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert client.run_worker() == 1  # one message: the retry queued nothing

    other = heatmap(asset, run_id="nightly-2026-11-22")
    other["args"]["output"] = "other.png"  # type: ignore[index]
    conflict = client.submit(other)
    assert conflict.status == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert conflict.json()["job_id"] == first.json()["job_id"]


def test_limit_above_100_is_a_validation_problem(client: Client) -> None:
    answer = client.call("GET", "/v1/jobs", query={"limit": "101"})
    assert answer.status == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["loc"] == ["query", "limit"]


def test_list_newest_first_with_cursor_and_status_filter(
    client: Client, make_asset: Callable[..., str], npy_file: Path
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    ids = [client.submit(heatmap(asset)).json()["job_id"] for _ in range(5)]
    first = client.call("GET", "/v1/jobs", query={"limit": "2"}).json()
    assert [j["job_id"] for j in first["items"]] == ids[::-1][:2]
    second = client.call("GET", "/v1/jobs", query={"limit": "2", "cursor": first["next_cursor"]}).json()
    assert [j["job_id"] for j in second["items"]] == ids[::-1][2:4]
    client.call("DELETE", f"/v1/jobs/{ids[0]}")
    cancelled = client.call("GET", "/v1/jobs", query={"status": "cancelled"}).json()
    assert [j["job_id"] for j in cancelled["items"]] == [ids[0]]
    bad = client.call("GET", "/v1/jobs", query={"cursor": "not-a-cursor"})
    assert bad.status == 422


def test_timeout_ends_timed_out_and_keeps_logs(client: Client, silent_server: str) -> None:
    body = {
        "stage": "acquire",
        "command": "http",
        "args": {"url": silent_server, "output": "x.bin"},
        "timeout_s": 2,
    }
    job = client.submit(body).json()
    client.run_worker()
    done = client.call("GET", f"/v1/jobs/{job['job_id']}").json()
    assert done["status"] == "timed_out", done
    assert done["error"]["type"] == "timeout"
    assert done["exit_code"] in (137, 143)


def test_cancel_running_job_kills_it(client: Client, silent_server: str, store: JobStore) -> None:
    body = {
        "stage": "acquire",
        "command": "http",
        "args": {"url": silent_server, "output": "x.bin"},
        "timeout_s": 60,
    }
    job_id = client.submit(body).json()["job_id"]
    cancelled: list[Job] = []

    def cancel_once_running() -> None:
        # The client cancels while the command hangs (what DELETE /v1/jobs/{id} does, from another
        # sandbox): the worker's next lease renewal learns of it and kills the command.
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            job = store.get(job_id)
            if job.status == JobStatus.RUNNING:
                cancelled.append(store.cancel(job, now=utcnow()))
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    started = time.monotonic()
    client.run_worker()
    canceller.join()
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert [j.cancel_requested for j in cancelled] == [True]
    assert done["status"] == "cancelled", done
    assert done["cancel_requested"] is True
    assert time.monotonic() - started < 30  # killed, not left to its 60 s timeout
    again = client.call("DELETE", f"/v1/jobs/{job_id}")  # sent again: the same answer, not an error
    assert again.status == 200 and again.json()["status"] == "cancelled"


def test_cancel_queued_job_never_runs(client: Client, make_asset: Callable[..., str], npy_file: Path) -> None:
    job_id = client.submit(heatmap(make_asset(npy_file, "application/x-npy"))).json()["job_id"]
    cancelled = client.call("DELETE", f"/v1/jobs/{job_id}")
    assert cancelled.status == 200
    assert cancelled.json()["status"] == "cancelled"
    client.run_worker()  # the message is still delivered; the worker must run nothing
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "cancelled"
    assert done["attempts"] == 0


def test_duplicate_delivery_runs_the_job_once(
    client: Client, make_asset: Callable[..., str], npy_file: Path, stack_env: Resources
) -> None:
    job_id = client.submit(heatmap(make_asset(npy_file, "application/x-npy"))).json()["job_id"]
    boto3.client("sqs").send_message(QueueUrl=stack_env.queue_url, MessageBody=f'{{"job_id": "{job_id}"}}')
    assert client.run_worker() == 2
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    refused = client.call("DELETE", f"/v1/jobs/{job_id}")  # too late: it ended otherwise
    assert refused.status == 409 and "already ended (succeeded)" in refused.json()["detail"]


def test_job_of_a_dead_worker_is_taken_over(
    client: Client, make_asset: Callable[..., str], npy_file: Path, store: JobStore
) -> None:
    job_id = client.submit(heatmap(make_asset(npy_file, "application/x-npy"))).json()["job_id"]
    # A worker claimed it, then died: its lease ran out with no heartbeat.
    then = utcnow() - timedelta(minutes=5)
    store.claim(store.get(job_id), now=then, lease_until=then + timedelta(seconds=5))
    client.run_worker()
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2


def test_job_whose_last_attempt_died_ends_failed(
    client: Client, make_asset: Callable[..., str], npy_file: Path, store: JobStore
) -> None:
    job_id = client.submit(heatmap(make_asset(npy_file, "application/x-npy"))).json()["job_id"]
    start = utcnow() - timedelta(minutes=5)
    for attempt in range(3):
        then = start + timedelta(seconds=10 * attempt)
        store.claim(store.get(job_id), now=then, lease_until=then + timedelta(seconds=5))
    client.run_worker()
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "failed"
    assert done["error"]["type"] == "worker_lost"


def test_dead_lettered_job_ends_failed(
    client: Client, make_asset: Callable[..., str], npy_file: Path, stack_env: Resources
) -> None:
    job_id = client.submit(heatmap(make_asset(npy_file, "application/x-npy"))).json()["job_id"]
    deadletter = load_handler("deadletter")
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": f'{{"job_id": "{job_id}"}}',
        "MD5OfBody": "x",
        "Attributes": {"ApproximateReceiveCount": "3"},
    }
    answer = deadletter.handler(sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:dlq"), FakeContext())
    assert answer == {"batchItemFailures": []}
    done = client.call("GET", f"/v1/jobs/{job_id}").json()
    assert done["status"] == "failed"
    assert done["error"]["type"] == "dead_letter"


def test_malformed_message_is_reported_as_a_batch_failure(client: Client) -> None:
    message = {
        "MessageId": "m-2",
        "ReceiptHandle": "r-2",
        "Body": "{not json",
        "MD5OfBody": "x",
        "Attributes": {},
    }
    answer = client.worker.handler(
        sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q"), FakeContext()
    )
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}
