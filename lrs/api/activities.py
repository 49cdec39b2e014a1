"""The Activities and Agents resources (xAPI 1.0.3 Communication 2.4 and 2.5; xAPI 2.0
4.1.6.3 and 4.1.6.4): the canonical Activity definition gathered from statements, and the
Person object for an Agent."""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from lrs.api import openapi
from lrs.api.documents import http_date, quoted, require_utf8
from lrs.api.errors import bad_request
from lrs.api.statements import parse_agent_param, services_of
from lrs.auth import current_credential, require_scope
from lrs.storage.credentials import Credential
from lrs.storage.documents import sha1_hex
from lrs.xapi.formats import parse_accept_language, pick_language
from lrs.xapi.validation import is_iri

router = APIRouter()

# Reading canonical data about Activities and Agents: any credential that may read statements
# or use the document resources sees what those already reveal.
_ACTIVITY_READ_SCOPES = ("all/read", "statements/read", "profile", "state", "define")
_PERSON_READ_SCOPES = ("all/read", "statements/read", "profile", "state")
_COMPONENT_LISTS = ("choices", "scale", "source", "target", "steps")


def _only_param(request: Request, name: str) -> str:
    """The value of the resource's one parameter; anything else (unknown, repeated or
    missing) is a 400 (Communication 3.2.s3.b7)."""
    items = request.query_params.multi_items()
    names = [key for key, _ in items]
    unknown = sorted(set(names) - {name})
    if unknown:
        raise bad_request(f"unknown parameter(s): {', '.join(unknown)}")
    if not names:
        raise bad_request(f"the {name} parameter is required")
    if len(names) > 1:
        raise bad_request(f"the {name} parameter is repeated")
    return items[0][1]


def _json_response(body: Any, last_modified: int | None = None) -> Response:
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Both resources "have Concurrency controls associated with" them: an ETag on the GET.
    headers = {"ETag": quoted(sha1_hex(payload))}
    if last_modified is not None:
        headers["Last-Modified"] = http_date(last_modified)
    return Response(payload, media_type="application/json", headers=headers)


def localise(definition: dict[str, Any], languages: list[str]) -> dict[str, Any]:
    """Each language map of a definition reduced to the entry that best matches the
    Accept-Language ranges (the canonical-format rule of Communication 2.1.3.s4)."""
    result = copy.deepcopy(definition)
    for key in ("name", "description"):
        if isinstance(result.get(key), dict):
            result[key] = pick_language(result[key], languages)
    for key in _COMPONENT_LISTS:
        for component in result.get(key) or []:
            if isinstance(component, dict) and isinstance(component.get("description"), dict):
                component["description"] = pick_language(component["description"], languages)
    return result


_ETAG = {"ETag": {"description": "SHA-1 of the body, quoted", "schema": openapi.STRING}}


@router.get(
    "/xapi/activities",
    tags=["xapi"],
    summary="The canonical definition of an Activity",
    **openapi.operation(
        scopes=list(_ACTIVITY_READ_SCOPES),
        xapi=True,
        description="The Activity with the definition gathered from the statements (as the "
        "credentials with `define` sent it), localised to Accept-Language.",
        parameters=[openapi.query("activityId", "The activity's id", openapi.IRI, required=True)],
        ok=openapi.response(
            "The Activity (only its id when nothing defines it)",
            {
                "type": "object",
                "properties": {
                    "objectType": {"const": "Activity"},
                    "id": openapi.IRI,
                    "definition": {"type": "object"},
                },
                "required": ["objectType", "id"],
            },
            headers=_ETAG,
        ),
    ),
)
async def get_activity(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    require_scope(credential, *_ACTIVITY_READ_SCOPES)
    activity_id = _only_param(request, "activityId")
    if not is_iri(activity_id):
        raise bad_request(f"activityId must be an IRI, not {activity_id!r}")
    activities = services_of(request).activities
    activity = await activities.get(credential.store, activity_id)
    if activity is None:
        # 2.5.s2.b1: without a canonical definition, still an Activity Object.
        return _json_response({"objectType": "Activity", "id": activity_id})
    languages = parse_accept_language(request.headers.get("accept-language"))
    if languages and "definition" in activity:
        activity["definition"] = localise(activity["definition"], languages)
    updated = await activities.updated(credential.store, activity_id)
    return _json_response(activity, updated)


@router.get(
    "/xapi/agents",
    tags=["xapi"],
    summary="The Person: every identifier and name an Agent is known by",
    **openapi.operation(
        scopes=list(_PERSON_READ_SCOPES),
        xapi=True,
        parameters=[
            openapi.json_query("agent", "The Agent (JSON)", openapi.AGENT_SCHEMA, required=True)
        ],
        ok=openapi.response(
            "A Person object: arrays of names and identifiers",
            {
                "type": "object",
                "properties": {
                    "objectType": {"const": "Person"},
                    "name": {"type": "array", "items": openapi.STRING},
                    "mbox": {"type": "array", "items": openapi.STRING},
                    "mbox_sha1sum": {"type": "array", "items": openapi.STRING},
                    "openid": {"type": "array", "items": openapi.STRING},
                    "account": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["objectType"],
            },
            headers=_ETAG,
        ),
    ),
)
async def get_person(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    require_scope(credential, *_PERSON_READ_SCOPES)
    agent = parse_agent_param(_only_param(request, "agent"), request.state.xapi_version)
    if agent.get("objectType") == "Group":
        # 2.4.s2: the parameter "is a normal Agent Object ... nor is it a Group".
        raise bad_request("the agent parameter must be an Agent, not a Group")
    # The identifier is looked up in the database, which takes only valid UTF-8.
    require_utf8(json.dumps(agent, ensure_ascii=False), "the agent parameter")
    person = await services_of(request).activities.people.person(credential.store, agent)
    return _json_response(person)


__all__ = ["router", "localise"]
