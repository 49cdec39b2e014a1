"""Federation administration (scope `admin`, per store): destinations statements are forwarded
to, their dead letters and lag; sources statements are pulled from.

Peer passwords and extra header values are write-only: stored encrypted, never returned.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lrs.api import openapi
from lrs.api.errors import XAPIError, bad_request, not_found
from lrs.api.middleware import SUPPORTED_VERSIONS
from lrs.api.paths import decode_cursor, encode_cursor, int_param, parse_json_body
from lrs.auth import current_credential, require_scope
from lrs.federation.client import normalise_endpoint
from lrs.federation.filters import StatementFilter
from lrs.federation.peers import encrypt_peer_fields, public_peer_fields
from lrs.federation.pulling import iso
from lrs.federation.service import Federation
from lrs.storage.credentials import Credential
from lrs.storage.federation import now_micros
from lrs.xapi.timestamps import TimestampError, parse_timestamp, to_micros
from lrs.xapi.validation import is_iri, is_uuid

router = APIRouter()
log = logging.getLogger("lrs.federation")

_VERSIONS = ("auto", *SUPPORTED_VERSIONS)
# Headers the client sets itself; an operator's extra header may not replace them.
_RESERVED_HEADERS = frozenset(
    {"authorization", "content-type", "content-length", "host", "x-experience-api-version"}
)
# GET /statements parameters a source may pass through; since/ascending/cursor/attachments
# belong to the poller.
_SOURCE_PARAMS = frozenset(
    {"agent", "verb", "activity", "registration", "related_activities", "related_agents", "limit"}
)


# --- request bodies ---------------------------------------------------------------------------


class FilterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verbs: list[str] = Field(default_factory=list, max_length=200)
    activities: list[str] = Field(default_factory=list, max_length=1000)
    activity_prefixes: list[str] = Field(default_factory=list, max_length=200)
    related_activities: bool = False
    registration: str | None = None

    @field_validator("verbs", "activities")
    @classmethod
    def _iris(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_iri(value):
                raise ValueError(f"{value!r} is not an IRI")
        return values

    @field_validator("activity_prefixes")
    @classmethod
    def _prefixes(cls, values: list[str]) -> list[str]:
        if any(not value for value in values):
            raise ValueError("a prefix cannot be empty")
        return values

    @field_validator("registration")
    @classmethod
    def _registration(cls, value: str | None) -> str | None:
        if value is not None and not is_uuid(value):
            raise ValueError(f"{value!r} is not a UUID")
        return value


class PeerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    endpoint: str = ""
    username: str | None = Field(default=None, max_length=1000)
    password: str | None = Field(default=None, max_length=1000)
    version: str = "auto"
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    enabled: bool = True

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL, e.g. https://lrs.example.com/xapi/")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        if parts.username is not None or parts.password is not None:
            # The endpoint is stored, shown and logged in clear; credentials are not.
            raise ValueError("must not carry credentials: give username and password instead")
        return normalise_endpoint(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in _VERSIONS:
            raise ValueError(f"must be one of {', '.join(_VERSIONS)}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"the header {name} is set by the LRS itself")
            if "\r" in value or "\n" in value:
                raise ValueError(f"the value of {name} contains a line break")
            if not all(" " <= c <= "~" or c == "\t" for c in value):
                # HTTP clients send header values as ASCII: another character could never be
                # sent, and every delivery would fail before reaching the peer.
                raise ValueError(f"the value of {name} must be printable ASCII")
        return headers


class DestinationIn(PeerIn):
    filter: FilterIn = Field(default_factory=FilterIn)
    forward_voiding: bool = True
    batch_size: int | None = Field(default=None, ge=1, le=1000)


class SourceIn(PeerIn):
    params: dict[str, Any] = Field(default_factory=dict)
    poll_interval: float = Field(default=60.0, ge=0.05, le=7 * 24 * 3600)
    since: str | None = None  # where the first poll starts (default: the beginning)

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - _SOURCE_PARAMS
        if unknown:
            raise ValueError(
                f"unsupported parameter(s) {', '.join(sorted(unknown))}; allowed: "
                f"{', '.join(sorted(_SOURCE_PARAMS))}"
            )
        return params

    @field_validator("since")
    @classmethod
    def _since(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_timestamp(value)
            except TimestampError as exc:
                raise ValueError(str(exc)) from exc
        return value


def _parse(model: type[PeerIn], raw: bytes, *, creating: bool) -> tuple[Any, set[str]]:
    # Stored as BSON: integers must fit 64 bits.
    data = parse_json_body(raw or b"{}", "the request body", int64=True)
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise bad_request(f"{where}: {error['msg']}" if where else error["msg"]) from exc
    if creating and not body.endpoint:
        raise bad_request("endpoint is required")
    return body, set(body.model_fields_set)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- helpers ----------------------------------------------------------------------------------


def _federation(request: Request) -> Federation:
    return request.app.state.services.federation


async def _admin(credential: Credential = Depends(current_credential)) -> Credential:
    require_scope(credential, "admin")
    return credential


def _error_json(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {
        "message": error.get("message"),
        "status": error.get("status"),
        "at": iso(error.get("at_key")),
    }


def _limit(request: Request, default: int = 100, most: int = 1000) -> int:
    return int_param(
        request.query_params.get("limit", str(default)), "limit", minimum=1, maximum=most
    )


# --- what the routes take and answer (OpenAPI) -----------------------------------------------

_TIME = {"type": ["string", "null"], "format": "date-time"}
_ERROR_INFO = {
    "type": ["object", "null"],
    "properties": {"message": {}, "status": {}, "at": _TIME},
}
_PEER = {
    "id": openapi.STRING,
    "name": openapi.STRING,
    "endpoint": openapi.STRING,
    "username": {"type": ["string", "null"]},
    "version": openapi.STRING,
    "enabled": {"type": "boolean"},
    "created": _TIME,
    "updated": _TIME,
}
_DESTINATION = {
    "type": "object",
    "description": "A destination (its password and header values are never shown)",
    "properties": {
        **_PEER,
        "filter": {"type": "object"},
        "forward_voiding": {"type": "boolean"},
        "batch_size": {"type": ["integer", "null"]},
        "lag": {
            "type": "object",
            "properties": {
                "pending": {"type": "integer"},
                "oldest_pending_stored": _TIME,
                "dead": {"type": "integer"},
                "dead_letters_total": {"type": "integer"},
                "delivered": {"type": "integer"},
                "retries": {"type": "integer"},
                "last_success": _TIME,
                "last_error": _ERROR_INFO,
                "next_attempt": _TIME,
            },
        },
    },
    "required": ["id", "endpoint", "enabled", "filter", "lag"],
}
_SOURCE = {
    "type": "object",
    "description": "A source (its password and header values are never shown)",
    "properties": {
        **_PEER,
        "params": {"type": "object"},
        "poll_interval": {"type": ["number", "null"]},
        "checkpoint": _TIME,
        "next_poll": _TIME,
        "last_poll": _TIME,
        "last_success": _TIME,
        "last_error": _ERROR_INFO,
        "pulled": {"type": "integer"},
        "rejected": {"type": "integer"},
        "pages": {"type": "integer"},
    },
    "required": ["id", "endpoint", "enabled", "params"],
}
_DESTINATION_ID = openapi.path("destination_id", "The destination's id")
_SOURCE_ID = openapi.path("source_id", "The source's id")
_NO_DESTINATION = {404: openapi.error(404, "No such destination in the caller's store")}
_NO_SOURCE = {404: openapi.error(404, "No such source in the caller's store")}
_LIMIT = openapi.query(
    "limit", "Entries per page (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000}
)


def _doc(
    ok: dict[str, Any],
    *,
    status: int = 200,
    parameters: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    responses: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Decorator arguments documenting one federation route (scope `admin`)."""
    return {
        "tags": ["federation"],
        **openapi.operation(
            scopes=["admin"],
            status=status,
            ok=ok,
            parameters=parameters or [],
            body=openapi.json_body(openapi.model_schema(body)) if body else None,
            errors=(400, 401, 403, 413) if body else (400, 401, 403),
            responses=responses,
        ),
    }


