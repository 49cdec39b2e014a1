"""An xAPI HTTP client for the benchmarks: auth and version headers, strict status checks."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from bench.server import BenchError, Server


def xapi_client(server: Server, concurrency: int, timeout: float = 120.0) -> httpx.AsyncClient:
    """One pooled client: as many keep-alive connections as concurrent requests, so the
    figures measure the server and not connection set-up."""
    token = base64.b64encode(f"{server.key}:{server.secret}".encode()).decode()
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={
            "Authorization": f"Basic {token}",
            "X-Experience-API-Version": "1.0.3",
        },
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=httpx.Timeout(timeout),
    )


def check(response: httpx.Response, what: str, expected: int = 200) -> httpx.Response:
    """Abort the benchmark on any unexpected status, saying which request failed and why."""
    if response.status_code != expected:
        body = response.text[:600].replace("\n", " ")
        request = response.request
        raise BenchError(
            f"{what}: {request.method} {request.url} answered {response.status_code} "
            f"(expected {expected}): {body}"
        )
    return response


def json_body(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise BenchError(f"{what}: the response is not JSON: {response.text[:300]!r}") from exc
