"""Runs: a job found by the run_id its client gave (or the server made), as a light status to poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from jobgate.api.deps import JobsDep, ServicesDep, TenantDep
from jobgate.api.schemas import RunStatus

router = APIRouter(prefix="/v1/runs", tags=["jobs"])


@router.get("/{run_id}", response_model=RunStatus, responses={404: {"description": "No such run"}})
def get_run(
    run_id: Annotated[str, Path(min_length=1, max_length=160)],
    jobs: JobsDep,
    tenant: TenantDep,
    services: ServicesDep,
) -> RunStatus:
    """The status of the job submitted with this run_id (`run_<job_id>` when the client gave none)."""
    job = jobs.find_run(tenant, run_id)
    return RunStatus.of(job, services.settings.websocket_url, declared=jobs.declared_outputs(job))
