"""Jobs: submit (async or sync), read, list, cancel, logs and outputs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import PlainTextResponse, RedirectResponse

from jobgate.api.deps import JobsDep, ServicesDep, TenantDep, TimesDep
from jobgate.api.schemas import JobList, JobView, OutputList
from jobgate.models import JobRequest, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job"},
    409: {"description": "Conflict"},
    422: {"description": "Invalid request"},
}


@router.post(
    "",
    response_model=JobView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": JobView, "description": "The job has finished (sync mode, or a repeated run_id)"},
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
) -> JobView:
    job, _created = jobs.submit(tenant, request)
    if request.mode == "sync":
        # Counted from the request's arrival, not from now: the submit's own work is part of it.
        job = jobs.wait(job, until=times.wait_until(request.wait_s))
    response.status_code = status.HTTP_200_OK if job.terminal else status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/v1/jobs/{job.job_id}"
    return JobView.of(job, services.settings.websocket_url)


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
    return JobList(items=[JobView.of(j, ws) for j in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobView, responses={404: _PROBLEMS[404]})
def get_job(job_id: str, jobs: JobsDep, tenant: TenantDep, services: ServicesDep) -> JobView:
    return JobView.of(jobs.get(tenant, job_id), services.settings.websocket_url)


@router.delete("/{job_id}", response_model=JobView, responses={404: _PROBLEMS[404], 409: _PROBLEMS[409]})
def cancel_job(job_id: str, jobs: JobsDep, tenant: TenantDep, services: ServicesDep) -> JobView:
    return JobView.of(jobs.cancel(tenant, job_id), services.settings.websocket_url)


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
    return JobView.of(retry, services.settings.websocket_url)


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
    responses={404: _PROBLEMS[404], 410: {"description": "Expired"}, 422: _PROBLEMS[422]},
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
