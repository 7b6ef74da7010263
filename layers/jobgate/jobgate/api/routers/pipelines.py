"""Pipelines: submit steps (or zyra's own pipeline file), read, list, cancel."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ValidationError

from jobgate.api.deps import PipelinesDep, ServicesDep, TenantDep
from jobgate.api.schemas import JobView
from jobgate.errors import ValidationFailed
from jobgate.services.pipelines import (
    Pipeline,
    PipelineRequest,
    PipelineService,
    pipeline_status,
    steps_from_zyra,
)

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])

MAX_BODY = 256 * 1024
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class StepView(BaseModel):
    name: str
    after: list[str]
    job: JobView


class PipelineView(BaseModel):
    pipeline_id: str
    run_id: str | None
    status: str
    progress: float
    created_at: datetime
    steps: list[StepView]


class PipelineList(BaseModel):
    items: list[PipelineView]
    next_cursor: str | None


def _view(service: PipelineService, pipeline: Pipeline, websocket_url: str | None) -> PipelineView:
    jobs = service.jobs(pipeline)
    ordered = [jobs[s.job_id] for s in pipeline.steps]
    return PipelineView(
        pipeline_id=pipeline.pipeline_id,
        run_id=pipeline.run_id,
        status=pipeline_status(ordered),
        progress=round(sum(j.progress for j in ordered) / len(ordered), 4),
        created_at=pipeline.created_at,
        steps=[
            StepView(name=s.name, after=s.after, job=JobView.of(jobs[s.job_id], websocket_url))
            for s in pipeline.steps
        ],
    )


def _parse(raw: bytes, content_type: str) -> PipelineRequest:
    """JSON steps, or zyra's pipeline file as YAML or JSON (`stages:`)."""
    problem = ValidationFailed("The body is not a pipeline.", [{"loc": ["body"], "msg": "unreadable"}])
    try:
        doc: Any = yaml.safe_load(raw) if content_type in _YAML_TYPES else json.loads(raw)
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
        raise problem from exc
    if not isinstance(doc, dict):
        raise problem
    try:
        return (
            steps_from_zyra(doc)
            if "stages" in doc and "steps" not in doc
            else PipelineRequest.model_validate(doc)
        )
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ValidationFailed(f"{len(errors)} invalid field(s) in the pipeline.", errors) from exc


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": PipelineRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "application/yaml": {
                "schema": {"type": "object", "description": "zyra's own pipeline file (stages:)"}
            },
        },
    }
}


@router.post(
    "",
    response_model=PipelineView,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_BODY_DOC,
    responses={200: {"model": PipelineView, "description": "A repeated run_id"}, 409: {}, 413: {}, 422: {}},
)
async def submit_pipeline(
    request: Request, pipelines: PipelinesDep, tenant: TenantDep, services: ServicesDep, response: Response
) -> PipelineView:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ValidationFailed(
            f"A pipeline body is at most {MAX_BODY} bytes.", [{"loc": ["body"], "msg": "too large"}]
        )
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    body = _parse(raw, content_type)
    pipeline, created = pipelines.submit(tenant, body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/pipelines/{pipeline.pipeline_id}"
    return _view(pipelines, pipeline, services.settings.websocket_url)


@router.get("", response_model=PipelineList, responses={422: {}})
def list_pipelines(
    pipelines: PipelinesDep,
    tenant: TenantDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> PipelineList:
    items, next_cursor = pipelines.list_pipelines(tenant, limit=limit, cursor=cursor)
    ws = services.settings.websocket_url
    return PipelineList(items=[_view(pipelines, p, ws) for p in items], next_cursor=next_cursor)


@router.get("/{pipeline_id}", response_model=PipelineView, responses={404: {}})
def get_pipeline(
    pipeline_id: str, pipelines: PipelinesDep, tenant: TenantDep, services: ServicesDep
) -> PipelineView:
    return _view(pipelines, pipelines.get(tenant, pipeline_id), services.settings.websocket_url)


@router.delete("/{pipeline_id}", response_model=PipelineView, responses={404: {}})
def cancel_pipeline(
    pipeline_id: str, pipelines: PipelinesDep, tenant: TenantDep, services: ServicesDep
) -> PipelineView:
    return _view(pipelines, pipelines.cancel(tenant, pipeline_id), services.settings.websocket_url)
