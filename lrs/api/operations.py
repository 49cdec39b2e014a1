"""Operations: /health (liveness), /ready (dependencies and backlogs), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lrs.observability import Metrics
from lrs.services import Services

router = APIRouter()

# A worker that has not reported for this long is considered gone.
HEARTBEAT_STALE_SECONDS = 60.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Dependencies are /ready's business."""
    return {"status": "ok"}


async def _check(name: str, probe: Any, timeout: float = 2.0) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe, timeout=timeout)
        result = {"ok": True, **(detail or {})}
    except Exception as exc:  # a readiness probe reports failures, it never raises them
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return name, result


async def _database(services: Services) -> dict[str, Any]:
    await services.credentials.collection.find_one({"key": "__readiness_probe__"})
    return {"kind": services.database.kind}


async def _redis(url: str) -> dict[str, Any]:
    import redis.asyncio as redis_async

    client = redis_async.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return {}


async def _backlog(services: Services) -> dict[str, Any]:
    underived = await services.statements.count_underived()
    oldest = await services.statements.underived(limit=1)
    lag = 0.0
    if oldest:
        doc = await services.statements.statements.find_one(
            {"store": oldest[0]["store"], "id": oldest[0]["id"]}, projection={"stored_key": 1}
        )
        if doc:
            lag = max(0.0, time.time() - doc["stored_key"] / 1e6)
    return {"underived": underived, "derivation_lag_seconds": round(lag, 3)}


async def _workers(services: Services) -> dict[str, Any]:
    if services.settings.derivation_mode != "celery":
        return {"mode": "inprocess"}
    beats = await services.database["heartbeats"].find({}, sort=[("at", -1)], limit=20)
    fresh = [b for b in beats if time.time() - b["at"] < HEARTBEAT_STALE_SECONDS]
    if not fresh:
        raise RuntimeError("no worker heartbeat in the last minute")
    return {"mode": "celery", "workers": [b["name"] for b in fresh]}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready when the database (and Redis, when configured) answer and a worker is alive."""
    services: Services = request.app.state.services
    probes = [
        _check("database", _database(services)),
        _check("backlog", _backlog(services)),
        _check("workers", _workers(services)),
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


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    registry: Metrics = services.metrics
    # Metrics must render even when the database is struggling.
    with contextlib.suppress(Exception):
        backlog = await _backlog(services)
        registry.underived.set(backlog["underived"])
        registry.derivation_lag.set(backlog["derivation_lag_seconds"])
    registry.sse_clients.set(services.bus.subscriber_count)
    for refresh in getattr(request.app.state, "metric_refreshers", []):
        with contextlib.suppress(Exception):
            await refresh(services, registry)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
