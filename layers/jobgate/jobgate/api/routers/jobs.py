"""Jobs: submit (async, sync or dry run), read, list, cancel, status, events, logs and outputs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse

from jobgate.api.deps import JobsDep, ServicesDep, TenantDep, TimesDep
from jobgate.api.schemas import JobList, JobView, OutputList, RunStatus
from jobgate.models import Job, JobRequest, JobStatus
from jobgate.services.jobs import DryRun, EventPage, JobService
from jobgate.settings import MAX_EVENT_WAIT_S

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job"},
    409: {"description": "Conflict"},
    422: {"description": "Invalid request"},
}
_NOT_ENDED = {"description": "The job has not ended: its outputs are there once it has"}


def job_view(job: Job, jobs: JobService, websocket_url: str | None) -> JobView:
    return JobView.of(job, websocket_url, declared=jobs.declared_outputs(job))


@router.post(
    "",
    response_model=JobView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {
            "model": JobView | DryRun,
            "description": "The job has finished (sync mode, or a repeated run_id); or, with dry_run, what"
            " a submit would run (nothing was written)",
        },
        **_PROBLEMS,
    },
)
def submit_job(
    request: JobRequest,
    jobs: JobsDep,
    tenant: TenantDep,
    services: ServicesDep,
    response: Response,
    times: TimesDep,
) -> Any:
    if request.dry_run:
        return JSONResponse(jobs.dry_run(tenant, request).model_dump(mode="json"))
    job, _created = jobs.submit(tenant, request)
    if request.mode == "sync":
        # Counted from the request's arrival, not from now: the submit's own work is part of it.
        job = jobs.wait(job, until=times.wait_until(request.wait_s))
    response.status_code = status.HTTP_200_OK if job.terminal else status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/v1/jobs/{job.job_id}"
    return job_view(job, jobs, services.settings.websocket_url)


@router.get("", response_model=JobList, responses={422: _PROBLEMS[422]})
def list_jobs(
    jobs: JobsDep,
    tenant: TenantDep,
    services: ServicesDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> JobList:
    page = jobs.list_jobs(tenant, status=status_, limit=limit, cursor=cursor)
    ws = services.settings.websocket_url
    return JobList(items=[job_view(j, jobs, ws) for j in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobView, responses={404: _PROBLEMS[404]})
def get_job(job_id: str, jobs: JobsDep, tenant: TenantDep, services: ServicesDep) -> JobView:
    return job_view(jobs.get(tenant, job_id), jobs, services.settings.websocket_url)


@router.get("/{job_id}/status", response_model=RunStatus, responses={404: _PROBLEMS[404]})
def get_status(job_id: str, jobs: JobsDep, tenant: TenantDep, services: ServicesDep) -> RunStatus:
    """The job's light status, to poll every few seconds (GET /v1/runs/{run_id} answers the same)."""
    job = jobs.get(tenant, job_id)
    return RunStatus.of(job, services.settings.websocket_url, declared=jobs.declared_outputs(job))


@router.delete(
    "/{job_id}",
    response_model=JobView,
    responses={
        404: _PROBLEMS[404],
        409: {**_PROBLEMS[409], "description": "The job has ended otherwise (succeeded, failed, timed out)"},
    },
)
def cancel_job(job_id: str, jobs: JobsDep, tenant: TenantDep, services: ServicesDep) -> JobView:
    """Cancel a job: a blocked or queued one ends `cancelled` at once; a running one is flagged, and its
    worker kills the command within about a second. Cancelling a job that is already cancelled answers
    it again (200), so a cancel may be sent again safely."""
    return job_view(jobs.cancel(tenant, job_id), jobs, services.settings.websocket_url)


