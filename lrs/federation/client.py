"""An xAPI client for other LRSs: any conformant one, and other instances of this one.

It sends X-Experience-API-Version on every request, learns the versions a peer speaks from its
/about resource, authenticates with HTTP Basic, adds the operator's extra headers, and reads
X-Experience-API-Consistent-Through and Retry-After from the answers.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from lrs.api.middleware import SUPPORTED_VERSIONS
from lrs.xapi.attachments import (
    AttachmentError,
    AttachmentPart,
    build_multipart_mixed,
    iter_attachments,
    media_type,
    parse_multipart_mixed,
)

USER_AGENT = "lrs-federation/1"
_ABOUT_TTL = 300.0  # seconds a peer's /about answer is trusted
_TEXT_LIMIT = 2000  # characters of a peer's answer kept for error reports
_about_cache: dict[str, tuple[float, tuple[str, ...]]] = {}


class PeerError(Exception):
    """The peer could not be reached or gave an answer this client cannot use. Transient: the
    work is retried later. `status` and `retry_after` come from the peer's answer, if any."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class PeerRefused(PeerError):
    """The peer refused for good: a 4xx to the /about probe other than 404 (an older LRS
    without /about), 408 and 429, such as 401 or 403. The same request cannot succeed until an
    operator changes something, so retrying only delays the dead letter."""


@dataclass(frozen=True)
class PeerConfig:
    endpoint: str  # the xAPI base, e.g. https://lrs.example.com/xapi/
    username: str | None = None
    password: str | None = None
    version: str = "auto"  # "auto" (negotiated through /about) or one xAPI version
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0


@dataclass
class PeerAnswer:
    status: int
    text: str
    headers: httpx.Headers
    parts: list[AttachmentPart] = field(default_factory=list)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """Worth retrying: the peer is overloaded, failing or asks to come back later."""
        return self.status >= 500 or self.status in (408, 429)

    @property
    def consistent_through(self) -> str | None:
        return self.headers.get("x-experience-api-consistent-through")

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))

    def describe(self) -> str:
        text = self.text.strip().replace("\n", " ")
        return f"HTTP {self.status}" + (f": {text}" if text else "")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def parts_for(
    statements: list[dict[str, Any]], by_sha2: dict[str, AttachmentPart]
) -> list[AttachmentPart]:
    """The attachment parts these statements reference: a peer rejects a part that no
    statement of the request declares."""
    if not by_sha2:
        return []
    wanted: dict[str, AttachmentPart] = {}
    try:
        for _, attachment in iter_attachments(statements):
            sha2 = attachment.get("sha2")
            if isinstance(sha2, str) and sha2.lower() in by_sha2:
                wanted[sha2.lower()] = by_sha2[sha2.lower()]
    except AttachmentError:
        return []
    return list(wanted.values())


def normalise_endpoint(endpoint: str) -> str:
    return endpoint if endpoint.endswith("/") else endpoint + "/"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a port number: nothing to compare with
        port = -1
    return scheme, (parts.hostname or ""), port or {"http": 80, "https": 443}.get(scheme)


