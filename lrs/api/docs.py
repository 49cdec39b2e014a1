"""The service's front door: `/` (an index of links), and the API documentation at `/docs`
(Swagger UI), served with its scripts and styles from the installed package, so it works on a
server without internet access.

The assets come from the `fastapi-offline` distribution (Swagger UI bundle); the page itself is
FastAPI's, pointed at those local files. (No ReDoc: its bundle fetches its logo from a CDN.)
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from lrs import __version__
from lrs.api import openapi

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs/assets"

router = APIRouter()

# Where a newcomer (or a script) goes from `/`.
LINKS = {
    "xapi": "/xapi/",
    "about": "/xapi/about",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "dashboard": "/dashboard/",
    "health": "/health",
    "ready": "/ready",
    "metrics": "/metrics",
}


@router.get(
    "/",
    summary="Index: what this service is, and links to its parts",
    operation_id="index",
    tags=["operations"],
    response_class=JSONResponse,
    **openapi.operation(
        scopes=None,
        ok={
            "description": "Name, version and links",
            "content": openapi.json_content(openapi.INDEX_SCHEMA),
        },
        errors=(),
    ),
)
async def index(request: Request) -> JSONResponse:
    root = request.scope.get("root_path", "")
    return JSONResponse(
        {
            "name": "lrs",
            "description": "xAPI Learning Record Store with live learner progress",
            "version": __version__,
            "links": {name: root + path for name, path in LINKS.items()},
        }
    )


def _page_routes(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API documentation",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            # "Try it out" asks for the Basic credentials once and keeps them across reloads.
            swagger_ui_parameters={"persistAuthorization": True},
        )


def install(app: FastAPI) -> None:
    """Add `/`, `/docs` and its assets to an app created with docs_url=None and
    redoc_url=None (FastAPI's own pages load their assets from a CDN)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")
    _page_routes(app)
    app.include_router(router)
