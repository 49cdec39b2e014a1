"""The three Document Resources: State, Activity Profile and Agent Profile (xAPI 1.0.3
Communication 2.2, 2.3, 2.6, 2.7 and 3.1 Concurrency; xAPI 2.0 4.1.6.2, 4.1.6.5, 4.1.6.6).

Documents are stored byte for byte with their Content-Type. POST merges JSON objects
(2.2.s7). Concurrency follows RFC 7232 with the xAPI rules for a PUT without If-Match and
If-None-Match:
- Agent and Activity Profile: a client MUST send one of them (1.0.3 3.1.s3.b1; the same in
  2.0.0's requirements for Learning Record Providers), so such a PUT is a 400 when the document
  does not exist, and a 409 when it does (3.1.s4.b13; 2.0.0 4.1.4);
- State: exempt in 1.0.x (3.1.s3); in 2.0.0 the State resource is under the same concurrency
  control (4.1.4), so a PUT without them on an existing document is a 409 (creating one without
  them stays allowed: 2.0.0 asks the headers of clients only for the profile resources).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from lrs.api import openapi
from lrs.api.errors import XAPIError, bad_request
from lrs.api.statements import parse_agent_param, services_of
from lrs.auth import current_credential, require_scope
from lrs.storage.credentials import Credential
from lrs.storage.documents import (
    ACTIVITY_PROFILE,
    AGENT_PROFILE,
    STATE,
    DocumentContention,
    DocumentKey,
    DocumentRepository,
    DocumentScope,
    DocumentTooLarge,
    NewContent,
    StoredDocument,
    sha1_hex,
)
from lrs.xapi import jsontext
from lrs.xapi.agents import agent_key
from lrs.xapi.timestamps import TimestampError, from_micros, parse_timestamp, to_micros
from lrs.xapi.validation import is_iri, is_uuid

router = APIRouter()

JSON_MEDIA_TYPE = "application/json"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


# --- the three resources, described as data -----------------------------------------------


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str
    path: str
    id_param: str  # stateId / profileId
    scope: str  # write scope; reads also accept all/read
    uses_activity: bool = False
    uses_agent: bool = False
    uses_registration: bool = False
    # A PUT without If-Match/If-None-Match: refused (400 when the document is missing, 409
    # when it exists) for the profiles; for the State resource a 409 on an existing document
    # from xAPI 2.0.0 on, and allowed in 1.0.x (3.1.s3).
    precondition_required: bool = True
    # Only the State Resource has a multiple-document DELETE (2.3.s5).
    delete_many: bool = False


STATE_RESOURCE = Resource(
    STATE,
    "State",
    "/xapi/activities/state",
    "stateId",
    "state",
    uses_activity=True,
    uses_agent=True,
    uses_registration=True,
    precondition_required=False,
    delete_many=True,
)
ACTIVITY_PROFILE_RESOURCE = Resource(
    ACTIVITY_PROFILE,
    "Activity Profile",
    "/xapi/activities/profile",
    "profileId",
    "profile",
    uses_activity=True,
)
AGENT_PROFILE_RESOURCE = Resource(
    AGENT_PROFILE, "Agent Profile", "/xapi/agents/profile", "profileId", "profile", uses_agent=True
)


@dataclass(frozen=True)
class Target:
    """The parsed query of one request: the scope, and the document id when one is named."""

    scope: DocumentScope
    document_id: str | None
    since: int | None

    def key(self) -> DocumentKey:
        assert self.document_id is not None
        return DocumentKey(
            kind=self.scope.kind,
            document_id=self.document_id,
            activity_id=self.scope.activity_id,
            agent=self.scope.agent,
            registration=self.scope.registration or "",
        )


# --- query parameters ------------------------------------------------------------------------


def _single_params(request: Request) -> dict[str, str]:
    """Query parameters as a dict; a repeated parameter is a 400 (its meaning is ambiguous)."""
    items = request.query_params.multi_items()
    params = dict(items)
    if len(params) != len(items):
        repeated = sorted({k for k, _ in items if sum(1 for n, _ in items if n == k) > 1})
        raise bad_request(f"query parameter(s) repeated: {', '.join(repeated)}")
    return params


def _allowed_params(resource: Resource, method: str) -> set[str]:
    allowed = {resource.id_param}
    if resource.uses_activity:
        allowed.add("activityId")
    if resource.uses_agent:
        allowed.add("agent")
    if resource.uses_registration:
        allowed.add("registration")
    # `since` filters the id list; with an id it is accepted and has no effect (the
    # conformance requirements note that reacting to it there is not required).
    if method == "GET":
        allowed.add("since")
    return allowed


def parse_target(request: Request, resource: Resource, method: str) -> Target:
    """Validate the query for `method` on `resource` (Communication 3.2.s3.b7: unknown
    parameters, including ones that differ only in case, are a 400)."""
    params = _single_params(request)
    has_id = resource.id_param in params
    unknown = set(params) - _allowed_params(resource, method)
    if unknown:
        raise bad_request(
            f"unknown parameter(s) for {method} {resource.path}: {', '.join(sorted(unknown))}"
        )
    needs_id = method in ("PUT", "POST") or (method == "DELETE" and not resource.delete_many)
    if needs_id and not has_id:
        raise bad_request(f"{method} {resource.path} requires the {resource.id_param} parameter")

    activity_id = ""
    if resource.uses_activity:
        if "activityId" not in params:
            raise bad_request(f"{resource.path} requires the activityId parameter")
        activity_id = params["activityId"]
        if not is_iri(activity_id):
            raise bad_request(f"activityId must be an IRI, not {activity_id!r}")

    agent = ""
    if resource.uses_agent:
        if "agent" not in params:
            raise bad_request(f"{resource.path} requires the agent parameter")
        agent = _agent_key_param(params["agent"], request.state.xapi_version)

    registration: str | None = None
    if "registration" in params:
        registration = params["registration"]
        if not is_uuid(registration):
            raise bad_request(f"registration must be a UUID, not {registration!r}")
        registration = registration.lower()
    if not resource.uses_registration or (has_id and registration is None):
        # A single document without a registration is the one stored without one; profiles
        # have no registration at all.
        registration = ""

    document_id = params.get(resource.id_param)
    if document_id is not None and not document_id:
        raise bad_request(f"{resource.id_param} must not be empty")

    since = None
    if "since" in params:
        try:
            since = to_micros(parse_timestamp(params["since"]))
        except TimestampError as exc:
            raise bad_request(f"since: {exc}") from exc

    scope = DocumentScope(resource.kind, activity_id, agent, registration)
    return Target(scope, document_id, since)


def require_utf8(value: str, what: str) -> str:
    """Reject text that cannot be encoded as UTF-8 (a lone surrogate from a JSON escape such as
    "\\ud800"): Communication 1.4.s1.b1 requires UTF-8, and the database could not store it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(f"{what} is not valid UTF-8 text (lone surrogate)") from exc
    return value


