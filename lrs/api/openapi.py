"""The OpenAPI description: shared parameters, schemas and responses, and the finishing pass
that makes `/openapi.json` say what the API really does.

Most routes parse their query by hand (xAPI rules: a repeated or unknown parameter is a 400),
so FastAPI cannot see their parameters. Each route declares them instead, with `operation()`,
whose result goes into the route decorator (`status_code`, `openapi_extra`): documentation
only, request handling is unchanged. `finish()` then replaces FastAPI's guessed responses with
the declared ones (no 422: the API answers 400), adds the HTTP Basic security scheme, and moves
the routes that read IRIs from the raw path (`/courses/{rest}`) to their documented template.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from lrs.api.middleware import SUPPORTED_VERSIONS

SECURITY_SCHEME = "basicAuth"
# The private key under which `operation()` hands its declarations to `finish()`.
_KEY = "x-lrs"

# Scopes that `all` does not include (lrs.auth).
_NOT_IN_ALL = frozenset({"admin"})

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what was wrong"}},
    "required": ["error"],
}

_ERROR_MEANINGS = {
    400: "Invalid request: a parameter, header or body breaks a rule (the message names it)",
    401: "No or invalid HTTP Basic credentials",
    403: "The credential lacks the scope this operation needs",
    404: "Not found",
    409: "Conflict with the current state",
    412: "A precondition (If-Match / If-None-Match) failed",
    413: "The request body exceeds LRS_MAX_BODY_BYTES",
    429: "Too many failed sign-ins for this key or address: retry after Retry-After seconds",
}

# Errors every authenticated operation can answer.
AUTH_ERRORS = (400, 401, 403)

STRING: dict[str, Any] = {"type": "string"}
BOOLEAN_TEXT: dict[str, Any] = {"type": "string", "enum": ["true", "false"], "default": "false"}
TIMESTAMP: dict[str, Any] = {"type": "string", "format": "date-time"}
UUID: dict[str, Any] = {"type": "string", "format": "uuid"}
IRI: dict[str, Any] = {"type": "string", "format": "iri"}

# --- schemas of bodies -----------------------------------------------------------------------

AGENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An xAPI Agent (or Group): objectType, name, and one inverse functional "
    "identifier: mbox, mbox_sha1sum, openid or account {homePage, name}",
    "properties": {
        "objectType": {"type": "string", "enum": ["Agent", "Group"]},
        "name": STRING,
        "mbox": {"type": "string", "example": "mailto:learner@example.com"},
        "mbox_sha1sum": STRING,
        "openid": STRING,
        "account": {
            "type": "object",
            "properties": {"homePage": STRING, "name": STRING},
            "required": ["homePage", "name"],
        },
    },
}

STATEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An xAPI Statement (xAPI Data 2.4). The LRS fills in id, timestamp, "
    "stored, authority and version when the client did not.",
    "properties": {
        "id": UUID,
        "actor": {"type": "object"},
        "verb": {"type": "object", "properties": {"id": IRI, "display": {"type": "object"}}},
        "object": {"type": "object"},
        "result": {"type": "object"},
        "context": {"type": "object"},
        "timestamp": TIMESTAMP,
        "stored": TIMESTAMP,
        "authority": {"type": "object"},
        "version": STRING,
        "attachments": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["actor", "verb", "object"],
}

STORED_STATEMENT_SCHEMA: dict[str, Any] = {
    **STATEMENT_SCHEMA,
    "required": ["id", "actor", "verb", "object", "stored"],
}

STATEMENT_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A page of statements; `more` is the relative URL of the next page, or "
    "empty when there is none",
    "properties": {
        "statements": {"type": "array", "items": STORED_STATEMENT_SCHEMA},
        "more": STRING,
    },
    "required": ["statements", "more"],
}

INDEX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": STRING,
        "description": STRING,
        "version": STRING,
        "links": {"type": "object", "additionalProperties": STRING},
    },
    "required": ["name", "version", "links"],
}

PROGRESS_RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A learner's progress in one module of one course",
    "properties": {
        "learner": {"type": "string", "description": "learner key, e.g. mbox:mailto:a@b.c"},
        "course": IRI,
        "module": IRI,
        "status": {
            "type": "string",
            "enum": ["not_started", "started", "in_progress", "completed"],
        },
        "percent": {"type": "number"},
        "discovered": {"type": "boolean"},
        "event_id": STRING,
    },
    "required": ["learner", "course", "module", "status"],
}

COURSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": IRI,
        "title": STRING,
        "profile": STRING,
        "source": STRING,
        "discovered": {"type": "boolean"},
        "modules": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": IRI,
                    "title": STRING,
                    "rule": STRING,
                    "profile": STRING,
                    "items": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["id", "title", "rule", "items"],
            },
        },
    },
    "required": ["id", "title", "profile", "modules"],
}


# --- building blocks -------------------------------------------------------------------------

# Schemas of the pydantic models request bodies are checked with, by name (components).
_MODELS: dict[str, dict[str, Any]] = {}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A reference to the JSON Schema of `model` (added to the components by `finish`): the
    documentation follows the model the handler validates the body with."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        _MODELS[name] = definition
    _MODELS[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def query(
    name: str,
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    required: bool = False,
    example: Any = None,
) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or STRING,
    }
    if example is not None:
        parameter["example"] = example
    return parameter


def json_query(
    name: str, description: str, schema: dict[str, Any], *, required: bool = False
) -> dict[str, Any]:
    """A query parameter whose value is a JSON document (xAPI's `agent`)."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or STRING,
    }


def header(
    name: str, description: str, schema: dict[str, Any] | None = None, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema or STRING,
    }


