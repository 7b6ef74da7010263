"""FastAPI dependencies, as Annotated aliases that routers use and tests override."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from jobgate.api.middleware import TIMES_KEY, RequestTimes, request_times
from jobgate.observability import logger
from jobgate.services.assets import AssetService
from jobgate.services.jobs import JobService
from jobgate.services.maps import MapService
from jobgate.services.pipelines import PipelineService
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


def get_pipeline_service(services: ServicesDep) -> PipelineService:
    return services.pipelines


def get_map_service(services: ServicesDep) -> MapService:
    return services.maps


def get_request_times(request: Request) -> RequestTimes:
    """When the request arrived and its deadline (set by the RequestDeadline middleware)."""
    times = request.scope.get(TIMES_KEY)
    return times if isinstance(times, RequestTimes) else request_times(request.scope)


def jwt_claims(request: Request) -> dict[str, Any] | None:
    """Claims of the JWT that API Gateway's JWT authorizer validated; only the JWT API's events have them.

    They come from the Lambda event, which API Gateway writes, never from anything the client sends.
    """
    event = request.scope.get("aws.event") or {}
    jwt = ((event.get("requestContext") or {}).get("authorizer") or {}).get("jwt") or {}
    claims = jwt.get("claims")
    return claims if isinstance(claims, dict) else None


def authenticate(
    request: Request, services: ServicesDep, api_key: Annotated[str | None, Depends(_api_key_header)]
) -> str:
    """The caller's tenant, from its X-API-Key (or a validated JWT); 401 problem when missing or wrong,
    429 problem past the credential's request rate."""
    principal = services.authenticator.authenticate(api_key, jwt_claims(request))
    services.rate_limiter.take(principal.rate_bucket)
    logger.append_keys(tenant=principal.tenant)  # on every line the request logs from here on
    return principal.tenant


RegistryDep = Annotated[Registry, Depends(get_registry)]
JobsDep = Annotated[JobService, Depends(get_job_service)]
AssetsDep = Annotated[AssetService, Depends(get_asset_service)]
PipelinesDep = Annotated[PipelineService, Depends(get_pipeline_service)]
MapsDep = Annotated[MapService, Depends(get_map_service)]
TenantDep = Annotated[str, Depends(authenticate)]
TimesDep = Annotated[RequestTimes, Depends(get_request_times)]
