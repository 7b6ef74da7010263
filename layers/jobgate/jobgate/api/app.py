"""The FastAPI application: routers, problem+json errors, OpenAPI at /openapi.json."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from jobgate import __version__
from jobgate.api import console, docs, openapi, problems
from jobgate.api.middleware import BodySizeLimit, RequestDeadline
from jobgate.api.routers import assets, commands, health, jobs, maps, pipelines, runs, uploads
from jobgate.wiring import ApiServices


def create_app(services: ApiServices) -> FastAPI:
    app = FastAPI(
        title="jobgate",
        version=__version__,
        summary="Run data-pipeline CLI stages (Zyra) as jobs: submit, follow, fetch results.",
        openapi_url="/openapi.json",
        docs_url=None,  # jobgate.api.docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.services = services
    problems.install(app)
    for router in (
        health.router,
        commands.router,
        jobs.router,
        runs.router,
        pipelines.router,
        maps.router,
        uploads.router,
        assets.router,
    ):
        app.include_router(router)
    openapi.install(app)
    docs.install(app)
    console.install(app)
    settings = services.settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestDeadline)  # outside the body limit: its clock starts first
    if settings.cors_origins:  # added last, so outermost: 413 answers carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
    return app
