"""The FastAPI application: routers, middleware, error handling, start-up and shut-down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from lrs.api import (
    about,
    activities,
    admin,
    courses,
    credentials,
    documents,
    federation,
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

    app = FastAPI(title="LRS", version="0.1.0", lifespan=lifespan)
    app.state.services = services
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
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
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
    app.add_middleware(RequestContextMiddleware, metrics=services.metrics)
    # The last resort, should a middleware itself fail: a bare 500 instead of a closed
    # connection.
    app.add_middleware(ErrorBoundary)
    return app
