"""The SDK over an in-process API: typed errors, pagination, and retries only where a retry is safe."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from jobgate.client import (
    Conflict,
    JobgateAPIError,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    ValidationError,
)

from tests.unit.client_fakes import (
    API,
    JOB_ID,
    KEY,
    Handler,
    async_client_for,
    client_for,
    job_doc,
    problem,
)

# -- typed errors -------------------------------------------------------------------------------------


def test_a_404_problem_becomes_not_found_with_every_problem_field() -> None:
    client, _ = client_for(
        lambda r: problem(404, "not-found", f"No job '{JOB_ID}'.", title="Not found", instance=r.url.path)
    )
    with pytest.raises(NotFound) as caught:
        client.get(JOB_ID)
    error = caught.value
    assert (error.status, error.type, error.title) == (404, "urn:jobgate:problem:not-found", "Not found")
    assert error.detail == f"No job '{JOB_ID}'."
    assert error.instance == f"/v1/jobs/{JOB_ID}"
    assert str(error) == f"Not found: No job '{JOB_ID}'."


def test_a_validation_problem_names_each_invalid_field_in_its_message() -> None:
    errors = [{"loc": ["body", "args", "nope"], "msg": "unknown argument for visualize heatmap", "type": ""}]
    client, recorder = client_for(
        lambda r: problem(
            422, "validation", "1 invalid argument(s).", title="Validation failed", errors=errors
        )
    )
    with pytest.raises(ValidationError) as caught:
        client.submit("visualize", "heatmap", {"nope": 1})
    assert caught.value.errors == errors
    assert str(caught.value) == (
        "Validation failed: 1 invalid argument(s). (nope: unknown argument for visualize heatmap)"
    )
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, Unauthorized),
        (409, Conflict),
        (500, ServerError),
        (503, ServiceUnavailable),
        (418, JobgateAPIError),
    ],
)
def test_each_status_has_its_exception(status: int, kind: type[JobgateAPIError]) -> None:
    client, _ = client_for(lambda r: problem(status, "x", "why"))
    with pytest.raises(kind) as caught:
        client.cancel(JOB_ID)
    assert caught.value.status == status and caught.value.detail == "why"


def test_a_gateways_own_error_without_problem_json_still_says_what_happened() -> None:
    client, _ = client_for(lambda r: httpx.Response(504, json={"message": "Endpoint request timed out"}))
    with pytest.raises(ServerError) as caught:
        client.request("DELETE", f"/v1/jobs/{JOB_ID}")
    assert str(caught.value) == "Gateway Timeout: Endpoint request timed out"


def test_a_refused_connection_is_a_transport_error_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client, recorder = client_for(refuse)
    with pytest.raises(TransportError, match=f"cannot reach {API}: .*Connection refused"):
        client.get(JOB_ID)
    assert len(recorder.requests) == 4  # the first try and three retries


def test_the_api_key_is_sent_on_every_api_call() -> None:
    client, recorder = client_for(lambda r: httpx.Response(200, json=job_doc()))
    client.get(JOB_ID)
    assert recorder.requests[0].headers["X-API-Key"] == KEY


# -- retries ---------------------------------------------------------------------------------------------


def flaky(failures: list[httpx.Response | Exception], then: httpx.Response) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return then

    return handle


def test_a_get_is_retried_on_503_and_on_a_read_timeout() -> None:
    failures: list[httpx.Response | Exception] = [
        problem(503, "storage", "Storage unavailable"),
        httpx.ReadTimeout("timed out"),
    ]
    client, recorder = client_for(flaky(failures, httpx.Response(200, json=job_doc(status="running"))))
    assert client.get(JOB_ID).status == "running"
    assert len(recorder.requests) == 3
    assert len(recorder.sleeps) == 2


def test_a_submission_without_run_id_is_not_retried_after_it_may_have_arrived() -> None:
    client, recorder = client_for(
        flaky([httpx.ReadTimeout("timed out")], httpx.Response(202, json=job_doc()))
    )
    with pytest.raises(TransportError):
        client.submit("visualize", "heatmap", {"output": "map.png"})
    assert recorder.seen() == ["POST /v1/jobs"]

    client, recorder = client_for(
        flaky([problem(503, "queue", "Queue unavailable")], httpx.Response(202, json=job_doc()))
    )
    with pytest.raises(ServiceUnavailable):
        client.submit("visualize", "heatmap", {"output": "map.png"})
    assert recorder.seen() == ["POST /v1/jobs"]


def test_a_submission_with_run_id_is_retried_and_sends_the_same_run_id() -> None:
    failures: list[httpx.Response | Exception] = [
        httpx.ReadTimeout("timed out"),
        problem(503, "queue", "down"),
    ]
    client, recorder = client_for(flaky(failures, httpx.Response(202, json=job_doc(run_id="r-1"))))
    job = client.submit("visualize", "heatmap", {"output": "map.png"}, run_id="r-1")
    assert job.run_id == "r-1"
    bodies = [json.loads(r.content) for r in recorder.requests]
    assert len(bodies) == 3 and all(b["run_id"] == "r-1" for b in bodies)


def test_run_gives_its_submission_a_run_id_so_a_lost_answer_is_retried() -> None:
    answers = [httpx.ReadTimeout("timed out")]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            if answers:
                raise answers.pop()  # a timeout: the answer was lost
            return httpx.Response(200, json=job_doc(status="succeeded", exit_code=0, stdout="hi\n"))
        return httpx.Response(200, json=job_doc(status="succeeded", exit_code=0, stdout="hi\n"))

    client, recorder = client_for(handle)
    result = client.run("visualize", "heatmap", {"output": "map.png"})
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    posted = [json.loads(r.content) for r in recorder.requests if r.method == "POST"]
    assert len(posted) == 2 and posted[0]["run_id"] == posted[1]["run_id"]


def test_a_429_is_waited_out_for_any_method_as_long_as_retry_after_asks() -> None:
    limited = problem(429, "rate-limited", "Too many requests.", headers={"Retry-After": "2"}, retry_after=2)
    client, recorder = client_for(flaky([limited], httpx.Response(202, json=job_doc())))
    client.submit("visualize", "heatmap", {"output": "map.png"})  # refused, so nothing was done
    [slept] = recorder.sleeps
    assert 2.0 <= slept <= 2.5  # what Retry-After asks, spread by up to a quarter
    assert len(recorder.requests) == 2


def test_a_429_asking_for_hours_is_raised_with_its_retry_after() -> None:
    quota = problem(429, "upload-quota", "Daily upload quota reached.", headers={"Retry-After": "36000"})
    client, recorder = client_for(lambda r: quota)
    with pytest.raises(RateLimited) as caught:
        client.commands()
    assert caught.value.retry_after == 36000
    assert len(recorder.requests) == 1


def test_a_cancel_is_not_retried_on_a_server_error() -> None:
    client, recorder = client_for(lambda r: problem(503, "storage", "down"))
    with pytest.raises(ServiceUnavailable):
        client.cancel(JOB_ID)
    assert len(recorder.requests) == 1


# -- pagination ------------------------------------------------------------------------------------------


def paged(total: int) -> Handler:
    """GET /v1/jobs over `total` jobs, newest first, with opaque cursors."""
    ids = [f"01JD7Q9A1B2C3D4E5F6G7H{n:04d}" for n in range(total, 0, -1)]

    def handle(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor") or 0)
        limit = int(request.url.params["limit"])
        page = ids[start : start + limit]
        more = start + limit < len(ids)
        return httpx.Response(
            200,
            json={"items": [job_doc(i) for i in page], "next_cursor": str(start + limit) if more else None},
        )

    return handle


def test_list_follows_every_page() -> None:
    client, recorder = client_for(paged(250))
    jobs = list(client.list())
    assert len(jobs) == 250 and len({j.job_id for j in jobs}) == 250
    assert [r.url.params.get("cursor") for r in recorder.requests] == [None, "100", "200"]


def test_list_stops_at_its_limit_without_fetching_more_pages() -> None:
    client, recorder = client_for(paged(250))
    assert len(list(client.list(limit=30))) == 30
    assert len(recorder.requests) == 1
    assert recorder.requests[0].url.params["limit"] == "30"


def test_list_passes_the_status_filter() -> None:
    client, recorder = client_for(paged(3))
    list(client.list("failed"))
    assert recorder.requests[0].url.params["status"] == "failed"


def test_async_list_follows_every_page_and_errors_are_typed() -> None:
    async def scenario() -> tuple[int, int]:
        client, _ = async_client_for(paged(120))
        async with client:
            count = len([job async for job in client.list()])
        failing, _ = async_client_for(lambda r: problem(404, "not-found", "No job."))
        async with failing:
            with pytest.raises(NotFound):
                await failing.get(JOB_ID)
        return count, 0

    assert asyncio.run(scenario())[0] == 120


# -- files through presigned URLs ------------------------------------------------------------------------


def test_logs_follow_the_redirect_of_a_large_log_without_sending_the_api_key() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            return httpx.Response(200, text="a big log\n")
        return httpx.Response(307, headers={"location": "http://storage.test/logs/x?X-Amz-Signature=s"})

    client, recorder = client_for(handle)
    assert client.logs(JOB_ID, "stderr") == "a big log\n"
    storage = [r for r in recorder.requests if r.url.host == "storage.test"]
    assert len(storage) == 1 and "X-API-Key" not in storage[0].headers
    assert recorder.requests[0].url.params["stream"] == "stderr"


def test_download_follows_the_307_and_streams_the_file_to_disk(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4000

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            assert "X-API-Key" not in request.headers
            return httpx.Response(
                200, content=data, headers={"content-disposition": 'attachment; filename="map.png"'}
            )
        assert request.url.path == f"/v1/jobs/{JOB_ID}/download"
        return httpx.Response(307, headers={"location": "http://storage.test/results/map.png?sig=1"})

    client, _ = client_for(handle)
    seen: list[tuple[int, int]] = []
    path = client.download(JOB_ID, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "map.png"
    assert path.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]  # no partial file left behind


def test_an_expired_presigned_url_is_a_storage_error_and_leaves_no_file(tmp_path: Path) -> None:
    from jobgate.client import StorageError

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            return httpx.Response(
                403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            )
        return httpx.Response(307, headers={"location": "http://storage.test/results/map.png"})

    client, _ = client_for(handle)
    with pytest.raises(StorageError, match="403: Request has expired"):
        client.download(JOB_ID, tmp_path / "map.png")
    assert list(tmp_path.iterdir()) == []


def test_download_outputs_refuses_a_name_that_leaves_the_folder(tmp_path: Path) -> None:
    from jobgate.client import JobgateClientError

    outputs = {
        "items": [
            {"name": "../evil.sh", "size": 1, "media_type": "text/plain", "url": "http://storage.test/x"}
        ]
    }
    client, recorder = client_for(lambda r: httpx.Response(200, json=outputs))
    with pytest.raises(JobgateClientError, match="not a relative path inside the folder"):
        client.download_outputs(JOB_ID, tmp_path / "out")
    assert not (tmp_path / "evil.sh").exists()
    assert [r.url.host for r in recorder.requests] == ["api.test"]


def test_download_outputs_keeps_each_outputs_relative_path(tmp_path: Path) -> None:
    items = [
        {"name": "frames/0001.png", "size": 3, "media_type": "image/png", "url": "http://storage.test/a"},
        {"name": "meta.json", "size": 2, "media_type": "application/json", "url": "http://storage.test/b"},
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            return httpx.Response(200, content={"/a": b"png", "/b": b"{}"}[request.url.path])
        return httpx.Response(200, json={"items": items})

    client, _ = client_for(handle)
    files = client.download_outputs(JOB_ID, tmp_path)
    assert files == [tmp_path / "frames" / "0001.png", tmp_path / "meta.json"]
    assert (tmp_path / "frames" / "0001.png").read_bytes() == b"png"


def test_a_path_in_a_jobs_args_is_uploaded_first_and_sent_as_an_asset_reference(tmp_path: Path) -> None:
    field = tmp_path / "field.npy"
    field.write_bytes(b"\x93NUMPY\x01\x00" + b"x" * 100)
    asset = {
        "asset_id": "01JD7Q9A1B2C3D4E5F6G7H8J9A",
        "filename": "field.npy",
        "media_type": "application/x-npy",
        "size": 108,
        "status": "AVAILABLE",
    }
    form: dict[str, bytes] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            form["body"] = request.content
            return httpx.Response(204)
        if request.url.path == "/v1/uploads":
            assert json.loads(request.content) == {
                "filename": "field.npy",
                "media_type": "application/x-npy",
                "size": 108,
            }
            upload = {
                "method": "POST",
                "url": "http://storage.test/bucket",
                "fields": {"key": "uploads/k", "policy": "p"},
            }
            return httpx.Response(
                201, json={"asset_id": asset["asset_id"], "upload": upload, "expires_at": "x", "asset": asset}
            )
        if request.url.path.startswith("/v1/assets/"):
            return httpx.Response(200, json=asset)
        return httpx.Response(202, json=job_doc(args=json.loads(request.content)["args"]))

    client, recorder = client_for(handle)
    job = client.submit("visualize", "heatmap", {"input": field, "output": "map.png"})
    assert job.args["input"] == f"asset://{asset['asset_id']}"
    body = form["body"]
    assert body.index(b'name="key"') < body.index(b'name="policy"') < body.index(b'name="file"')  # file last
    assert field.read_bytes() in body
    assert recorder.requests[1].headers["content-length"] == str(len(body))
