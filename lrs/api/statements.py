"""The xAPI Statements resource: PUT, POST, GET (and HEAD through the middleware)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from lrs.api import statements_openapi as doc
from lrs.api.consistency import set_consistent_through
from lrs.api.errors import XAPIError, bad_request
from lrs.api.paths import decode_cursor, encode_cursor, int_param, single_params
from lrs.auth import current_credential, has_scope, require_scope
from lrs.ingestion import IngestionError, Stored
from lrs.services import Services
from lrs.storage.credentials import Credential
from lrs.storage.statements import StatementQuery
from lrs.xapi import jsontext, sizes
from lrs.xapi.agents import agent_key
from lrs.xapi.attachments import (
    AttachmentError,
    AttachmentPart,
    build_multipart_mixed,
    parse_multipart_mixed,
)
from lrs.xapi.formats import FORMATS, format_statement, parse_accept_language
from lrs.xapi.timestamps import (
    TimestampError,
    parse_timestamp,
    to_micros,
)
from lrs.xapi.validation import (
    StatementValidationError,
    is_iri,
    is_uuid,
    validate_agent,
)

router = APIRouter()

_GET_PARAMETERS = frozenset(
    {
        "statementId",
        "voidedStatementId",
        "agent",
        "verb",
        "activity",
        "registration",
        "related_activities",
        "related_agents",
        "since",
        "until",
        "limit",
        "format",
        "attachments",
        "ascending",
        "cursor",
    }
)
_SINGLE_PARAMETERS = frozenset({"statementId", "voidedStatementId", "attachments", "format"})


def services_of(request: Request) -> Services:
    return request.app.state.services


def _json_loads(raw: bytes, what: str) -> Any:
    """The strict JSON parser (lrs.xapi.jsontext), refusals as 400."""
    try:
        return jsontext.loads(raw, what)
    except jsontext.JSONTextError as exc:
        raise bad_request(str(exc)) from exc


async def _read_statements(
    request: Request,
) -> tuple[list[Any], bool, list[AttachmentPart]]:
    """The statements of a PUT/POST body: (statements, was_a_list, attachment parts)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    parts: list[AttachmentPart] = []
    if media == "multipart/mixed":
        try:
            raw, parts = parse_multipart_mixed(body, content_type)
        except AttachmentError as exc:
            raise bad_request(f"multipart body: {exc}") from exc
    elif media == "application/json":
        raw = body
    else:
        raise bad_request(
            f"Content-Type must be application/json or multipart/mixed, not {media or 'missing'!r}"
        )
    if not raw.strip():
        raise bad_request("the request body is empty")
    data = _json_loads(raw, "the request body")
    statements = data if isinstance(data, list) else [data]
    if len(raw) > sizes.CHECK_ABOVE_BODY_BYTES:
        _refuse_oversized(statements)
    if isinstance(data, list):
        if not data:
            raise bad_request("the statement array is empty")
        return data, True, parts
    return [data], False, parts


def _refuse_oversized(statements: list[Any]) -> None:
    """413 for a statement whose stored document would exceed what a back end holds (16 MiB),
    before anything of the batch is written, on every back end alike."""
    for index, statement in enumerate(statements):
        size = sizes.too_large(statement) if isinstance(statement, dict) else None
        if size is not None:
            raise XAPIError(
                413,
                f"statement {index} would be stored as about {size} bytes; a stored statement "
                f"is limited to {sizes.MAX_DOCUMENT_BYTES} bytes (16 MiB)",
            )


async def store_statements(
    services: Services,
    credential: Credential,
    statements: list[Any],
    *,
    version: str,
    as_list: bool = True,
    parts: list[AttachmentPart] | None = None,
) -> Stored:
    """The ingestion use case (lrs.ingestion), its refusals as xAPI errors."""
    try:
        return await services.ingestion.store(
            credential, statements, version=version, as_list=as_list, parts=parts
        )
    except IngestionError as exc:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        raise XAPIError(exc.status, exc.message, headers=headers) from exc


