"""The progress API: records over REST, changes over Server-Sent Events, and the waive/reset
actions, which are recorded as statements so that progress stays a function of statements."""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from lrs.api import openapi
from lrs.api.errors import XAPIError, bad_request, not_found
from lrs.api.learners import learner_agent, learner_key_of
from lrs.api.paths import (
    decode_cursor,
    encode_cursor,
    int_param,
    parse_json_body,
    raw_segments,
    single_params,
)
from lrs.api.statements import store_statements
from lrs.auth import current_credential, require_scope
from lrs.progress.deriver import event_id, public_record
from lrs.progress.profiles import RESET_VERB, WAIVED_VERB
from lrs.progress.rules import STATUSES
from lrs.services import Services
from lrs.storage.credentials import Credential
from lrs.xapi.agents import agent_key
from lrs.xapi.jsontext import compact_json_bytes
from lrs.xapi.timestamps import format_timestamp, parse_timestamp
from lrs.xapi.validation import is_iri, is_uuid

router = APIRouter()

_LIST_PARAMETERS = frozenset(
    {"learner", "course", "module", "status", "registration", "limit", "cursor"}
)
KEEPALIVE_SECONDS = 15.0


def _services(request: Request) -> Services:
    return request.app.state.services


def _reader(credential: Credential) -> None:
    require_scope(credential, "progress/read", "progress/write", "all/read")


