"""The FastAPI application: routers, problem+json errors, OpenAPI at /openapi.json."""

from __future__ import annotations

from fastapi import FastAPI

from jobgate import __version__
from jobgate.api import problems
from jobgate.api.routers import assets, commands, health, jobs, uploads
from jobgate.wiring import ApiServices


def create_app(services: ApiServices) -> FastAPI:
    app = FastAPI(
        title="jobgate",
        version=__version__,
        summary="Run data-pipeline CLI stages (Zyra) as jobs: submit, follow, fetch results.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    problems.install(app)
    for router in (health.router, commands.router, jobs.router, uploads.router, assets.router):
        app.include_router(router)
    return app