async def _store(
    request: Request,
    credential: Credential,
    statements: list[Any],
    as_list: bool,
    parts: list[AttachmentPart],
) -> list[dict[str, Any]]:
    stored = await store_statements(
        services_of(request),
        credential,
        statements,
        version=request.state.xapi_version,
        as_list=as_list,
        parts=parts,
    )
    if stored.consistent_through is not None:
        # The version middleware puts it on the response without asking the store again.
        set_consistent_through(request, stored.consistent_through)
    return stored.statements


def _statement_headers(services: Services, last_stored: str | None = None) -> dict[str, str]:
    """Last-Modified of a statement response. (X-Experience-API-Consistent-Through is added to
    every Statements resource response by the version middleware, lrs.api.consistency.)"""
    headers: dict[str, str] = {}
    if last_stored:
        headers["Last-Modified"] = _http_date(last_stored)
    return headers


def _http_date(timestamp: str) -> str:
    return parse_timestamp(timestamp).strftime("%a, %d %b %Y %H:%M:%S GMT")


@router.put("/xapi/statements", tags=["xapi"], **doc.PUT)
async def put_statement(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    require_scope(credential, "statements/write")
    params = request.query_params
    if set(params) != {"statementId"}:
        raise bad_request("PUT /statements takes exactly one parameter: statementId")
    statement_id = params["statementId"]
    if not is_uuid(statement_id):
        raise bad_request(f"statementId {statement_id!r} is not a UUID")
    statements, as_list, parts = await _read_statements(request)
    if as_list:
        raise bad_request("PUT /statements takes a single statement, not an array")
    statement = statements[0]
    if isinstance(statement, dict):
        if "id" in statement and str(statement["id"]).lower() != statement_id.lower():
            raise bad_request("the statement's id does not match the statementId parameter")
        statement = {**statement, "id": statement_id}
    await _store(request, credential, [statement], False, parts)
    return Response(status_code=204, headers=_statement_headers(services_of(request)))


@router.post("/xapi/statements", tags=["xapi"], **doc.POST)
async def post_statements(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    require_scope(credential, "statements/write")
    if request.query_params:
        raise bad_request("POST /statements takes no query parameters")
    statements, as_list, parts = await _read_statements(request)
    prepared = await _store(request, credential, statements, as_list, parts)
    return JSONResponse(
        [s["id"] for s in prepared], headers=_statement_headers(services_of(request))
    )


def _bool_param(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false")
    if value not in ("true", "false"):
        raise bad_request(f"{name} must be true or false, not {value!r}")
    return value == "true"


def _timestamp_param(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    try:
        return to_micros(parse_timestamp(params[name]))
    except TimestampError as exc:
        raise bad_request(f"{name}: {exc}") from exc


def _iri_param(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not is_iri(value):
        raise bad_request(f"{name} must be an IRI, not {value!r}")
    return value


def parse_agent_param(raw: str, version: str, name: str = "agent") -> dict[str, Any]:
    agent = _json_loads(raw.encode("utf-8"), f"the {name} parameter")
    try:
        validate_agent(agent, path=name, version=version)
    except StatementValidationError as exc:
        raise bad_request(str(exc)) from exc
    return agent


def _encode_cursor(cursor: tuple[int, str]) -> str:
    return encode_cursor(list(cursor))


def _decode_cursor(token: str) -> tuple[int, str]:
    key, last_id = decode_cursor(token, (int, str))
    return key, last_id


@router.get("/xapi/statements", tags=["xapi"], **doc.GET)
async def get_statements(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    services = services_of(request)
    mine_only = not has_scope(credential, "statements/read", "all/read")
    if mine_only:
        require_scope(credential, "statements/read/mine")
    authority = agent_key(credential.authority) if mine_only else None

    params = single_params(request, _GET_PARAMETERS)
    fmt = params.get("format", "exact")
    if fmt not in FORMATS:
        raise bad_request(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    with_attachments = _bool_param(params, "attachments")
    languages = parse_accept_language(request.headers.get("accept-language"))

    if "statementId" in params or "voidedStatementId" in params:
        if "statementId" in params and "voidedStatementId" in params:
            raise bad_request("statementId and voidedStatementId cannot be used together")
        extra = set(params) - _SINGLE_PARAMETERS
        if extra:
            raise bad_request(
                "with statementId or voidedStatementId only attachments and format are allowed, "
                f"not {', '.join(sorted(extra))}"
            )
        voided = "voidedStatementId" in params
        statement_id = params["voidedStatementId" if voided else "statementId"]
        if not is_uuid(statement_id):
            raise bad_request(f"{statement_id!r} is not a UUID")
        statement = await services.statements.get(
            credential.store, statement_id.lower(), voided=voided, authority=authority
        )
        if statement is None:
            raise XAPIError(404, f"no statement {statement_id}")
        headers = _statement_headers(services, statement.get("stored"))
        body = format_statement(statement, fmt, languages)
        return await _statement_response(
            request, credential, body, [statement], with_attachments, headers
        )

    version = request.state.xapi_version
    limit = int_param(params.get("limit", "0"), "limit")
    page_size = services.settings.statement_page_size
    limit = min(limit or page_size, services.settings.max_statement_page_size)
    registration = params.get("registration")
    if registration is not None and not is_uuid(registration):
        raise bad_request(f"registration must be a UUID, not {registration!r}")
    agent = parse_agent_param(params["agent"], version) if "agent" in params else None
    query = StatementQuery(
        agent=agent_key(agent) if agent else None,
        verb=_iri_param(params, "verb"),
        activity=_iri_param(params, "activity"),
        registration=registration,
        related_agents=_bool_param(params, "related_agents"),
        related_activities=_bool_param(params, "related_activities"),
        since=_timestamp_param(params, "since"),
        until=_timestamp_param(params, "until"),
        ascending=_bool_param(params, "ascending"),
        limit=limit,
        after=_decode_cursor(params["cursor"]) if "cursor" in params else None,
        authority=authority,
    )
    page = await services.statements.query(credential.store, query)
    more = ""
    if page.next_cursor is not None:
        next_params = {k: v for k, v in params.items() if k != "cursor"}
        next_params["cursor"] = _encode_cursor(page.next_cursor)
        root = request.scope.get("root_path", "")
        more = f"{root}/xapi/statements?" + "&".join(
            f"{k}={_quote(v)}" for k, v in next_params.items()
        )
    headers = _statement_headers(services, page.last_stored)
    if fmt == "exact" and not with_attachments:
        # The stored texts are the exact format already (lrs.storage.statement_docs): the page
        # is written around them, without parsing and serializing each statement again.
        payload = b'{"statements":[%s],"more":%s}' % (
            ",".join(page.texts).encode("utf-8"),
            json.dumps(more).encode("utf-8"),
        )
        return Response(payload, media_type="application/json", headers=headers)
    body = {
        "statements": [format_statement(s, fmt, languages) for s in page.statements],
        "more": more,
    }
    return await _statement_response(
        request, credential, body, page.statements, with_attachments, headers
    )


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


async def _statement_response(
    request: Request,
    credential: Credential,
    body: Any,
    statements: list[dict[str, Any]],
    with_attachments: bool,
    headers: dict[str, str],
) -> Response:
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not with_attachments:
        return Response(payload, media_type="application/json", headers=headers)
    wanted = [
        attachment["sha2"]
        for statement in statements
        for attachment in _all_attachments(statement)
        if "sha2" in attachment
    ]
    stored = await services_of(request).statements.get_attachments(credential.store, wanted)
    parts = [AttachmentPart(doc["sha2"], doc["content_type"], bytes(doc["data"])) for doc in stored]
    multipart, content_type = build_multipart_mixed(payload, parts)
    return Response(multipart, headers={**headers, "Content-Type": content_type})


def _all_attachments(statement: dict[str, Any]) -> list[dict[str, Any]]:
    attachments = list(statement.get("attachments") or [])
    obj = statement.get("object")
    if isinstance(obj, dict) and obj.get("objectType") == "SubStatement":
        attachments += obj.get("attachments") or []
    return attachments


__all__ = ["router", "parse_agent_param", "services_of", "store_statements"]
