"""Operations: /health (liveness), /ready (dependencies and backlogs), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lrs.api import openapi
from lrs.derivation_process import HEARTBEAT_PREFIX as DERIVATION_PROCESS_PREFIX
from lrs.observability import Metrics
from lrs.services import Services
from lrs.storage import heartbeats

router = APIRouter()

# A worker that has not reported for this long is considered gone.
HEARTBEAT_STALE_SECONDS = 60.0
# How long one readiness probe waits for its dependency.
PROBE_SECONDS = 2.0
# The embedded store answers every query on its one thread, so under load a probe waits behind
# other work. Busy is reachable: the store counts as not ready only once a probe has waited
# this long without an answer (or it answered with an error).
EMBEDDED_STALL_SECONDS = 30.0


_READY_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "checks": {
            "type": "object",
            "description": "per dependency: ok, its answer time (ms), details or the error",
            "additionalProperties": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "ms": {"type": "number"}},
                "required": ["ok"],
            },
        },
    },
    "required": ["status", "checks"],
}


@router.get(
    "/health",
    tags=["operations"],
    summary="Liveness: the process answers",
    **openapi.operation(
        scopes=None,
        ok=openapi.response(
            "The process is alive",
            {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]},
        ),
        errors=(),
    ),
)
async def health() -> dict[str, str]:
    """Liveness: the process answers. Dependencies are /ready's business."""
    return {"status": "ok"}


async def _check(
    name: str, probe: Any, timeout: float | None = None, *, busy_ok: bool = False
) -> tuple[str, dict[str, Any]]:
    """Run one probe. With `busy_ok`, running out of time only means the store was busy: the
    check reports that without failing (the database check decides whether it is reachable)."""
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe, timeout=timeout or PROBE_SECONDS)
        result = {"ok": True, **(detail or {})}
    except Exception as exc:  # a readiness probe reports failures, it never raises them
        if busy_ok and isinstance(exc, TimeoutError):
            result = {"ok": True, "busy": True}
        else:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return name, result


async def _database_query(services: Services) -> None:
    await services.credentials.collection.find_one({"key": "__readiness_probe__"})


async def _database(services: Services) -> dict[str, Any]:
    await _database_query(services)
    return {"kind": services.database.kind}


class EmbeddedStoreProbe:
    """Readiness of the embedded store, which serves every query on one thread.

    Its data directory is checked on another thread, so a busy store does not delay that
    answer. A probe query is also sent through the store's thread, one at a time and kept
    across /ready calls: a probe that waited `PROBE_SECONDS` behind other work reports the
    store busy (and ready); only a query that fails, or one still unanswered after
    `EMBEDDED_STALL_SECONDS`, makes it not ready. So readiness follows whether the store works,
    and a busy store is never flooded with probes.
    """

    def __init__(self) -> None:
        self._pending: asyncio.Future[None] | None = None
        self._sent = 0.0

    async def __call__(self, services: Services) -> dict[str, Any]:
        await asyncio.to_thread(_data_dir_usable, services.settings.data_dir)
        if self._pending is None:
            self._pending = asyncio.ensure_future(_database_query(services))
            self._sent = time.monotonic()
        pending = self._pending
        await asyncio.wait({pending}, timeout=PROBE_SECONDS)
        if pending.done():
            if self._pending is pending:
                self._pending = None
            pending.result()  # the store's error, if it answered with one
            return {"kind": "embedded"}
        waited = time.monotonic() - self._sent
        if waited >= EMBEDDED_STALL_SECONDS:
            raise TimeoutError(f"the embedded store has not answered for {waited:.1f} s")
        return {"kind": "embedded", "busy": True, "waiting_seconds": round(waited, 1)}


def _data_dir_usable(path: Any) -> None:
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"the data directory {directory} is missing")
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        raise PermissionError(f"the data directory {directory} is not readable and writable")


async def _redis(url: str) -> dict[str, Any]:
    import redis.asyncio as redis_async

    client = redis_async.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return {}


async def _backlog(services: Services) -> dict[str, Any]:
    underived, oldest = await services.statements.outbox.backlog("derive")
    lag = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1e6)
    # Derived, but a discovered module grew since: its learners' records still show the old
    # item count until they are summarized again (about a second later). Nothing is owed once
    # both figures are 0.
    resummaries = await services.statements.outbox.entry_count("resummarize")
    return {
        "underived": underived,
        "derivation_lag_seconds": round(lag, 3),
        "resummaries_owed": resummaries,
    }


async def _workers(services: Services) -> dict[str, Any]:
    mode = services.settings.derivation_mode
    if mode == "inprocess":
        return {"mode": "inprocess"}
    beats = await heartbeats.latest(services.database)
    fresh = [
        b["name"]
        for b in beats
        if time.time() - b["at"] < HEARTBEAT_STALE_SECONDS
        # Celery workers and derivation processes both beat; each mode needs its own.
        and b["name"].startswith(DERIVATION_PROCESS_PREFIX) == (mode == "process")
    ]
    if not fresh:
        who = "derivation process" if mode == "process" else "worker"
        raise RuntimeError(f"no {who} heartbeat in the last minute")
    return {"mode": mode, "workers": fresh}


@router.get(
    "/ready",
    tags=["operations"],
    summary="Readiness: database, Redis, workers and backlogs",
    **openapi.operation(
        scopes=None,
        ok=openapi.response("Ready to serve", _READY_SCHEMA),
        errors=(),
        responses={503: openapi.response("Not ready: a check failed", _READY_SCHEMA)},
    ),
)
async def ready(request: Request) -> JSONResponse:
    """Ready when the database (and Redis, when configured) answer and a worker is alive."""
    services: Services = request.app.state.services
    embedded = services.database.kind == "embedded"
    if embedded:
        store_probe = getattr(request.app.state, "embedded_store_probe", None)
        if store_probe is None:
            store_probe = request.app.state.embedded_store_probe = EmbeddedStoreProbe()
        database = _check("database", store_probe(services), PROBE_SECONDS + 5)
    else:
        database = _check("database", _database(services))
    probes = [
        database,
        # Also queries of the store: on the busy embedded store, no answer in time is no news.
        _check("backlog", _backlog(services), busy_ok=embedded),
        _check("workers", _workers(services), busy_ok=embedded),
    ]
    if services.settings.redis_url:
        probes.append(_check("redis", _redis(services.settings.redis_url)))
    for name, probe in getattr(request.app.state, "readiness_probes", {}).items():
        probes.append(_check(name, probe(services)))
    checks = dict(await asyncio.gather(*probes))
    ok = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    **openapi.operation(
        scopes=None,
        ok=openapi.response(
            "Requests by route and status, statements stored, derivation backlog and lag, "
            "forwarding lag and dead letters, SSE clients (Prometheus text format)",
            openapi.STRING,
            media_type="text/plain",
        ),
        errors=(),
    ),
)
async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    registry: Metrics = services.metrics
    # Metrics must render even when the database is struggling.
    with contextlib.suppress(Exception):
        backlog = await _backlog(services)
        registry.underived.set(backlog["underived"])
        registry.derivation_lag.set(backlog["derivation_lag_seconds"])
        registry.resummaries_owed.set(backlog["resummaries_owed"])
    registry.sse_clients.set(services.bus.subscriber_count)
    for refresh in getattr(request.app.state, "metric_refreshers", []):
        with contextlib.suppress(Exception):
            await refresh(services, registry)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