def _agent_key_param(raw: str, version: str) -> str:
    agent = parse_agent_param(raw, version, "agent")
    key = agent_key(agent)
    if key is None:
        # An anonymous Group has no identifier to file documents under.
        raise bad_request("agent must be identified by mbox, mbox_sha1sum, openid or account")
    return require_utf8(key, "the agent parameter")


# --- preconditions (RFC 7232, xAPI Communication 3.1) -----------------------------------------


def _entity_tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque value) for each tag of an If-Match / If-None-Match list. Unquoted values
    are taken as they are, since some clients send the bare SHA-1."""
    tags = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        weak = part.startswith(("W/", "w/"))
        if weak:
            part = part[2:].strip()
        if len(part) >= 2 and part[0] == part[-1] == '"':
            part = part[1:-1]
        tags.append((weak, part))
    return tags


@dataclass(frozen=True)
class Preconditions:
    if_match: str | None
    if_none_match: str | None

    @classmethod
    def of(cls, request: Request) -> Preconditions:
        return cls(request.headers.get("if-match"), request.headers.get("if-none-match"))

    @property
    def present(self) -> bool:
        return self.if_match is not None or self.if_none_match is not None

    def check(self, current: StoredDocument | None) -> None:
        """Raise 412 unless the preconditions hold for the current document."""
        if self.if_match is not None:
            value = self.if_match.strip()
            if current is None:
                raise XAPIError(412, "If-Match failed: the document does not exist")
            # If-Match uses the strong comparison: a weak tag never matches.
            if value != "*" and not any(
                not weak and tag == current.etag for weak, tag in _entity_tags(value)
            ):
                raise XAPIError(
                    412,
                    f'If-Match failed: the document\'s current ETag is "{current.etag}"',
                )
        if self.if_none_match is not None and current is not None:
            value = self.if_none_match.strip()
            if value == "*":
                raise XAPIError(412, "If-None-Match: * failed: the document already exists")
            if any(tag == current.etag for _, tag in _entity_tags(value)):
                raise XAPIError(412, "If-None-Match failed: the document has that ETag")


# --- bodies ----------------------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _parse_json(content: bytes, what: str) -> Any:
    """A JSON document through the strict parser. Documents are kept byte for byte, so a lone
    surrogate escape ("\\ud800") is allowed: it stays escaped, and the text stays JSON."""
    try:
        return jsontext.loads(content, what, lone_surrogates=True)
    except jsontext.JSONTextError as exc:
        raise bad_request(f"{what} is declared application/json but refused: {exc}") from exc


async def _read_body(request: Request) -> NewContent:
    content = await request.body()
    content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
    if _media_type(content_type) == JSON_MEDIA_TYPE:
        # Communication 3.2.s3.b6: content that does not match its declared type is a 400.
        _parse_json(content, "the request body")
    return NewContent(content, content_type)


def _merge(current: StoredDocument, posted: NewContent) -> NewContent:
    """Communication 2.2.s7: top-level properties of the posted object replace those of the
    stored object. 2.2.s8.b1: both must be application/json JSON objects, else 400."""
    if _media_type(current.content_type) != JSON_MEDIA_TYPE:
        raise bad_request(
            f"cannot merge into the stored document: its Content-Type is "
            f"{current.content_type!r}, not application/json (PUT replaces it)"
        )
    if _media_type(posted.content_type) != JSON_MEDIA_TYPE:
        raise bad_request(
            f"POST merges JSON: the body's Content-Type must be application/json, not "
            f"{posted.content_type!r} (PUT replaces the document)"
        )
    stored = _parse_json(current.content, "the stored document")
    if not isinstance(stored, dict):
        raise bad_request("cannot merge: the stored document is not a JSON object")
    incoming = _parse_json(posted.content, "the request body")
    if not isinstance(incoming, dict):
        raise bad_request("cannot merge: the request body is not a JSON object")
    stored.update(incoming)
    try:
        merged = json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate escape ("\\ud800") has no UTF-8 form; kept escaped, it stays JSON.
        merged = json.dumps(stored, separators=(",", ":")).encode("ascii")
    return NewContent(merged, JSON_MEDIA_TYPE)


# --- responses -------------------------------------------------------------------------------


def http_date(micros: int) -> str:
    return from_micros(micros).astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def quoted(etag: str) -> str:
    return f'"{etag}"'


def _document_headers(document: StoredDocument) -> dict[str, str]:
    return {"ETag": quoted(document.etag), "Last-Modified": http_date(document.updated)}


def _repository(request: Request) -> DocumentRepository:
    return services_of(request).documents


# --- handlers --------------------------------------------------------------------------------


async def _get(request: Request, credential: Credential, resource: Resource) -> Response:
    require_scope(credential, resource.scope, "all/read")
    target = parse_target(request, resource, "GET")
    repository = _repository(request)
    store = credential.store
    if target.document_id is not None:
        document = await repository.get(store, target.key())
        if document is None:
            raise XAPIError(404, f"no {resource.name} document {target.document_id!r}")
        return Response(
            document.content,
            headers={"Content-Type": document.content_type, **_document_headers(document)},
        )
    ids, latest = await repository.list_ids(store, target.scope, target.since)
    body = json.dumps(ids, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # 3.1.s4.b1: every GET carries an ETag; 2.2.s6.b2: Last-Modified of the newest document.
    headers = {"ETag": quoted(sha1_hex(body))}
    if latest is not None:
        headers["Last-Modified"] = http_date(latest)
    return Response(body, media_type=JSON_MEDIA_TYPE, headers=headers)


def _decide_put(
    resource: Resource, preconditions: Preconditions, body: NewContent, version: str
) -> Callable[[StoredDocument | None], NewContent]:
    def decide(current: StoredDocument | None) -> NewContent:
        preconditions.check(current)
        if not preconditions.present:
            _without_preconditions(resource, current, version)
        return body

    return decide


def _without_preconditions(
    resource: Resource, current: StoredDocument | None, version: str
) -> None:
    """The rules for a PUT that carries neither If-Match nor If-None-Match (module docstring)."""
    if current is None:
        if resource.precondition_required:
            raise bad_request(
                f"a PUT to the {resource.name} resource must carry an If-Match header (the "
                "ETag of the document it replaces) or an If-None-Match header (* to create it "
                "only when absent); it carried neither (xAPI Communication 3.1)"
            )
        return
    if resource.precondition_required or version == "2.0.0":
        # 3.1.s4.b13-b15: 409, explain how to resolve, change nothing.
        raise XAPIError(
            409,
            f"the {resource.name} document already exists: GET it to check its current "
            "state, then PUT again with If-Match set to its ETag (or use If-None-Match: * "
            "to create only when absent)",
        )


def _decide_post(
    preconditions: Preconditions, body: NewContent
) -> Callable[[StoredDocument | None], NewContent]:
    def decide(current: StoredDocument | None) -> NewContent:
        preconditions.check(current)
        if current is None:
            if _media_type(body.content_type) == JSON_MEDIA_TYPE:
                # A POSTed JSON document is a set of variables to merge later: an object.
                incoming = _parse_json(body.content, "the request body")
                if not isinstance(incoming, dict):
                    raise bad_request("a JSON document sent with POST must be a JSON object")
            return body
        return _merge(current, body)

    return decide


async def _write(
    request: Request, credential: Credential, resource: Resource, method: str
) -> Response:
    require_scope(credential, resource.scope)
    target = parse_target(request, resource, method)
    body = await _read_body(request)
    preconditions = Preconditions.of(request)
    decide = (
        _decide_put(resource, preconditions, body, request.state.xapi_version)
        if method == "PUT"
        else _decide_post(preconditions, body)
    )
    try:
        document = await _repository(request).modify(credential.store, target.key(), decide)
    except DocumentTooLarge as exc:
        raise XAPIError(413, str(exc)) from exc
    except DocumentContention as exc:
        raise XAPIError(409, str(exc)) from exc
    return Response(status_code=204, headers=_document_headers(document))


async def _delete(request: Request, credential: Credential, resource: Resource) -> Response:
    require_scope(credential, resource.scope)
    target = parse_target(request, resource, "DELETE")
    repository = _repository(request)
    if target.document_id is None:
        # 2.3.s5: every State document of Activity + Agent [+ registration].
        await repository.delete_all(credential.store, target.scope)
        return Response(status_code=204)
    preconditions = Preconditions.of(request)
    try:
        await repository.delete(credential.store, target.key(), preconditions.check)
    except DocumentContention as exc:
        raise XAPIError(409, str(exc)) from exc
    return Response(status_code=204)


def _register(resource: Resource) -> None:
    async def get(
        request: Request, credential: Credential = Depends(current_credential)
    ) -> Response:
        return await _get(request, credential, resource)

    async def put(
        request: Request, credential: Credential = Depends(current_credential)
    ) -> Response:
        return await _write(request, credential, resource, "PUT")

    async def post(
        request: Request, credential: Credential = Depends(current_credential)
    ) -> Response:
        return await _write(request, credential, resource, "POST")

    async def delete(
        request: Request, credential: Credential = Depends(current_credential)
    ) -> Response:
        return await _delete(request, credential, resource)

    name = resource.kind
    for method, endpoint in (("GET", get), ("PUT", put), ("POST", post), ("DELETE", delete)):
        router.add_api_route(
            resource.path,
            endpoint,
            methods=[method],
            name=f"{method.lower()}_{name}",
            tags=["xapi"],
            summary=_SUMMARIES[method].format(name=resource.name),
            **_openapi(resource, method),
        )


_SUMMARIES = {
    "GET": "Get a {name} document, or the ids of the documents",
    "PUT": "Store a {name} document",
    "POST": "Merge JSON into a {name} document (or store it)",
    "DELETE": "Delete a {name} document",
}


def _openapi(resource: Resource, method: str) -> dict[str, Any]:
    """What one method of a document resource takes and answers (OpenAPI)."""
    # The document id names one document; without it, GET lists ids and the State resource's
    # DELETE deletes every document of the activity and agent (and registration).
    id_required = method in ("PUT", "POST") or (method == "DELETE" and not resource.delete_many)
    parameters = []
    if resource.uses_activity:
        parameters.append(
            openapi.query("activityId", "The activity's id", openapi.IRI, required=True)
        )
    if resource.uses_agent:
        parameters.append(
            openapi.json_query("agent", "The agent (JSON)", openapi.AGENT_SCHEMA, required=True)
        )
    if resource.uses_registration:
        parameters.append(openapi.query("registration", "The registration", openapi.UUID))
    parameters.append(
        openapi.query(
            resource.id_param,
            f"The document's id{'' if id_required else ' (omitted: every document)'}",
            required=id_required,
        )
    )
    if method == "GET":
        parameters.append(
            openapi.query(
                "since",
                "Without an id: only ids of documents updated after this time",
                openapi.TIMESTAMP,
            )
        )
    etag = {"ETag": {"description": "The document's SHA-1, quoted", "schema": openapi.STRING}}
    last_modified = {
        "Last-Modified": {"description": "When it last changed", "schema": openapi.STRING}
    }
    preconditions = [
        openapi.header("If-Match", "Change only if the document has this ETag (or `*`)"),
        openapi.header("If-None-Match", "`*`: change only if no such document exists"),
    ]
    scopes = [resource.scope, "all/read"] if method == "GET" else [resource.scope]
    if method == "GET":
        return openapi.operation(
            scopes=scopes,
            xapi=True,
            parameters=parameters,
            ok={
                "description": "The document, with the Content-Type it was stored with; or, "
                "without an id, a JSON array of document ids",
                "content": {
                    "application/json": {"schema": {}},
                    "*/*": {"schema": {"type": "string", "format": "binary"}},
                },
                "headers": {**etag, **last_modified},
            },
            responses={404: openapi.error(404, "No such document")},
        )
    if method == "DELETE":
        return openapi.operation(
            scopes=scopes,
            xapi=True,
            status=204,
            parameters=[*parameters, *preconditions],
            ok=openapi.response("Deleted (or there was nothing to delete)"),
            errors=(400, 401, 403, 409, 412),
        )
    conflict = (
        "A precondition header is required: the document exists"
        + ("" if resource.precondition_required else " (xAPI 2.0.0)")
        if method == "PUT"
        else "The document changed concurrently"
    )
    return openapi.operation(
        scopes=scopes,
        xapi=True,
        status=204,
        parameters=[*parameters, *preconditions],
        body={
            "required": True,
            "description": "Any content; application/json is checked to be JSON"
            + (" (an object, merged into a stored JSON object)" if method == "POST" else ""),
            "content": {
                "application/json": {"schema": {"type": "object"} if method == "POST" else {}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        ok=openapi.response("Stored", headers=etag),
        errors=(400, 401, 403, 409, 412, 413),
        responses={409: openapi.error(409, conflict)},
    )


for _resource in (STATE_RESOURCE, ACTIVITY_PROFILE_RESOURCE, AGENT_PROFILE_RESOURCE):
    _register(_resource)


__all__ = ["router", "http_date", "quoted", "require_utf8"]
