"""FastAPI dependencies, as Annotated aliases that routers use and tests override."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from jobgate.errors import Unauthorized
from jobgate.services.assets import AssetService
from jobgate.services.jobs import JobService
from jobgate.services.registry import Registry
from jobgate.wiring import ApiServices

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The tenant's API key.")


def get_services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


ServicesDep = Annotated[ApiServices, Depends(get_services)]


def get_registry(services: ServicesDep) -> Registry:
    return services.registry


def get_job_service(services: ServicesDep) -> JobService:
    return services.jobs


def get_asset_service(services: ServicesDep) -> AssetService:
    return services.assets


def authenticate(services: ServicesDep, api_key: Annotated[str | None, Depends(_api_key_header)]) -> str:
    """The caller's tenant, from its X-API-Key; 401 problem when missing or wrong."""
    if not api_key:
        raise Unauthorized("Send your API key in the X-API-Key header.")
    tenant = services.tenant_for_key(api_key)
    if tenant is None:
        raise Unauthorized("The API key is not valid.")
    return tenant


RegistryDep = Annotated[Registry, Depends(get_registry)]
JobsDep = Annotated[JobService, Depends(get_job_service)]
AssetsDep = Annotated[AssetService, Depends(get_asset_service)]
TenantDep = Annotated[str, Depends(authenticate)]