@router.post(
    "/{job_id}/retry",
    response_model=JobView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: _PROBLEMS[404], 409: _PROBLEMS[409], 422: _PROBLEMS[422]},
)
def retry_job(
    job_id: str, jobs: JobsDep, tenant: TenantDep, services: ServicesDep, response: Response
) -> JobView:
    """A new job with the same request as an ended one; the two are linked (retry_of, retried_by)."""
    retry = jobs.retry(tenant, job_id)
    response.headers["Location"] = f"/v1/jobs/{retry.job_id}"
    return job_view(retry, jobs, services.settings.websocket_url)


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    response_model_exclude_none=True,  # each event as the WebSocket sends it (docs/asyncapi.yaml)
    responses={404: _PROBLEMS[404], 422: _PROBLEMS[422]},
)
def job_events(
    job_id: str,
    jobs: JobsDep,
    tenant: TenantDep,
    times: TimesDep,
    after_seq: Annotated[
        int | None, Query(ge=0, description="Events after this one (0: from the start; omitted: from now)")
    ] = None,
    wait_s: Annotated[
        float, Query(ge=0, le=MAX_EVENT_WAIT_S, description="Wait up to this long for an event (long poll)")
    ] = 0,
) -> EventPage:
    """The job's numbered events (the WebSocket's `log`, `progress` and `status`), for clients that
    cannot hold a WebSocket: answered as soon as there are events after `after_seq`, or the job has
    ended, or `wait_s` has passed. Pass `next_after_seq` as `after_seq` to go on; `done` says the job
    has ended and every event was answered."""
    return jobs.events(tenant, job_id, after_seq=after_seq, until=times.wait_until(wait_s))


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}},
        307: {"description": "Large log: presigned URL"},
        **_PROBLEMS,
    },
)
def get_logs(
    job_id: str, jobs: JobsDep, tenant: TenantDep, stream: Literal["stdout", "stderr"] = "stdout"
) -> Response:
    content = jobs.logs(tenant, job_id, stream)
    if content.url is not None:
        return RedirectResponse(content.url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return PlainTextResponse(content.text or "", media_type="text/plain; charset=utf-8")


@router.get(
    "/{job_id}/outputs",
    response_model=OutputList,
    responses={404: _PROBLEMS[404], 409: _NOT_ENDED, 410: {"description": "Expired"}, 422: _PROBLEMS[422]},
)
def list_outputs(
    job_id: str,
    jobs: JobsDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> OutputList:
    """Every output the job wrote, a page at a time, each with a presigned download URL."""
    page = jobs.outputs(tenant, job_id, limit=limit, cursor=cursor)
    return OutputList(items=page.items, next_cursor=page.next_cursor)


@router.get(
    "/{job_id}/outputs/{name:path}",
    response_class=Response,
    responses={
        200: {
            "description": "The output itself (at most 1 MiB), with its media type, ETag (its sha256) and"
            " Content-Length",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "Not modified (If-None-Match named its ETag)"},
        307: {"description": "A larger output: presigned GET"},
        404: {"description": "No such job, or it wrote no output of that name"},
        409: _NOT_ENDED,
        410: {"description": "Expired"},
    },
)
def get_output(
    job_id: str,
    name: Annotated[str, Path(max_length=1024, description="The output's relative path, as listed")],
    jobs: JobsDep,
    tenant: TenantDep,
    request: Request,
) -> Response:
    """One output of an ended job: small ones inline, larger ones by redirect to S3."""
    job, output = jobs.output(tenant, job_id, name)
    etag = f'"{output.sha256}"' if output.sha256 else None
    if etag is not None and etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    content = jobs.output_content(job, output)
    if content.url is not None:
        return RedirectResponse(content.url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    headers = {"ETag": etag} if etag else {}
    return Response(content.data or b"", media_type=output.media_type, headers=headers)


def _etags(header: str | None) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in (header or "").split(",") if tag.strip()}


@router.get(
    "/{job_id}/download",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={307: {"description": "Presigned GET of the output"}, **_PROBLEMS},
)
def download_output(
    job_id: str,
    jobs: JobsDep,
    tenant: TenantDep,
    name: Annotated[str | None, Query(max_length=1024)] = None,
    zip_: Annotated[
        bool, Query(alias="zip", description="The zip of every output (asked at submit)")
    ] = False,
) -> RedirectResponse:
    url = jobs.archive_url(tenant, job_id) if zip_ else jobs.download_url(tenant, job_id, name)
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
