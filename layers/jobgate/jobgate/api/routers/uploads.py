"""Uploads: a presigned POST (or a multipart plan) straight to S3; no file byte passes through here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from jobgate.api.deps import AssetsDep, TenantDep
from jobgate.models import Asset
from jobgate.services.assets import CompletedPart, UploadRequest, UploadTicket

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {422: {"description": "Invalid request"}}


class CompleteRequest(BaseModel):
    parts: list[CompletedPart] = Field(min_length=1, max_length=10_000)


@router.post("", response_model=UploadTicket, status_code=status.HTTP_201_CREATED, responses=_PROBLEMS)
def create_upload(request: UploadRequest, assets: AssetsDep, tenant: TenantDep) -> UploadTicket:
    return assets.start_upload(tenant, request)


@router.post(
    "/{asset_id}/complete",
    response_model=Asset,
    responses={404: {"description": "No such asset"}, 409: {"description": "No open upload"}, **_PROBLEMS},
)
def complete_upload(asset_id: str, body: CompleteRequest, assets: AssetsDep, tenant: TenantDep) -> Asset:
    return assets.complete_multipart(tenant, asset_id, body.parts)
