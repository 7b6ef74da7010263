"""Assets: the files clients uploaded, PENDING until their object is in S3."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import RedirectResponse

from jobgate.api.deps import AssetsDep, TenantDep
from jobgate.errors import ValidationFailed
from jobgate.models import Asset, AssetPage, AssetStatus
from jobgate.services.assets import MAX_LABELS, parse_label_filter

router = APIRouter(prefix="/v1/assets", tags=["assets"])


@router.get("", response_model=AssetPage, responses={422: {"description": "Invalid query"}})
def list_assets(
    assets: AssetsDep,
    tenant: TenantDep,
    status_: Annotated[AssetStatus | None, Query(alias="status")] = None,
    media_type: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    label: Annotated[
        list[str] | None,
        Query(max_length=MAX_LABELS, description="`key:value`; repeat to ask for several (all must match)"),
    ] = None,
) -> AssetPage:
    labels: dict[str, str] = {}
    for i, text in enumerate(label or []):
        try:
            key, value = parse_label_filter(text)
        except ValueError as exc:
            raise ValidationFailed(
                f"label={text!r}: {exc}.",
                [{"loc": ["query", "label", i], "msg": str(exc), "type": "value_error"}],
            ) from exc
        labels[key] = value
    return assets.list_assets(
        tenant, status=status_, media_type=media_type, limit=limit, cursor=cursor, labels=labels
    )


@router.get("/{asset_id}", response_model=Asset, responses={404: {"description": "No such asset"}})
def get_asset(asset_id: str, assets: AssetsDep, tenant: TenantDep) -> Asset:
    return assets.get(tenant, asset_id)


@router.get(
    "/{asset_id}/download",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={
        307: {"description": "Presigned GET of the file"},
        404: {"description": "No such asset"},
        409: {"description": "Not AVAILABLE"},
        410: {"description": "Expired"},
    },
)
def download_asset(asset_id: str, assets: AssetsDep, tenant: TenantDep) -> RedirectResponse:
    return RedirectResponse(
        assets.download_url(tenant, asset_id), status_code=status.HTTP_307_TEMPORARY_REDIRECT
    )
