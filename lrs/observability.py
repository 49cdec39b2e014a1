"""Structured JSON logs with a request id, and the Prometheus metrics the service exports."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Header names whose values never reach a log line.
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization"}
# Paths that carry a learner (an e-mail address, an account name): logged as their route
# template, never as sent.
_LEARNER_PATHS = {"/progress/learners/": "/progress/learners/{rest:path}"}


def loggable_path(scope: MutableMapping[str, Any]) -> str:
    """The request path as logs may show it: the raw path, except for paths that carry a
    learner, which show their route template."""
    path: str = scope.get("path", "")
    for prefix, template in _LEARNER_PATHS.items():
        if path.startswith(prefix):
            return template
    return path


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(logging.BASIC_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours, without the request id.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


class Metrics:
    """The service's metrics, in a registry of its own (one per app, so tests stay isolated)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lrs_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lrs_http_request_seconds",
            "HTTP request duration by route template",
            ["route"],
            registry=self.registry,
        )
        self.statements_stored = Counter(
            "lrs_statements_stored_total", "Statements newly stored", registry=self.registry
        )
        self.underived = Gauge(
            "lrs_derivation_backlog",
            "Statements stored but not yet derived",
            registry=self.registry,
        )
        self.derivation_lag = Gauge(
            "lrs_derivation_lag_seconds",
            "Age of the oldest statement not yet derived",
            registry=self.registry,
        )
        self.resummaries_owed = Gauge(
            "lrs_resummaries_owed",
            "Grown discovered modules whose records still show their old item count",
            registry=self.registry,
        )
        self.sse_clients = Gauge(
            "lrs_sse_clients", "Open progress streams in this process", registry=self.registry
        )
        self.forwarding_pending = Gauge(
            "lrs_forwarding_pending",
            "Deliveries waiting, per destination",
            ["destination"],
            registry=self.registry,
        )
        self.forwarding_lag = Gauge(
            "lrs_forwarding_lag_seconds",
            "Age of the oldest undelivered statement, per destination",
            ["destination"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "lrs_forwarding_dead_letters",
            "Dead letters, per destination",
            ["destination"],
            registry=self.registry,
        )


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
access_log = logging.getLogger("lrs.access")


class RequestContextMiddleware:
    """Gives every request an id (the client's X-Request-ID if sane, else a new one), echoes it,
    logs one access line, and counts the request for /metrics by route template."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: Callable[[], Sequence[Any]] = lambda: (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        # The app's routes (read when needed: routes added later count too), for labelling requests
        # that never reached the router: rejected by a middleware (413, a missing xAPI version
        # header), or passed on as a copy of the scope (HEAD, the alternate request syntax).
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id.set(rid)
        # Routing rewrites the scope (a mount moves its prefix into root_path): keep what the
        # route label is matched on.
        request_line = {
            "type": "http",
            "method": scope["method"],
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
        }
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope, request_line, self.routes)
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(elapsed)
            path = loggable_path(scope)
            access_log.info(
                "%s %s %s",
                scope["method"],
                path,
                status,
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": path,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                },
            )
            request_id.reset(token)


def route_template(scope: Scope, request_line: Scope, routes: Callable[[], Sequence[Any]]) -> str:
    """The template of the route that served (or would serve) the request: its path with
    placeholders, a mount's prefix (`/dashboard`), or `unmatched` for no route at all, so the
    label never carries a raw path (unbounded, and it may hold a learner's address)."""
    path = getattr(scope.get("route"), "path", None)
    if path is not None:
        return path or "/"
    from starlette.routing import Match

    partial = None
    for route in routes():
        match = route.matches(request_line)[0]
        if match is Match.FULL:
            return getattr(route, "path", None) or "/"
        if match is Match.PARTIAL and partial is None:
            partial = getattr(route, "path", None) or "/"
    return partial or "unmatched"


class Occasional:
    """Lets a recurring warning through at most once per `seconds`, the first one at once: an
    outage must not write a line per request or per retry (the task publisher, the live-event
    listener, the login throttle)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        """Whether to say it now (and, if so, the interval starts again)."""
        now = self._clock()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        """The trouble ended: the next warning goes through at once."""
        self._last = None