def _one(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return openapi.response(description, schema)


def _listing(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return openapi.response(
        f"The {name}",
        {
            "type": "object",
            "properties": {name: {"type": "array", "items": schema}},
            "required": [name],
        },
    )


_REPLAYED = openapi.response(
    "How many dead letters were queued again",
    {"type": "object", "properties": {"replayed": {"type": "integer"}}, "required": ["replayed"]},
)


# --- destinations -----------------------------------------------------------------------------


async def _destination_json(federation: Federation, doc: dict[str, Any]) -> dict[str, Any]:
    lag = await federation.forwarder.lag(doc)
    return {
        "id": doc["_id"],
        "name": doc.get("name", ""),
        **public_peer_fields(doc),
        "filter": StatementFilter.from_doc(doc.get("filter")).to_doc(),
        "forward_voiding": doc.get("forward_voiding", True),
        "batch_size": doc.get("batch_size"),
        "enabled": doc.get("enabled", True),
        "created": iso(doc.get("created_key")),
        "updated": iso(doc.get("updated_key")),
        "lag": {
            "pending": lag["pending"],
            "oldest_pending_stored": iso(lag["oldest_pending_key"]),
            "dead": lag["dead"],
            "dead_letters_total": lag["dead_letters_total"],
            "delivered": lag["delivered"],
            "retries": lag["retries"],
            "last_success": iso(lag["last_success_key"]),
            "last_error": _error_json(lag["last_error"]),
            "next_attempt": iso(lag["hold_until_key"]) if lag["pending"] else None,
        },
    }


async def _destination(request: Request, credential: Credential, destination_id: str) -> dict:
    doc = await _federation(request).destinations.get(credential.store, destination_id)
    if doc is None:
        raise not_found(f"no destination {destination_id}")
    return doc


async def _destination_fields(
    federation: Federation, body: DestinationIn, given: set[str]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("name", "endpoint", "username", "version", "forward_voiding", "batch_size"):
        if name in given:
            fields[name] = getattr(body, name)
    if "enabled" in given:
        fields["enabled"] = body.enabled
    if "filter" in given:
        fields["filter"] = StatementFilter(
            verbs=tuple(body.filter.verbs),
            activities=tuple(body.filter.activities),
            activity_prefixes=tuple(body.filter.activity_prefixes),
            related_activities=body.filter.related_activities,
            registration=body.filter.registration,
        ).to_doc()
    fields.update(await _peer_secrets(federation, body, given))
    return fields


async def _peer_secrets(federation: Federation, body: PeerIn, given: set[str]) -> dict[str, Any]:
    """The encrypted password and header values a create or PATCH body carries (None: kept)."""
    return encrypt_peer_fields(
        await federation.keys.box(),
        body.password if "password" in given else None,
        body.headers if "headers" in given else None,
    )


@router.post(
    "/admin/destinations",
    summary="Add a destination: forward the statements stored from now on",
    **_doc(_one(_DESTINATION, "The destination"), status=201, body=DestinationIn),
)
async def create_destination(
    request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Every statement stored from now on that matches the filter is forwarded: every one whose
    `stored` is not before the destination's `created`."""
    federation = _federation(request)
    body, given = _parse(DestinationIn, await request.body(), creating=True)
    now = now_micros()
    doc: dict[str, Any] = {
        "_id": uuid.uuid4().hex,
        "store": credential.store,
        "name": "",
        "username": None,
        "version": "auto",
        "filter": StatementFilter().to_doc(),
        "forward_voiding": True,
        "batch_size": None,
        "enabled": True,
        "password": None,
        "headers": None,
        "header_names": [],
        **await _destination_fields(federation, body, given | {"endpoint"}),
        "created_key": now,
        "updated_key": now,
        "lease_until": 0,
        "lease_owner": None,
        "hold_until": 0,
        "delivered": 0,
        "retries": 0,
        "dead_total": 0,
        "last_success_key": None,
        "last_error": None,
        # Until the statements stored while it was being saved are queued (catch_up).
        "caught_up": False,
    }
    await federation.destinations.create(doc)
    try:
        queued = await federation.forwarder.catch_up(doc)
    except Exception:  # still marked: the sweep catches up
        log.exception("catching up destination %s failed; the sweep will", doc["_id"])
        queued = False
    if queued and doc["enabled"]:
        await federation.driver.wake_destination(doc["_id"])
    return JSONResponse(await _destination_json(federation, doc), status_code=201)


@router.get(
    "/admin/destinations",
    summary="Every destination of the store, with its lag",
    **_doc(_listing("destinations", _DESTINATION)),
)
async def list_destinations(
    request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    federation = _federation(request)
    docs = await federation.destinations.list(credential.store)
    return JSONResponse({"destinations": [await _destination_json(federation, d) for d in docs]})


@router.get(
    "/admin/destinations/{destination_id}",
    summary="One destination, with its lag",
    **_doc(
        _one(_DESTINATION, "The destination"),
        parameters=[_DESTINATION_ID],
        responses=_NO_DESTINATION,
    ),
)
async def get_destination(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    doc = await _destination(request, credential, destination_id)
    return JSONResponse(await _destination_json(_federation(request), doc))


@router.patch(
    "/admin/destinations/{destination_id}",
    summary="Change some fields of a destination",
    **_doc(
        _one(_DESTINATION, "The destination"),
        parameters=[_DESTINATION_ID],
        body=DestinationIn,
        responses=_NO_DESTINATION,
    ),
)
async def update_destination(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Change some fields; a new filter applies to statements stored from then on. Enabling
    it, or changing how the peer is reached, retries what waits at once (held statements
    first)."""
    federation = _federation(request)
    await _destination(request, credential, destination_id)
    body, given = _parse(DestinationIn, await request.body(), creating=False)
    fields = await _destination_fields(federation, body, given)
    fields["updated_key"] = now_micros()
    doc = await federation.destinations.update(credential.store, destination_id, fields)
    if doc is None:
        raise not_found(f"no destination {destination_id}")
    if doc.get("enabled") and given & _RETRY_FIELDS:
        await federation.forwarder.retry_now(destination_id)
        doc = await _destination(request, credential, destination_id)
    if doc.get("enabled"):
        await federation.driver.wake_destination(destination_id)
    return JSONResponse(await _destination_json(federation, doc))


# Changing one of these is a reason to try again at once.
_RETRY_FIELDS = frozenset({"enabled", "endpoint", "username", "password", "version", "headers"})


async def _set_enabled(
    request: Request, credential: Credential, destination_id: str, enabled: bool
) -> JSONResponse:
    federation = _federation(request)
    fields: dict[str, Any] = {"enabled": enabled, "updated_key": now_micros()}
    doc = await federation.destinations.update(credential.store, destination_id, fields)
    if doc is None:
        raise not_found(f"no destination {destination_id}")
    if enabled:  # try at once, the held statements first
        await federation.forwarder.retry_now(destination_id)
        doc = await _destination(request, credential, destination_id)
        await federation.driver.wake_destination(destination_id)
    return JSONResponse(await _destination_json(federation, doc))


@router.post(
    "/admin/destinations/{destination_id}/disable",
    summary="Stop sending (statements still queue)",
    **_doc(
        _one(_DESTINATION, "The destination"),
        parameters=[_DESTINATION_ID],
        responses=_NO_DESTINATION,
    ),
)
async def disable_destination(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Stop sending. Statements stored meanwhile still queue, and go out once enabled again."""
    return await _set_enabled(request, credential, destination_id, False)


@router.post(
    "/admin/destinations/{destination_id}/enable",
    summary="Send again, what waits first",
    **_doc(
        _one(_DESTINATION, "The destination"),
        parameters=[_DESTINATION_ID],
        responses=_NO_DESTINATION,
    ),
)
async def enable_destination(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    return await _set_enabled(request, credential, destination_id, True)


@router.delete(
    "/admin/destinations/{destination_id}",
    summary="Delete a destination, its pending deliveries and dead letters",
    **_doc(
        openapi.response("Deleted"),
        status=204,
        parameters=[_DESTINATION_ID],
        responses=_NO_DESTINATION,
    ),
)
async def delete_destination(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> Response:
    """Delete a destination with its pending deliveries and dead letters: what was not
    delivered yet is not delivered (a fan-out or delivery under way drops its rows when it
    finds the destination gone). To keep the queue, disable the destination instead."""
    federation = _federation(request)
    if not await federation.destinations.delete(credential.store, destination_id):
        raise not_found(f"no destination {destination_id}")
    await federation.deliveries.drop_destination(destination_id)
    return Response(status_code=204)


def _encode_cursor(key: int, statement: str) -> str:
    return encode_cursor([key, statement])


def _decode_cursor(token: str) -> tuple[int, str]:
    key, statement = decode_cursor(token, (int, str))
    return key, statement


@router.get(
    "/admin/destinations/{destination_id}/dead-letters",
    summary="Statements that will not be retried until replayed",
    **_doc(
        openapi.response(
            "Oldest first, with the peer's answer; `more` is the next page's URL",
            {
                "type": "object",
                "properties": {
                    "dead_letters": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "statement": openapi.STRING,
                                "stored": _TIME,
                                "attempts": {"type": ["integer", "null"]},
                                "error": _ERROR_INFO,
                                "dead_at": _TIME,
                            },
                            "required": ["statement"],
                        },
                    },
                    "more": openapi.STRING,
                },
                "required": ["dead_letters", "more"],
            },
        ),
        parameters=[
            _DESTINATION_ID,
            _LIMIT,
            openapi.query("cursor", "The position of a page; part of the `more` link"),
        ],
        responses=_NO_DESTINATION,
    ),
)
async def list_dead_letters(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Statements that will not be retried until replayed, oldest `stored` first, with the
    peer's answer; paged with `more`."""
    await _destination(request, credential, destination_id)
    limit = _limit(request)
    cursor = request.query_params.get("cursor")
    after = _decode_cursor(cursor) if cursor else None
    docs = await _federation(request).deliveries.dead_letters(destination_id, limit + 1, after)
    more = ""
    if len(docs) > limit:
        docs = docs[:limit]
        last = docs[-1]
        token = _encode_cursor(last.get("stored_key", 0), last["statement"])
        more = f"/admin/destinations/{destination_id}/dead-letters?limit={limit}&cursor={token}"
    letters = [
        {
            "statement": doc["statement"],
            "stored": iso(doc.get("stored_key") or None),
            "attempts": doc.get("attempts"),
            "error": _error_json(doc.get("error")),
            "dead_at": iso(doc.get("dead_key")),
        }
        for doc in docs
    ]
    return JSONResponse({"dead_letters": letters, "more": more})


@router.post(
    "/admin/destinations/{destination_id}/dead-letters/replay",
    summary="Queue every dead letter again",
    **_doc(_REPLAYED, parameters=[_DESTINATION_ID], responses=_NO_DESTINATION),
)
async def replay_all(
    destination_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    federation = _federation(request)
    doc = await _destination(request, credential, destination_id)
    replayed = await federation.forwarder.replay(doc)
    await federation.driver.wake_destination(destination_id)
    return JSONResponse({"replayed": replayed})


@router.post(
    "/admin/destinations/{destination_id}/dead-letters/{statement_id}/replay",
    summary="Queue one dead letter again",
    **_doc(
        _REPLAYED,
        parameters=[_DESTINATION_ID, openapi.path("statement_id", "The statement's id")],
        responses={404: openapi.error(404, "No such destination, or no such dead letter")},
    ),
)
async def replay_one(
    destination_id: str,
    statement_id: str,
    request: Request,
    credential: Credential = Depends(_admin),
) -> JSONResponse:
    federation = _federation(request)
    doc = await _destination(request, credential, destination_id)
    replayed = await federation.forwarder.replay(doc, statement_id.lower())
    if not replayed:
        raise not_found(f"no dead letter for statement {statement_id}")
    await federation.driver.wake_destination(destination_id)
    return JSONResponse({"replayed": replayed})


# --- sources ----------------------------------------------------------------------------------


def _source_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "name": doc.get("name", ""),
        **public_peer_fields(doc),
        "params": doc.get("params") or {},
        "poll_interval": doc.get("poll_interval"),
        "enabled": doc.get("enabled", True),
        "created": iso(doc.get("created_key")),
        "updated": iso(doc.get("updated_key")),
        "checkpoint": iso(doc.get("checkpoint_key")),
        "consistent_through": doc.get("consistent_through"),
        "next_poll": iso(doc.get("next_poll_key")) if doc.get("enabled", True) else None,
        "last_poll": iso(doc.get("last_poll_key")),
        "last_success": iso(doc.get("last_success_key")),
        "last_error": _error_json(doc.get("last_error")),
        "last_fetched": doc.get("last_fetched"),
        "last_stored": doc.get("last_stored"),
        "pulled": doc.get("pulled", 0),
        "rejected": doc.get("rejected", 0),
        "pages": doc.get("pages", 0),
    }


# Changing one of these changes what the checkpoint refers to: a poll under way must not move
# it any more (lrs.federation.pulling).
_CHECKPOINT_FIELDS = frozenset({"since", "params", "endpoint", "username"})
# Changing one of these (or enabling) is a reason to poll at once, like POST .../poll.
_POLL_NOW_FIELDS = _CHECKPOINT_FIELDS | {"password", "version", "headers"}


async def _source_fields(federation: Federation, body: SourceIn, given: set[str]) -> dict:
    fields: dict[str, Any] = {}
    for name in ("name", "endpoint", "username", "version", "poll_interval", "enabled"):
        if name in given:
            fields[name] = getattr(body, name)
    if "params" in given:
        fields["params"] = {k: _query_value(v) for k, v in body.params.items()}
    if "since" in given:
        fields["checkpoint_key"] = (
            to_micros(parse_timestamp(body.since)) if body.since is not None else None
        )
        fields["checkpoint_complete"] = True  # `since` is exclusive, as in xAPI
    fields.update(await _peer_secrets(federation, body, given))
    return fields


async def _source(request: Request, credential: Credential, source_id: str) -> dict[str, Any]:
    doc = await _federation(request).sources.get(credential.store, source_id)
    if doc is None:
        raise not_found(f"no source {source_id}")
    return doc


@router.post(
    "/admin/sources",
    summary="Add a source: poll another LRS for statements",
    **_doc(_one(_SOURCE, "The source"), status=201, body=SourceIn),
)
async def create_source(request: Request, credential: Credential = Depends(_admin)) -> JSONResponse:
    """Poll a source LRS every poll_interval seconds, from `since` (default: its beginning)."""
    federation = _federation(request)
    body, given = _parse(SourceIn, await request.body(), creating=True)
    now = now_micros()
    doc: dict[str, Any] = {
        "_id": uuid.uuid4().hex,
        "store": credential.store,
        "name": "",
        "username": None,
        "version": "auto",
        "params": {},
        "poll_interval": 60.0,
        "enabled": True,
        "password": None,
        "headers": None,
        "header_names": [],
        "checkpoint_key": None,
        **await _source_fields(federation, body, given | {"endpoint"}),
        "created_key": now,
        "updated_key": now,
        "next_poll_key": 0,  # at once
        "checkpoint_rev": 0,
        "poll_requests": 0,
        "lease_until": 0,
        "lease_owner": None,
        "pulled": 0,
        "rejected": 0,
        "pages": 0,
        "last_error": None,
    }
    await federation.sources.create(doc)
    if doc["enabled"]:
        await federation.driver.wake_source(doc["_id"])
    return JSONResponse(_source_json(doc), status_code=201)


@router.get(
    "/admin/sources",
    summary="Every source of the store",
    **_doc(_listing("sources", _SOURCE)),
)
async def list_sources(request: Request, credential: Credential = Depends(_admin)) -> JSONResponse:
    docs = await _federation(request).sources.list(credential.store)
    return JSONResponse({"sources": [_source_json(doc) for doc in docs]})


@router.get(
    "/admin/sources/{source_id}",
    summary="One source",
    **_doc(_one(_SOURCE, "The source"), parameters=[_SOURCE_ID], responses=_NO_SOURCE),
)
async def get_source(
    source_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    return JSONResponse(_source_json(await _source(request, credential, source_id)))


@router.patch(
    "/admin/sources/{source_id}",
    summary="Change some fields of a source",
    **_doc(
        _one(_SOURCE, "The source"),
        parameters=[_SOURCE_ID],
        body=SourceIn,
        responses=_NO_SOURCE,
    ),
)
async def update_source(
    source_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Change some fields; `since` moves the checkpoint (e.g. back, to pull again), even while
    a poll runs. Enabling it, or changing `since`, the parameters or how the source is reached,
    polls at once."""
    federation = _federation(request)
    await _source(request, credential, source_id)
    body, given = _parse(SourceIn, await request.body(), creating=False)
    fields = await _source_fields(federation, body, given)
    fields["updated_key"] = now_micros()
    inc: dict[str, int] = {}
    if given & _CHECKPOINT_FIELDS:
        inc["checkpoint_rev"] = 1
    poll_now = bool(given & _POLL_NOW_FIELDS) or ("enabled" in given and body.enabled)
    if poll_now:
        # Harmless while disabled: enabling makes it due now anyway.
        fields["next_poll_key"] = 0
        inc["poll_requests"] = 1
    doc = await federation.sources.update(credential.store, source_id, fields, inc=inc or None)
    if doc is None:
        raise not_found(f"no source {source_id}")
    if poll_now and doc.get("enabled", True):
        await federation.driver.wake_source(source_id)
    return JSONResponse(_source_json(doc))


@router.delete(
    "/admin/sources/{source_id}",
    summary="Delete a source",
    **_doc(openapi.response("Deleted"), status=204, parameters=[_SOURCE_ID], responses=_NO_SOURCE),
)
async def delete_source(
    source_id: str, request: Request, credential: Credential = Depends(_admin)
) -> Response:
    if not await _federation(request).sources.delete(credential.store, source_id):
        raise not_found(f"no source {source_id}")
    return Response(status_code=204)


@router.post(
    "/admin/sources/{source_id}/poll",
    summary="Poll now",
    **_doc(
        openapi.response(
            "Scheduled",
            {"type": "object", "properties": {"scheduled": {"type": "boolean"}}},
        ),
        status=202,
        parameters=[_SOURCE_ID],
        responses={**_NO_SOURCE, 409: openapi.error(409, "The source is disabled")},
    ),
)
async def poll_source(
    source_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Poll now instead of at the next interval (asynchronously); a disabled source is left
    as it is (409)."""
    federation = _federation(request)
    doc = await federation.sources.request_poll(credential.store, source_id)
    if doc is None:
        await _source(request, credential, source_id)  # 404 when there is no such source
        raise XAPIError(409, f"source {source_id} is disabled")
    await federation.driver.wake_source(source_id)
    return JSONResponse({"scheduled": True}, status_code=202)


@router.get(
    "/admin/sources/{source_id}/errors",
    summary="Statements of the source that were not stored here, and why",
    **_doc(
        openapi.response(
            "The errors",
            {
                "type": "object",
                "properties": {"errors": {"type": "array", "items": {"type": "object"}}},
                "required": ["errors"],
            },
        ),
        parameters=[_SOURCE_ID, _LIMIT],
        responses=_NO_SOURCE,
    ),
)
async def source_errors(
    source_id: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    """Statements the source holds that were not stored here (conflicts, invalid ones)."""
    await _source(request, credential, source_id)
    docs = await _federation(request).sources.list_errors(source_id, _limit(request))
    errors = [
        {
            "statement": doc.get("statement"),
            "error": doc.get("error"),
            "seen": doc.get("seen", 1),
            "at": iso(doc.get("at_key")),
        }
        for doc in docs
    ]
    return JSONResponse({"errors": errors})
