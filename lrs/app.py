"""The FastAPI application: routers, middleware, error handling, start-up and shut-down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.staticfiles import StaticFiles

from lrs import __version__
from lrs.api import (
    about,
    activities,
    admin,
    courses,
    credentials,
    docs,
    documents,
    federation,
    openapi,
    operations,
    progress,
    statements,
)
from lrs.api.consistency import consistent_through
from lrs.api.errors import ErrorBoundary, XAPIError
from lrs.api.middleware import XAPIMiddleware
from lrs.config import Settings, get_settings
from lrs.observability import RequestContextMiddleware, loggable_path
from lrs.services import Services, build_services
from lrs.throttle import FailureThrottle

log = logging.getLogger("lrs")

_DASHBOARD = Path(__file__).parent / "dashboard"

_EXPOSED_HEADERS = [
    "ETag",
    "Last-Modified",
    "X-Experience-API-Version",
    "X-Experience-API-Consistent-Through",
    "Content-Type",
]
_ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Experience-API-Version",
    "If-Match",
    "If-None-Match",
    "Accept-Language",
]


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    owns_services = services is None
    services = services or build_services(settings)
    # Failed logins are counted where every API process sees them (Redis), else in memory.
    services.authenticator.throttle = FailureThrottle(
        settings.auth_failures_per_key,
        settings.auth_failures_per_address,
        settings.redis_url,
        namespace=settings.database,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            if owns_services:
                await services.close()

    # FastAPI's own /docs and /redoc load their assets from a CDN: lrs.api.docs serves /docs
    # from the package instead (ReDoc is left out: its bundle fetches a logo from a CDN).
    app = FastAPI(
        title="LRS",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # operationId: the handler's (or route's) name, which each route keeps unique.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.services = services
    docs.install(app)
    app.include_router(operations.router)
    app.include_router(about.router)
    app.include_router(statements.router)
    app.include_router(documents.router)
    app.include_router(activities.router)
    app.include_router(courses.router)
    app.include_router(progress.router)
    app.include_router(admin.router)
    app.include_router(credentials.router)
    app.include_router(federation.router)
    # The progress dashboard: static files, no build step (lrs/dashboard/).
    app.mount("/dashboard", StaticFiles(directory=_DASHBOARD, html=True), name="dashboard")
    openapi.install(app, _DESCRIPTION)

    @app.exception_handler(XAPIError)
    async def xapi_error(request: Request, exc: XAPIError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return JSONResponse({"error": problems}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only.
            headers["Allow"] = ", ".join(allowed_methods(route_table(app), request.scope))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Not reached in practice: the error boundaries below answer first (Starlette's
        # handler for Exception answers, then re-raises, which closes the connection).
        log.exception("unhandled error on %s %s", request.method, loggable_path(request.scope))
        return JSONResponse({"error": "internal error"}, status_code=500)

    # Innermost: an exception no handler caught becomes a 500 that still passes through the
    # middleware below (version and Consistent-Through headers, CORS, request id).
    app.add_middleware(ErrorBoundary)

    async def statements_consistent_through() -> str:
        return await consistent_through(services)

    # Order: CORS outermost so that preflights and errors carry CORS headers.
    app.add_middleware(
        XAPIMiddleware,
        max_body_bytes=settings.max_body_bytes,
        default_version=settings.default_xapi_version,
        consistent_through=statements_consistent_through,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"],
        allow_headers=_ALLOWED_HEADERS,
        expose_headers=_EXPOSED_HEADERS,
        allow_credentials=settings.cors_origins != ["*"],
    )
    # Outermost: every response, errors and CORS preflights included, gets a request id.
    app.add_middleware(
        RequestContextMiddleware, metrics=services.metrics, routes=lambda: route_table(app)
    )
    # The last resort, should a middleware itself fail: a bare 500 instead of a closed
    # connection.
    app.add_middleware(ErrorBoundary)
    return app


def route_table(app: FastAPI) -> list[BaseRoute]:
    """Every route and mount of the app, flat, in matching order. FastAPI (0.16x) keeps an
    included router as one entry that holds the router (`original_router`); earlier versions
    copied its routes into the app's list."""
    table: list[BaseRoute] = []
    pending = list(app.router.routes)
    while pending:
        route = pending.pop(0)
        inner = getattr(route, "original_router", None)
        if inner is not None:
            pending[:0] = list(inner.routes)
        else:
            table.append(route)
    return table


def allowed_methods(routes: list[BaseRoute], scope: MutableMapping[str, Any]) -> list[str]:
    """Every method some route answers on the request's path (HEAD wherever GET is: the xAPI
    middleware serves it; OPTIONS always: answered here)."""
    methods = {"OPTIONS"}
    for route in routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    if "GET" in methods:
        methods.add("HEAD")
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


_DESCRIPTION = """An xAPI Learning Record Store (xAPI 1.0.3 and 2.0.0) that derives each
learner's progress per course module from the statements, live.

Authenticate with HTTP Basic (a credential's key and secret; "Authorize" above). A credential
belongs to one store (tenant): it sees that store's data only. Each operation lists the scopes
that grant it. Errors are JSON `{"error": "..."}`; invalid input is a 400, never a 422.
Every /xapi resource except /xapi/about needs the `X-Experience-API-Version` header.
"""
