"""ASGI middleware for the xAPI surface: body size limit, the 1.0.3 alternate request syntax,
the X-Experience-API-Version check, the version header on every response,
X-Experience-API-Consistent-Through on every Statements resource response, and HEAD."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from lrs.api.paths import nonnegative_int

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SUPPORTED_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "2.0.0")
LATEST_1X = "1.0.3"
LATEST_2X = "2.0.0"
VERSION_HEADER = "X-Experience-API-Version"
CONSISTENT_THROUGH_HEADER = "X-Experience-API-Consistent-Through"
STATEMENTS_PATH = "/xapi/statements"
# A later patch of a version line this LRS implements (1.0.3 Communication 3.3.s3.b5: "MUST
# accept requests with a version header starting with 1.0."; 2.0.0 4.1.7 likewise for 2.0.x).
_LATER_PATCH = re.compile(r"(1\.0|2\.0)\.[0-9]{1,9}")

# Paths under /xapi that do not need the version header.
_VERSION_EXEMPT = ("/xapi/about",)
_ALTERNATE_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
# Form fields that become request headers in the alternate request syntax.
_ALTERNATE_HEADERS = {
    "authorization": "authorization",
    "x-experience-api-version": "x-experience-api-version",
    "content-type": "content-type",
    "content-length": "content-length",
    "if-match": "if-match",
    "if-none-match": "if-none-match",
}


def normalise_version(value: str | None) -> str | None:
    """The supported version a header value denotes, or None. "1.0" is treated as "1.0.0" and
    "2.0" as "2.0.0" (1.0.3 Communication 3.3.s3.b3, 2.0.0 4.1.7); a later patch of 1.0 or
    2.0 as the latest patch this LRS implements."""
    if value is None:
        return None
    value = value.strip()
    if value == "1.0":
        return "1.0.0"
    if value == "2.0":
        return LATEST_2X
    if value in SUPPORTED_VERSIONS:
        return value
    if _LATER_PATCH.fullmatch(value):
        return LATEST_2X if value.startswith("2.") else LATEST_1X
    return None


def response_version(request_version: str | None, default: str = LATEST_2X) -> str:
    """The version header of a response: the latest patch of the request's version line; for
    a request that named none (or none this LRS supports), of the configured default."""
    version = request_version or default
    return LATEST_2X if version.startswith("2.") else LATEST_1X


# Computes the X-Experience-API-Consistent-Through value (lrs.api.consistency).
ConsistentThrough = Callable[[], Awaitable[str]]
# Where a handler that already knows a truthful value leaves it (request state), so that the
# response does not cost another read of the store (lrs.api.consistency).
KNOWN_CONSISTENT_THROUGH = "known_consistent_through"


class XAPIMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        default_version: str = LATEST_2X,
        consistent_through: ConsistentThrough | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.default_version = normalise_version(default_version) or LATEST_2X
        self.consistent_through = consistent_through

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        original = scope
        state = scope.setdefault("state", {})
        version_holder: dict[str, str | None] = {
            "value": _header(scope, "x-experience-api-version")
        }
        is_statements = scope["path"] == STATEMENTS_PATH
        # Consistent-Through of a statement GET is taken before the query runs, so that it never
        # claims a statement stored while the query ran; other responses take it when sent.
        through: dict[str, str | None] = {"value": None}

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-experience-api-version", _CONSISTENT_THROUGH)
                ]
                version = response_version(
                    normalise_version(version_holder["value"]), self.default_version
                )
                headers.append((b"x-experience-api-version", version.encode()))
                if is_statements and self.consistent_through is not None:
                    # Communication 2.1.3.s2.b5: on all responses to Statements resource
                    # requests, whatever the status.
                    value = (
                        through["value"]
                        or state.get(KNOWN_CONSISTENT_THROUGH)
                        or await self.consistent_through()
                    )
                    headers.append((_CONSISTENT_THROUGH, value.encode()))
                message["headers"] = headers
            await send(message)

        declared = _header(scope, "content-length")
        if declared is not None:
            text = declared.strip()
            length = nonnegative_int(text)
            if length is None and not (text.isascii() and text.isdigit()):
                await _error(send_with_version, 400, "the Content-Length header is not a number")
                return
            if length is None or length > self.max_body_bytes:  # None: beyond 64 bits
                await _error(
                    send_with_version, 413, f"request body exceeds {self.max_body_bytes} bytes"
                )
                return
        body = b""
        if scope["method"] in ("POST", "PUT", "PATCH"):
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await _error(
                        send_with_version, 413, f"request body exceeds {self.max_body_bytes} bytes"
                    )
                    return
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)

        path: str = scope["path"]
        is_xapi = path.startswith("/xapi/")
        query = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        if is_xapi and scope["method"] == "POST" and "method" in query:
            try:
                scope, body = _rewrite_alternate(scope, query, body)
            except ValueError as exc:
                await _error(send_with_version, 400, str(exc))
                return
            version_holder["value"] = _header(scope, "x-experience-api-version")

        if is_statements and scope["method"] in ("GET", "HEAD") and self.consistent_through:
            through["value"] = await self.consistent_through()

        if is_xapi and scope["method"] != "OPTIONS" and not path.startswith(_VERSION_EXEMPT):
            raw = _header(scope, "x-experience-api-version")
            if raw is None:
                await _error(
                    send_with_version, 400, "the X-Experience-API-Version header is required"
                )
                return
            if normalise_version(raw) is None:
                await _error(
                    send_with_version,
                    400,
                    f"X-Experience-API-Version {raw!r} is not supported; "
                    f"supported: {', '.join(SUPPORTED_VERSIONS)}",
                )
                return
        state["xapi_version"] = normalise_version(version_holder["value"]) or self.default_version

        is_head = scope["method"] == "HEAD"
        if is_head:
            scope = dict(scope)
            scope["method"] = "GET"
            state["head"] = True

        async def final_send(message: Message) -> None:
            if is_head and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send_with_version(message)

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, final_send)
        finally:
            if scope is not original and "route" in scope:
                # HEAD and the alternate syntax run on a copy: metrics and logs read the
                # route from the scope they saw.
                original["route"] = scope["route"]


_CONSISTENT_THROUGH = CONSISTENT_THROUGH_HEADER.lower().encode()


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _rewrite_alternate(scope: Scope, query: dict[str, str], body: bytes) -> tuple[Scope, bytes]:
    """xAPI 1.0.3 Communication 1.3 "Alternate Request Syntax": a form POST that carries the real
    method in `method=`, the headers and parameters as form fields and the body as `content`."""
    method = query["method"].upper()
    if set(query) != {"method"}:
        raise ValueError("the alternate request syntax allows no query parameter but 'method'")
    if method not in _ALTERNATE_METHODS:
        raise ValueError(f"unsupported method {query['method']!r} in the alternate request syntax")
    content_type = (_header(scope, "content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ValueError(
            "the alternate request syntax needs Content-Type: application/x-www-form-urlencoded"
        )
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise ValueError("the form body is not UTF-8") from exc
    headers: dict[str, str] = {}
    params: list[tuple[str, str]] = []
    content = b""
    for name, value in form:
        lowered = name.lower()
        if lowered in _ALTERNATE_HEADERS:
            headers[_ALTERNATE_HEADERS[lowered]] = value
        elif name == "content":
            content = value.encode("utf-8")
        else:
            params.append((name, value))
    # 1.3.s3.b6-b8: these form fields are headers; a client that can set real headers (and
    # uses the syntax for a long query) sends Authorization and the version as ordinary
    # headers, which stay. The real Content-Type and Content-Length describe the form itself.
    kept = [
        (k, v)
        for k, v in scope.get("headers", [])
        if k.decode("latin-1").lower() not in ("content-type", "content-length", *headers)
    ]
    version = normalise_version(
        headers.get("x-experience-api-version") or _header(scope, "x-experience-api-version")
    )
    if version == "2.0.0":
        raise ValueError("xAPI 2.0 removed the alternate request syntax")
    if "content-type" not in headers and content:
        headers["content-type"] = "application/json"
    headers["content-length"] = str(len(content))
    kept += [(k.encode(), v.encode("latin-1", "replace")) for k, v in headers.items()]
    new_scope = dict(scope)
    new_scope["method"] = method
    new_scope["headers"] = kept
    new_scope["query_string"] = urlencode(params).encode()
    return new_scope, content