def _iri(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not is_iri(value):
        raise bad_request(f"{name} must be an IRI, not {value!r}")
    return value


def _cursor(token: str) -> tuple[str, str, str, str]:
    try:
        learner, course, module, registration = decode_cursor(token, (str, str, str, str))
    except XAPIError:  # a cursor issued before records were kept per registration
        learner, course, module = decode_cursor(token, (str, str, str))
        registration = ""
    return learner, course, module, registration


def _position(record: dict[str, Any]) -> tuple[str, str, str, str]:
    """A record's place in the listing order (what a cursor holds)."""
    return record["learner"], record["course"], record["module"], record.get("registration") or ""


# Records read (and rendered) at a time for one page of GET /progress.
_PAGE_SLICE = 50

_READ_SCOPES = ["progress/read", "progress/write", "all/read"]
_LEARNER_TEXT = (
    "A learner: agent JSON, or a learner key (`mbox:mailto:a@b.c`, `mbox_sha1sum:<hex>`, "
    "`openid:<uri>`, `account:<homePage>|<name>`)"
)
_RECORDS = {
    "type": "object",
    "properties": {
        "records": {"type": "array", "items": openapi.PROGRESS_RECORD_SCHEMA},
        "more": {"type": "string", "description": "the next page's URL; empty on the last"},
    },
    "required": ["records", "more"],
}


@router.get(
    "/progress",
    tags=["progress"],
    summary="Progress records, filtered and paged",
    **openapi.operation(
        scopes=_READ_SCOPES,
        description="One record per learner, course and module that statements touched. A "
        "parameter given twice, or one not listed here, is a 400.",
        parameters=[
            openapi.query("learner", _LEARNER_TEXT),
            openapi.query("course", "Only this course", openapi.IRI),
            openapi.query("module", "Only this module", openapi.IRI),
            openapi.query(
                "status",
                "Only records in this status",
                {"type": "string", "enum": list(STATUSES)},
            ),
            openapi.query(
                "registration",
                "Only the records of this registration (cmi5 courses keep one per registration)",
                openapi.UUID,
            ),
            openapi.query(
                "limit",
                "Records per page (default 100)",
                {"type": "integer", "minimum": 1, "maximum": 1000},
            ),
            openapi.query("cursor", "The position of a page; part of the `more` link"),
        ],
        ok=openapi.response("A page of records", _RECORDS),
    ),
)
async def list_progress(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    _reader(credential)
    params = single_params(request, _LIST_PARAMETERS)
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise bad_request(f"status must be one of {', '.join(STATUSES)}")
    limit = int_param(params.get("limit", "100"), "limit", minimum=1, maximum=1000)
    query = functools.partial(
        _services(request).progress.find,
        credential.store,
        learner=learner_key_of(params["learner"]) if "learner" in params else None,
        course=_iri(params, "course"),
        module=_iri(params, "module"),
        status=status,
        registration=_registration(params),
        items_as_text=True,  # written out as stored, never parsed here
    )
    # Read and rendered a slice at a time: a full page of a large discovered module's records
    # held as objects took about 200 MB; as JSON text it is a tenth of that.
    rendered: list[bytes] = []
    after = _cursor(params["cursor"]) if "cursor" in params else None
    more = ""
    while len(rendered) < limit:
        want = min(_PAGE_SLICE, limit - len(rendered))
        records = await query(after=after, limit=want + 1)  # one more: is this the end?
        for record in records[:want]:
            rendered.append(compact_json_bytes(public_record(record)))
            after = _position(record)
        if len(records) <= want:
            break
    else:  # the page is full and a record follows it
        assert after is not None
        cursor = {k: v for k, v in params.items() if k != "cursor"}
        cursor["cursor"] = encode_cursor(list(after))
        more = f"{request.url.path}?{urlencode(cursor)}"
    # One copy of the page's text, not two (a join, then the concatenation around it).
    parts = [b'{"records":[']
    for number, text in enumerate(rendered):
        if number:
            parts.append(b",")
        parts.append(text)
    parts += [b'],"more":', compact_json_bytes(more), b"}"]
    return Response(b"".join(parts), media_type="application/json")


@router.get(
    "/progress/learners/{rest:path}",
    tags=["progress"],
    summary="One learner's progress in every module of a course, with the roll-up",
    **openapi.operation(
        scopes=_READ_SCOPES,
        documented_path="/progress/learners/{learner}/courses/{courseId}",
        parameters=[
            openapi.path("learner", _LEARNER_TEXT + ", URL-encoded"),
            openapi.path("courseId", "The course's IRI, URL-encoded", openapi.IRI),
            openapi.query(
                "registration",
                "For a course kept per registration (cmi5): this registration's progress; "
                "default: the one the learner was last active in",
                openapi.UUID,
            ),
        ],
        ok=openapi.response(
            "Every module (not_started where nothing happened yet), and the course's counts",
            {
                "type": "object",
                "properties": {
                    "learner": openapi.STRING,
                    "course": openapi.IRI,
                    "title": openapi.STRING,
                    "discovered": {"type": "boolean"},
                    "modules": {"type": "array", "items": openapi.PROGRESS_RECORD_SCHEMA},
                    "completed": {"type": "integer"},
                    "total": {"type": "integer"},
                    "percent": {"type": "integer"},
                },
                "required": ["learner", "course", "modules", "completed", "total", "percent"],
            },
        ),
        responses={404: openapi.error(404, "No such course (or not this path's shape)")},
    ),
)
async def learner_course_progress(
    request: Request, rest: str, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    """All modules of one course for one learner, with the course-level roll-up."""
    _reader(credential)
    segments = raw_segments(request, "/progress/learners/")
    if len(segments) != 3 or segments[1] != "courses":
        raise not_found("use /progress/learners/{learner}/courses/{courseId}, URL-encoded")
    learner = learner_key_of(segments[0])
    params = single_params(request, frozenset({"registration"}))
    services = _services(request)
    course = await services.catalogue.get(credential.store, segments[2])
    if course is None:
        raise not_found(f"no course {segments[2]}")
    everything = await services.progress.find(
        credential.store, learner=learner, course=course.id, limit=10_000
    )
    # Per-registration courses (cmi5): the registration named, else the latest one active.
    registrations = _latest_first(everything)
    registration = _registration(params) or (registrations[0] if registrations else "")
    records = {r["module"]: r for r in everything if (r.get("registration") or "") == registration}
    modules = []
    for module in course.modules:
        record = records.get(module.id)
        if record is None:
            modules.append(
                {
                    "learner": learner,
                    "course": course.id,
                    "module": module.id,
                    "status": "not_started",
                    "percent": 0,
                    "discovered": module.discovered,
                }
            )
        else:
            modules.append(public_record(record))
        modules[-1]["title"] = module.title
    completed = sum(1 for m in modules if m["status"] == "completed")
    total = len(modules)
    return JSONResponse(
        {
            "learner": learner,
            "course": course.id,
            "title": course.title,
            "discovered": course.discovered,
            "registration": registration or None,
            "registrations": registrations,
            "modules": modules,
            "completed": completed,
            "total": total,
            "percent": (100 * completed) // total if total else 0,
        }
    )


@router.get(
    "/progress/courses/{rest:path}",
    tags=["progress"],
    summary="Per module of a course: learners per status, completion rate, median time",
    **openapi.operation(
        scopes=_READ_SCOPES,
        documented_path="/progress/courses/{courseId}/summary",
        parameters=[openapi.path("courseId", "The course's IRI, URL-encoded", openapi.IRI)],
        ok=openapi.response(
            "The summary",
            {
                "type": "object",
                "properties": {
                    "course": openapi.IRI,
                    "title": openapi.STRING,
                    "learners": {"type": "integer"},
                    "modules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "module": openapi.IRI,
                                "title": openapi.STRING,
                                "counts": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                                "learners": {"type": "integer"},
                                "completion_rate": {"type": "number"},
                                "median_seconds_to_complete": {"type": ["number", "null"]},
                            },
                            "required": ["module", "counts", "learners", "completion_rate"],
                        },
                    },
                },
                "required": ["course", "learners", "modules"],
            },
        ),
        responses={404: openapi.error(404, "No such course (or not this path's shape)")},
    ),
)
async def course_summary(
    request: Request, rest: str, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    """Per module: learners per status, completion rate, median time to complete."""
    _reader(credential)
    segments = raw_segments(request, "/progress/courses/")
    if len(segments) != 2 or segments[1] != "summary":
        raise not_found("use /progress/courses/{courseId}/summary, URL-encoded")
    services = _services(request)
    course = await services.catalogue.get(credential.store, segments[0])
    if course is None:
        raise not_found(f"no course {segments[0]}")
    records = _latest_registration_only(
        await services.progress.find(credential.store, course=course.id, limit=1_000_000)
    )
    learners = {r["learner"] for r in records}
    summary = []
    for module in course.modules:
        mine = [r for r in records if r["module"] == module.id]
        counts = {status: 0 for status in STATUSES}
        for record in mine:
            counts[record["status"]] += 1
        counts["not_started"] += len(learners) - len(mine)
        durations = [
            (parse_timestamp(r["completed_at"]) - parse_timestamp(r["started_at"])).total_seconds()
            for r in mine
            if r["status"] == "completed" and r.get("completed_at") and r.get("started_at")
        ]
        summary.append(
            {
                "module": module.id,
                "title": module.title,
                "counts": counts,
                "learners": len(learners),
                "completion_rate": counts["completed"] / len(learners) if learners else 0.0,
                "median_seconds_to_complete": statistics.median(durations) if durations else None,
            }
        )
    return JSONResponse(
        {"course": course.id, "title": course.title, "learners": len(learners), "modules": summary}
    )


class ModuleAction(BaseModel):
    """Body of POST /progress/waive and /progress/reset."""

    model_config = ConfigDict(extra="forbid")
    learner: dict[str, Any] | str
    course: str
    module: str
    reason: str | None = None
    # A cmi5 course keeps progress per registration: the one to act on (default: the latest
    # the learner has in the course).
    registration: str | None = None


def _registration(params: dict[str, str]) -> str | None:
    value = params.get("registration")
    if value is None:
        return None
    if not is_uuid(value):
        raise bad_request(f"registration must be a UUID, not {value!r}")
    return value.lower()


def _latest_registration_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of each learner's records, those of the registration they were last active in (a
    learner counts once in a course summary, enrolled again or not)."""
    by_learner: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_learner.setdefault(record["learner"], []).append(record)
    kept = []
    for mine in by_learner.values():
        latest = next(iter(_latest_first(mine)), "")
        kept += [r for r in mine if (r.get("registration") or "") == latest]
    return kept


def _latest_first(records: list[dict[str, Any]]) -> list[str]:
    """The registrations of these records, the most recently active first."""
    latest: dict[str, str] = {}
    for record in records:
        registration = record.get("registration") or ""
        if registration:
            moment = record.get("last_activity_at") or ""
            latest[registration] = max(latest.get(registration, ""), moment)
    return sorted(latest, key=lambda r: latest[r], reverse=True)


async def _record_action(request: Request, credential: Credential, verb: str) -> JSONResponse:
    require_scope(credential, "progress/write")
    body = parse_json_body(await request.body(), "the request body")
    try:
        action = ModuleAction.model_validate(body)
    except ValidationError as exc:
        raise bad_request(exc.errors()[0]["msg"] if exc.errors() else str(exc)) from exc
    services = _services(request)
    raw = action.learner if isinstance(action.learner, str) else json.dumps(action.learner)
    agent = learner_agent(raw)
    course = await services.catalogue.get(credential.store, action.course)
    if course is None or not any(m.id == action.module for m in course.modules):
        raise not_found(f"no module {action.module} in course {action.course}")
    registration = action.registration
    if registration is not None and not is_uuid(registration):
        raise bad_request(f"registration must be a UUID, not {registration!r}")
    if registration is None and course.source == "cmi5":
        learner = agent_key(agent) or ""
        records = await services.progress.find(
            credential.store, learner=learner, course=course.id, limit=10_000
        )
        registration = next(iter(_latest_first(records)), None)
    statement: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "actor": agent,
        "verb": {"id": verb, "display": {"en": verb.rsplit("/", 1)[-1].rsplit(":", 1)[-1]}},
        "object": {"objectType": "Activity", "id": action.module},
        "context": {"contextActivities": {"grouping": [{"id": course.id}]}},
        "timestamp": format_timestamp(_now()),
    }
    if registration is not None:
        statement["context"]["registration"] = registration.lower()
    if verb == WAIVED_VERB:
        statement["result"] = {"success": True, "completion": True}
    if action.reason:
        statement["context"]["extensions"] = {"urn:x-lrs:extensions:reason": action.reason}
    await store_statements(services, credential, [statement], version="1.0.3")
    return JSONResponse({"statement": statement["id"]}, status_code=202)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


_ACTION = openapi.operation(
    scopes=["progress/write"],
    status=202,
    body=openapi.json_body(openapi.model_schema(ModuleAction)),
    ok=openapi.response(
        "Recorded as a statement; progress follows once it is derived",
        {"type": "object", "properties": {"statement": openapi.UUID}, "required": ["statement"]},
    ),
    errors=(400, 401, 403, 413),
    responses={404: openapi.error(404, "No such module in that course")},
)


@router.post("/progress/waive", tags=["progress"], summary="Waive a module", **_ACTION)
async def waive_module(
    request: Request, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    """Mark a learner's module waived: records a cmi5-style `waived` statement with the caller
    as authority; the derivation turns it into `completed`."""
    return await _record_action(request, credential, WAIVED_VERB)


@router.post("/progress/reset", tags=["progress"], summary="Reset a module", **_ACTION)
async def reset_module(
    request: Request, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    """Reset a learner's module: records a reset statement; statements up to it stop counting."""
    return await _record_action(request, credential, RESET_VERB)


