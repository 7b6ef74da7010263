"""Maps: one command over many items, a chunk job each; read, page the chunks, pause, resume, cancel,
retry a chunk, merge and download."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from jobgate.api.deps import JobsDep, MapsDep, ServicesDep, TenantDep
from jobgate.api.schemas import JobView
from jobgate.errors import Conflict, ValidationFailed
from jobgate.services.maps import (
    ChunkState,
    MapCounts,
    MapRecord,
    MapRequest,
    MapService,
    MergeRequest,
    count_chunks,
    map_status,
)

router = APIRouter(prefix="/v1/maps", tags=["maps"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {404: {}, 409: {}, 422: {}}
PREVIEW_BYTES = 4096
PREVIEW_ROWS = 20


class MergeView(BaseModel):
    job_id: str
    status: str
    stage: str
    command: str
    href: str


class MapLinks(BaseModel):
    self: str
    chunks: str
    download: str


class MapView(BaseModel):
    map_id: str
    run_id: str | None
    status: str
    stage: str
    command: str
    over: str
    count: int
    max_parallel: int
    paused: bool
    progress: float
    counts: MapCounts
    merge: MergeView | None
    created_at: datetime
    links: MapLinks


class ChunkView(BaseModel):
    chunk: int
    job: JobView


class ChunkPage(BaseModel):
    items: list[ChunkView]
    next_cursor: str | None


class Preview(BaseModel):
    name: str
    media_type: str
    text: str
    truncated: bool


class ChunkDetail(ChunkView):
    preview: Preview | None = None


def _view(service: MapService, record: MapRecord, *, created: bool = False) -> MapView:
    chunks: dict[int, ChunkState] = {}
    if created:
        # A map just written: its chunks are as written and released (no read of 10,000 chunks).
        counts = MapCounts(queued=record.released, waiting=record.count - record.released)
    else:
        chunks = service.states(record)
        counts = count_chunks(chunks.values())
    merge = service.merge_job(record) if not created else None
    base = f"/v1/maps/{record.map_id}"
    return MapView(
        map_id=record.map_id,
        run_id=record.run_id,
        status=map_status(record, counts, merge.status if merge is not None else None),
        stage=record.stage,
        command=record.command,
        over=record.over,
        count=record.count,
        max_parallel=record.max_parallel,
        paused=record.paused,
        progress=round(sum(j.progress for j in chunks.values()) / max(1, record.count), 4),
        counts=counts,
        merge=(
            MergeView(
                job_id=merge.job_id,
                status=merge.status.value,
                stage=merge.stage,
                command=merge.command,
                href=f"/v1/jobs/{merge.job_id}",
            )
            if merge is not None
            else None
        ),
        created_at=record.created_at,
        links=MapLinks(self=base, chunks=f"{base}/chunks", download=f"{base}/download"),
    )


@router.post(
    "",
    response_model=MapView,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": MapView, "description": "A repeated run_id"}, 409: {}, 422: {}, 429: {}},
)
def submit_map(body: MapRequest, maps: MapsDep, tenant: TenantDep, response: Response) -> MapView:
    record, created = maps.submit(tenant, body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/maps/{record.map_id}"
    return _view(maps, record, created=created)


@router.get("/{map_id}", response_model=MapView, responses={404: {}})
def get_map(map_id: str, maps: MapsDep, tenant: TenantDep) -> MapView:
    return _view(maps, maps.get(tenant, map_id))


@router.get("/{map_id}/chunks", response_model=ChunkPage, responses={404: {}, 422: {}})
def list_chunks(
    map_id: str,
    maps: MapsDep,
    tenant: TenantDep,
    services: ServicesDep,
    status_: Annotated[
        str | None,
        Query(
            alias="status",
            pattern="^(waiting|queued|running|succeeded|failed|timed_out|cancelled)$",
            description="Only chunks in this state (`waiting`: not released yet)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=16)] = None,
) -> ChunkPage:
    record = maps.get(tenant, map_id)
    if cursor is not None and not (cursor.isdigit() and int(cursor) < record.count):
        raise ValidationFailed(
            "The cursor is not one this list gave out.",
            [{"loc": ["query", "cursor"], "msg": "invalid cursor"}],
        )
    found, next_at = maps.page(record, status=status_, limit=limit, cursor=int(cursor or 0))
    ws = services.settings.websocket_url
    return ChunkPage(
        items=[ChunkView(chunk=n, job=JobView.of(job, ws)) for n, job in found],
        next_cursor=str(next_at) if next_at is not None else None,
    )


@router.get("/{map_id}/chunks/{chunk}", response_model=ChunkDetail, responses={404: {}})
def get_chunk(
    map_id: str,
    chunk: int,
    maps: MapsDep,
    tenant: TenantDep,
    services: ServicesDep,
    preview: Annotated[bool, Query(description="The first 4 KiB / 20 rows of its output, inline")] = False,
) -> ChunkDetail:
    job = maps.chunk(tenant, map_id, chunk)
    shown = None
    if preview and job.outputs:
        output = job.outputs[0]
        head = maps.output_head(job, output.name, PREVIEW_BYTES)
        text = head.decode("utf-8", "replace")
        rows = text.splitlines(keepends=True)
        truncated = output.size > len(head) or len(rows) > PREVIEW_ROWS
        shown = Preview(
            name=output.name,
            media_type=output.media_type,
            text="".join(rows[:PREVIEW_ROWS]),
            truncated=truncated,
        )
    return ChunkDetail(chunk=chunk, job=JobView.of(job, services.settings.websocket_url), preview=shown)


@router.post("/{map_id}/chunks/{chunk}/retry", response_model=ChunkView, status_code=201, responses=_PROBLEMS)
def retry_chunk(
    map_id: str, chunk: int, maps: MapsDep, tenant: TenantDep, services: ServicesDep
) -> ChunkView:
    return ChunkView(
        chunk=chunk, job=JobView.of(maps.retry(tenant, map_id, chunk), services.settings.websocket_url)
    )


@router.post("/{map_id}/pause", response_model=MapView, responses=_PROBLEMS)
def pause_map(map_id: str, maps: MapsDep, tenant: TenantDep) -> MapView:
    return _view(maps, maps.pause(tenant, map_id))


@router.post("/{map_id}/resume", response_model=MapView, responses=_PROBLEMS)
def resume_map(map_id: str, maps: MapsDep, tenant: TenantDep) -> MapView:
    return _view(maps, maps.resume(tenant, map_id))


@router.delete("/{map_id}", response_model=MapView, responses=_PROBLEMS)
def cancel_map(map_id: str, maps: MapsDep, tenant: TenantDep) -> MapView:
    return _view(maps, maps.cancel(tenant, map_id))


@router.post("/{map_id}/merge", response_model=MapView, status_code=202, responses=_PROBLEMS)
def merge_map(map_id: str, maps: MapsDep, tenant: TenantDep, body: MergeRequest | None = None) -> MapView:
    maps.merge(tenant, map_id, body or MergeRequest())
    return _view(maps, maps.get(tenant, map_id))


@router.get(
    "/{map_id}/download",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={307: {"description": "Presigned GET of the merged file"}, **_PROBLEMS},
)
def download_map(map_id: str, maps: MapsDep, jobs: JobsDep, tenant: TenantDep) -> RedirectResponse:
    record = maps.get(tenant, map_id)
    merge = maps.merge_job(record)
    if merge is None:
        raise Conflict(f"Map '{map_id}' has no merge yet.")
    if merge.status.value != "succeeded":
        raise Conflict(f"The merge of map '{map_id}' is {merge.status.value} (job {merge.job_id}).")
    url = jobs.download_url(tenant, merge.job_id, None)
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
