"""An xAPI HTTP client for the benchmarks: auth and version headers, strict status checks.

The client shares the machine's cores with the server it measures, so it must cost as little
as it can: on the single POST phase, httpx took about 0.9 ms of CPU per request (43% of a core
at 480 requests/s on a 2-core machine), aiohttp about 0.25 ms. The load therefore goes through
aiohttp; httpx stays for the few requests that are not load (start-up checks, the SSE stream).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from bench.server import BenchError, Server

# Named in the report's header (bench.suite), since figures depend on the client's cost.
LOAD_CLIENT = "aiohttp"


class TransportError(BenchError):
    """The request got no HTTP answer (connection refused or reset, timeout)."""


class Answer:
    """One HTTP answer, read whole: what the benchmarks look at."""

    __slots__ = ("status_code", "headers", "content", "method", "url")

    def __init__(
        self, status_code: int, headers: Mapping[str, str], content: bytes, method: str, url: str
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.method = method
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class XapiClient:
    """Keep-alive connections to one server (as many as concurrent requests), with the xAPI
    headers on every request. `path` may carry its own query string (a `more` link, which is
    sent as the server wrote it)."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], concurrency: int, timeout: float
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._concurrency = concurrency
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> XapiClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        if self._session is None:
            raise RuntimeError("XapiClient used outside `async with`")
        url = URL(self._base + path, encoded=True)
        if params:
            url = url.update_query(params)
        options: dict[str, Any] = {"headers": headers}
        if content is not None:
            options["data"] = content
        elif json is not None:
            options["json"] = json
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.request(method, url, **options) as response:
                body = await response.read()
                return Answer(response.status, response.headers, body, method, str(url))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    async def get(self, path: str, **options: Any) -> Answer:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> Answer:
        return await self.request("POST", path, **options)

    async def put(self, path: str, **options: Any) -> Answer:
        return await self.request("PUT", path, **options)


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def xapi_client(server: Server, concurrency: int, timeout: float = 120.0) -> XapiClient:
    """One pooled client: as many keep-alive connections as concurrent requests, so the
    figures measure the server and not connection set-up."""
    return XapiClient(
        server.base_url,
        {
            "Authorization": basic_auth(server.key, server.secret),
            "X-Experience-API-Version": "1.0.3",
        },
        concurrency,
        timeout,
    )


def check(response: Answer, what: str, expected: int = 200) -> Answer:
    """Abort the benchmark on any unexpected status, saying which request failed and why."""
    if response.status_code != expected:
        body = response.text[:600].replace("\n", " ")
        raise BenchError(
            f"{what}: {response.method} {response.url} answered {response.status_code} "
            f"(expected {expected}): {body}"
        )
    return response


def json_body(response: Answer, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise BenchError(f"{what}: the response is not JSON: {response.text[:300]!r}") from exc


class BacklogUnknown(BenchError):
    """GET /ready gave no figure for the derivation's backlog; the message says why (the
    embedded store's probe gives up after a couple of seconds while the store is busy)."""


@dataclass(frozen=True)
class Backlog:
    """What GET /ready says the derivation still owes."""

    underived: int  # statements stored but not derived yet
    lag_seconds: float  # age of the oldest of them, as /ready wrote it
    # Discovered modules that grew, whose learners' records still show the old item count
    # until summarized again (about a second later); 0 from servers before 2026-12-01.
    resummaries: int

    @property
    def owed(self) -> int:
        return self.underived + self.resummaries


async def derivation_backlog(client: XapiClient) -> Backlog:
    """The server's derivation backlog, from GET /ready (raises BacklogUnknown)."""
    try:
        response = await client.get("/ready", timeout=30.0)
        backlog = response.json()["checks"]["backlog"]
    except (TransportError, ValueError, KeyError, TypeError) as exc:
        raise BacklogUnknown(type(exc).__name__) from exc
    if not isinstance(backlog, dict):
        raise BacklogUnknown("no figure")
    if not backlog.get("ok", True):
        raise BacklogUnknown(str(backlog.get("error", "no figure")))
    underived = backlog.get("underived")
    resummaries = backlog.get("resummaries_owed", 0)
    if not isinstance(underived, int) or not isinstance(resummaries, int):
        raise BacklogUnknown("no figure")
    return Backlog(underived, backlog.get("derivation_lag_seconds", 0.0), resummaries)