@router.get(
    "/progress/stream",
    tags=["progress"],
    summary="Live progress changes (Server-Sent Events)",
    **openapi.operation(
        scopes=_READ_SCOPES,
        description="`event: progress` with the record as `data` and its change sequence as "
        "`id`; keep-alive comments. Reconnecting with Last-Event-ID (or `lastEventId`) first "
        "sends what changed since.",
        parameters=[
            openapi.query("course", "Only this course", openapi.IRI),
            openapi.query("learner", _LEARNER_TEXT),
            openapi.query(
                "lastEventId",
                "Resume after this event id (as the Last-Event-ID header)",
                {"type": "integer", "minimum": 0},
            ),
            openapi.header(
                "Last-Event-ID", "Resume after this event id", {"type": "integer", "minimum": 0}
            ),
        ],
        ok=openapi.response(
            "The event stream (it stays open)", openapi.STRING, media_type="text/event-stream"
        ),
    ),
)
async def progress_stream(
    request: Request, credential: Credential = Depends(current_credential)
) -> Response:
    """Server-Sent Events of progress changes in the caller's store, optionally for one course
    or learner. Resumable: with Last-Event-ID, the records changed since are sent first."""
    _reader(credential)
    params = single_params(request, frozenset({"course", "learner", "lastEventId"}))
    course = _iri(params, "course")
    learner = learner_key_of(params["learner"]) if "learner" in params else None
    last_text = request.headers.get("last-event-id") or params.get("lastEventId")
    last_id = None if last_text is None else int_param(last_text.strip(), "Last-Event-ID")
    services = _services(request)
    keepalive = float(getattr(request.app.state, "sse_keepalive", KEEPALIVE_SECONDS))

    def wanted(record: dict[str, Any]) -> bool:
        return (course is None or record.get("course") == course) and (
            learner is None or record.get("learner") == learner
        )

    async def events() -> AsyncIterator[bytes]:
        async with services.bus.subscribe(credential.store) as queue:
            yield b": connected\n\n"
            caught_up: set[str] = set()
            if last_id is not None:
                # Subscribed first, then caught up: nothing falls between the two.
                for record in await services.progress.changed_since(
                    credential.store, last_id, limit=10_000, items_as_text=True
                ):
                    if wanted(record):
                        caught_up.add(event_id(record))
                        yield _event(event_id(record), public_record(record))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=keepalive)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is None:  # the service is shutting down
                    return
                store, event = item
                if store != credential.store or not wanted(event["record"]):
                    continue
                if event["id"] in caught_up:
                    continue
                yield _event(event["id"], event["record"])

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(event_id: str, record: dict[str, Any]) -> bytes:
    # Compact JSON holds no line break, so the record is one `data:` line.
    return (
        b"id: "
        + event_id.encode()
        + b"\nevent: progress\ndata: "
        + compact_json_bytes(record)
        + b"\n\n"
    )
