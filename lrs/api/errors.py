"""Errors as the xAPI clients expect them: a status, a JSON body naming the problem, and the
xAPI headers (added by the version middleware); and the boundary that turns an exception no
handler caught into a 500 answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lrs.observability import loggable_path

log = logging.getLogger("lrs")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Send], Awaitable[None]]


class XAPIError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> XAPIError:
    return XAPIError(400, message)


def not_found(message: str = "not found") -> XAPIError:
    return XAPIError(404, message)


class ErrorBoundary:
    """ASGI middleware: an exception that escapes the application is answered with a 500 and
    not raised further. (Starlette's own last-resort handler answers and then re-raises, and
    uvicorn closes a keep-alive connection on an exception from the app, so every client of a
    failed request would also lose its connection.) When the response had already started
    (a stream that failed half way) nothing more can be said: the exception goes on, and the
    server closes the connection so that the client never takes a cut body for a whole one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), loggable_path(scope))
            body = json.dumps({"error": "internal error"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