XAPI_VERSION = header(
    "X-Experience-API-Version",
    "The xAPI version of the request (every /xapi resource but /xapi/about requires it; "
    "responses carry the version they follow)",
    {"type": "string", "enum": [*SUPPORTED_VERSIONS, "1.0"], "default": "2.0.0"},
    required=True,
)

RESPONSE_VERSION_HEADER = {
    "X-Experience-API-Version": {
        "description": "The xAPI version this response follows",
        "schema": STRING,
    }
}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def json_body(schema: dict[str, Any], description: str = "", *, required: bool = True) -> dict:
    body: dict[str, Any] = {"required": required, "content": json_content(schema)}
    if description:
        body["description"] = description
    return body


def response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    media_type: str = "application/json",
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"description": description}
    if schema is not None:
        result["content"] = {media_type: {"schema": schema}}
    if headers:
        result["headers"] = headers
    return result


def error(status: int, description: str | None = None) -> dict[str, Any]:
    result = response(description or _ERROR_MEANINGS[status], ERROR_SCHEMA)
    if status == 401:
        result["headers"] = {
            "WWW-Authenticate": {"description": "Basic realm", "schema": STRING},
        }
    if status == 429:
        result["headers"] = {
            "Retry-After": {"description": "seconds", "schema": {"type": "integer"}},
        }
    return result


def accepted_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes that grant an operation: those named, plus `all` unless it is admin-only."""
    accepted = list(scopes)
    if any(scope not in _NOT_IN_ALL for scope in scopes) and "all" not in accepted:
        accepted.append("all")
    return accepted


def operation(
    *,
    scopes: Sequence[str] | None,
    ok: dict[str, Any] | None = None,
    status: int = 200,
    parameters: Iterable[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    errors: Iterable[int] = AUTH_ERRORS,
    responses: dict[int, dict[str, Any]] | None = None,
    xapi: bool = False,
    documented_path: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator that document the operation.

    `scopes`: the scopes any one of which grants the operation (None: no authentication).
    `ok`: the success response (`status`). `errors`: the error statuses it may answer, with
    their usual meaning; `responses`: further or more specific ones. `xapi`: an /xapi resource
    (the version header is required). `documented_path`: the template clients use when the
    route matches a raw path (IRIs URL-encoded in segments)."""
    extra: dict[str, Any] = {}
    declared: dict[str, Any] = {}
    all_parameters = list(parameters)
    if xapi:
        all_parameters.insert(0, XAPI_VERSION)
    if all_parameters:
        extra["parameters"] = all_parameters
    if body is not None:
        extra["requestBody"] = body
    codes: dict[str, Any] = {str(status): ok or response("Success")}
    for code in errors:
        codes[str(code)] = error(code)
    for code, value in (responses or {}).items():
        codes[str(code)] = value
    if scopes is not None:  # failed sign-ins are throttled (lrs.throttle)
        codes.setdefault("429", error(429))
    if xapi:
        for value in codes.values():
            value.setdefault("headers", {}).update(RESPONSE_VERSION_HEADER)
    declared["responses"] = dict(sorted(codes.items()))
    if scopes is None:
        extra["security"] = []
    else:
        accepted = accepted_scopes(scopes)
        extra["security"] = [{SECURITY_SCHEME: []}]
        extra["x-scopes"] = accepted
        note = f"Scopes: any one of `{'`, `'.join(accepted)}`."
        description = f"{description}\n\n{note}" if description else note
    if description:
        extra["description"] = description
    if documented_path:
        declared["path"] = documented_path
    extra[_KEY] = declared
    return {"status_code": status, "openapi_extra": extra}


# --- the finishing pass ----------------------------------------------------------------------


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply the declarations of `operation()` to FastAPI's generated schema (in place)."""
    paths: dict[str, dict[str, Any]] = {}
    for route_path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                paths.setdefault(route_path, {})[method] = op
                continue
            target = route_path
            declared = op.pop(_KEY, None)
            if declared is None:
                # Undeclared: at least never promise the 422 the API does not send.
                op["responses"].pop("422", None)
            else:
                op["responses"] = declared["responses"]
                target = declared.get("path") or route_path
            parameters: dict[tuple[str, str], dict[str, Any]] = {}
            for parameter in op.get("parameters", []):
                if parameter.get("in") == "path" and f"{{{parameter['name']}}}" not in target:
                    continue  # the route's raw-path parameter (`rest`), not the client's
                # A declared parameter (after FastAPI's own) replaces FastAPI's.
                parameters[parameter["name"], parameter["in"]] = parameter
            if parameters:
                op["parameters"] = list(parameters.values())
            paths.setdefault(target, {})[method] = op
    schema["paths"] = paths
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "basic",
        "description": "A credential's key and secret (`lrs credentials create`). Each "
        "credential belongs to one store (tenant) and has scopes; each operation names the "
        "scopes that grant it (`x-scopes`).",
    }
    schemas = components.setdefault("schemas", {})
    schemas.update(_MODELS)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if not schemas:
        components.pop("schemas", None)
    return schema


def install(app: FastAPI, description: str = "") -> None:
    """Serve the finished schema at the app's `openapi_url` (built once, on first request)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(
                title=app.title,
                version=app.version,
                description=description,
                routes=app.routes,
                tags=TAGS,
            )
            app.openapi_schema = finish(generated)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


TAGS = [
    {"name": "xapi", "description": "The xAPI resources (xAPI 1.0.3 and 2.0.0)"},
    {"name": "progress", "description": "Learner progress derived from statements, live"},
    {"name": "courses", "description": "The course catalogue progress is measured against"},
    {"name": "federation", "description": "Forwarding to and pulling from other LRSs"},
    {"name": "admin", "description": "Administration of the caller's store"},
    {"name": "operations", "description": "Health, readiness, metrics, index"},
]
