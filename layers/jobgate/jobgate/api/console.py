"""The web console at /console: a page and its scripts and styles, served from the package (no CDN, no
build step), each answer with a Content-Security-Policy that lets the page reach only the API, the
WebSocket API and the bucket's presigned URLs (docs/architecture.md, "The web console")."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from jobgate.adapters.blobs import url_origin
from jobgate.api.deps import ServicesDep

ASSETS = Path(__file__).parent / "console_assets"
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
# What the page is: its scripts and styles, named here so no other file of the folder is ever served.
_SERVED = {p.name: p for p in ASSETS.iterdir() if p.suffix in _MEDIA_TYPES and p.name != "index.html"}

router = APIRouter(include_in_schema=False)


def content_security_policy(websocket_url: str | None, bucket_origins: list[str]) -> str:
    """No inline script or style, no plugin, no frame; fetches to the API itself, the WebSocket API
    and the bucket (presigned uploads and downloads); images and videos from the bucket or blobs."""
    connect = ["'self'", *bucket_origins]
    if websocket_url:
        connect.append(url_origin(websocket_url))
    media = ["'self'", "blob:", "data:", *bucket_origins]
    directives = {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": media,
        "media-src": media,
        "connect-src": connect,
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def _headers(services: ServicesDep) -> dict[str, str]:
    csp = content_security_policy(services.settings.websocket_url, services.blobs.url_origins())
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        # Presigned URLs in the page's links are credentials: no Referer carries them elsewhere.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


@router.get("/console", response_class=HTMLResponse)
@router.get("/console/", response_class=HTMLResponse)
def console_page(request: Request, services: ServicesDep) -> HTMLResponse:
    base = str(request.scope.get("root_path") or "")
    page = _page().replace("__BASE__", base)
    return HTMLResponse(page, headers=_headers(services))


@router.get("/console/assets/{name}")
def console_asset(name: str, services: ServicesDep) -> FileResponse:
    path = _SERVED.get(name)
    if path is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="No such console file.")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_headers(services))


@cache
def _page() -> str:
    """index.html, read at the first request a container serves rather than at every one."""
    return (ASSETS / "index.html").read_text(encoding="utf-8")


def install(app: FastAPI) -> None:
    app.include_router(router)