def _version_order(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def is_2x(version: str | None) -> bool:
    return isinstance(version, str) and version.startswith("2.")


class PeerClient:
    """One peer; use as an async context manager so connections are reused and closed."""

    def __init__(self, config: PeerConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.endpoint = normalise_endpoint(config.endpoint)
        auth = (
            httpx.BasicAuth(config.username, config.password or "")
            if config.username is not None
            else None
        )
        self._http = httpx.AsyncClient(
            auth=auth,
            headers={"User-Agent": USER_AGENT, **config.headers},
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 5.0)),
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # --- versions ----------------------------------------------------------------------------

    async def peer_versions(self) -> tuple[str, ...]:
        """The versions both sides speak, newest first (from the peer's /about)."""
        cached = _about_cache.get(self.endpoint)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        answer = await self._request("GET", self.endpoint + "about", version="1.0.3")
        if answer.status == 404:
            # Not conformant, but common among older LRSs: assume the 1.0.3 baseline.
            versions: tuple[str, ...] = ("1.0.3",)
        elif 400 <= answer.status < 500 and not answer.transient:
            # Refused credentials (401/403) and the like: what a PUT with these credentials
            # gets would be refused as well, so this is the peer's final answer.
            raise PeerRefused(f"GET about: {answer.describe()}", answer.status)
        elif not answer.ok:
            raise PeerError(f"GET about: {answer.describe()}", answer.status, answer.retry_after)
        else:
            try:
                listed = json.loads(answer.body)["version"]
                assert isinstance(listed, list)
            except (ValueError, KeyError, TypeError, AssertionError) as exc:
                raise PeerError("GET about: the answer has no version list") from exc
            ours = set(SUPPORTED_VERSIONS)
            named = {"1.0.0" if v == "1.0" else v for v in listed if isinstance(v, str)}
            versions = tuple(sorted(named & ours, key=_version_order, reverse=True))
            if not versions:
                raise PeerError(f"the peer speaks none of our xAPI versions (it lists {listed})")
        _about_cache[self.endpoint] = (time.monotonic() + _ABOUT_TTL, versions)
        return versions

    async def version_for(self, statement_version: str | None = None) -> str:
        """The X-Experience-API-Version to send: the configured one, or for "auto" the peer's
        newest version of the statement's family (2.0 statements need a 2.0 request)."""
        versions = await self.peer_versions()
        if self.config.version != "auto":
            if self.config.version not in versions:
                raise PeerError(
                    f"the peer does not speak xAPI {self.config.version} (it speaks "
                    f"{', '.join(versions)})"
                )
            return self.config.version
        ones = [v for v in versions if not is_2x(v)]
        twos = [v for v in versions if is_2x(v)]
        if statement_version is None:  # reading: the newest the peer speaks
            return versions[0]
        preferred = twos if is_2x(statement_version) else ones
        return (preferred or versions)[0]

    # --- statements --------------------------------------------------------------------------

    @property
    def statements_url(self) -> str:
        return self.endpoint + "statements"

    async def put_statement(
        self, statement: dict[str, Any], parts: list[AttachmentPart], version: str
    ) -> PeerAnswer:
        return await self._send(
            "PUT", statement, parts, version, params={"statementId": statement["id"]}
        )

    async def post_statements(
        self, statements: list[dict[str, Any]], parts: list[AttachmentPart], version: str
    ) -> PeerAnswer:
        return await self._send("POST", statements, parts, version)

    async def get_statement(self, statement_id: str, version: str) -> PeerAnswer:
        return await self._request(
            "GET", self.statements_url, version=version, params={"statementId": statement_id}
        )

    async def get_statements(
        self, version: str, params: dict[str, str] | None = None, more: str | None = None
    ) -> tuple[PeerAnswer, dict[str, Any] | None]:
        """One page: the first (with `params`) or the one a `more` link names. Returns the
        answer and, when it is a 2xx, the StatementResult (attachment parts in answer.parts)."""
        url = self._more_url(more) if more else self.statements_url
        answer = await self._request("GET", url, version=version, params=None if more else params)
        if not answer.ok:
            return answer, None
        raw = answer.body
        content_type = answer.headers.get("content-type", "")
        try:
            if media_type(content_type) == "multipart/mixed":
                raw, answer.parts = parse_multipart_mixed(raw, content_type)
            result = json.loads(raw)
        except (AttachmentError, ValueError) as exc:
            raise PeerError(f"GET statements: unreadable answer ({exc})") from exc
        if not isinstance(result, dict) or not isinstance(result.get("statements"), list):
            raise PeerError("GET statements: the answer is not a StatementResult")
        return answer, result

    def _more_url(self, more: str) -> str:
        """A `more` link resolved against the endpoint. xAPI makes it a path on the same LRS
        (no scheme, host or port): one that leads to another origin is refused, since the
        request would carry this peer's credentials there."""
        url = urljoin(self.endpoint, more)
        if _origin(url) != _origin(self.endpoint):
            raise PeerError(f"GET statements: the more link {more!r} leads to another origin")
        return url

    async def _send(
        self,
        method: str,
        payload: Any,
        parts: list[AttachmentPart],
        version: str,
        params: dict[str, str] | None = None,
    ) -> PeerAnswer:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        content_type = "application/json"
        if parts:
            body, content_type = build_multipart_mixed(body, parts)
        return await self._request(
            method,
            self.statements_url,
            version=version,
            params=params,
            content=body,
            headers={"Content-Type": content_type},
        )

    async def _request(
        self,
        method: str,
        url: str,
        *,
        version: str,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> PeerAnswer:
        try:
            response = await self._http.request(
                method,
                url,
                params=params,
                content=content,
                headers={"X-Experience-API-Version": version, **(headers or {})},
            )
        except httpx.HTTPError as exc:  # connection refused, reset, timeouts, bad URLs
            raise PeerError(f"{method} {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        body = response.content
        return PeerAnswer(
            status=response.status_code,
            text=body[:_TEXT_LIMIT].decode("utf-8", "replace"),
            headers=response.headers,
            body=body,
        )
