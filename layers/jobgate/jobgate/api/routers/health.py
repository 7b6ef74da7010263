"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from jobgate.api.deps import ServicesDep
from jobgate.api.schemas import Health
from jobgate.errors import JobgateError, ServiceUnavailable

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health)
def live() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses={503: {"description": "A dependency is down"}})
def ready(services: ServicesDep) -> Health:
    checks: dict[str, str] = {}
    failed: list[str] = []
    for name, ping in (
        ("table", services.store.ping),
        ("queue", services.queue.ping),
        ("bucket", services.blobs.ping),
    ):
        try:
            ping()
            checks[name] = "ok"
        except JobgateError as exc:
            checks[name] = exc.detail
            failed.append(name)
    if failed:
        raise ServiceUnavailable(f"Not ready: {', '.join(failed)} unreachable.", extra={"checks": checks})
    return Health(status="ok", checks=checks)
