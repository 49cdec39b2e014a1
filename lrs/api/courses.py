"""The course catalogue: /courses (JSON definitions) and /courses/import (cmi5.xml)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from lrs.api import openapi
from lrs.api.errors import bad_request, not_found
from lrs.api.paths import parse_json_body, raw_segments
from lrs.auth import current_credential, require_scope
from lrs.progress.catalogue import Course, CourseDefinition, CourseStructureError, parse_cmi5_course
from lrs.services import Services
from lrs.storage.credentials import Credential
from lrs.xapi.validation import is_iri

router = APIRouter()


def course_json(course: Course) -> dict[str, Any]:
    return {
        "id": course.id,
        "title": course.title,
        "profile": course.profile,
        "source": course.source,
        "discovered": course.discovered,
        "modules": [
            {
                "id": module.id,
                "title": module.title,
                "rule": module.rule,
                "profile": module.profile,
                "items": [asdict(item) for item in module.items],
            }
            for module in course.modules
        ],
    }


def _course_id(request: Request) -> str:
    segments = raw_segments(request, "/courses/")
    if len(segments) != 1 or not segments[0]:
        raise not_found("use /courses/{courseId} with the course IRI URL-encoded")
    course_id = segments[0]
    if not is_iri(course_id):
        raise bad_request(f"courseId must be an IRI, not {course_id!r}")
    return course_id


def _profile_known(services: Services, name: str) -> None:
    if name not in services.profiles.by_name:
        known = ", ".join(sorted(services.profiles.by_name))
        raise bad_request(f"unknown profile {name!r}; known: {known}")


async def save_course(services: Services, store: str, course: Course, definition: Any) -> None:
    for module in course.modules:
        _profile_known(services, module.profile)
    await services.catalogue.put(store, course, definition)
    await services.dispatcher.submit_course(store, course.id)


_READ_SCOPES = ["progress/read", "progress/write", "all/read"]
_COURSE_ID = openapi.path("courseId", "The course's IRI, URL-encoded (`/` as %2F)", openapi.IRI)
_COURSE_PATH = "/courses/{courseId}"
_NO_COURSE = {404: openapi.error(404, "No such course")}


@router.get(
    "/courses",
    tags=["courses"],
    summary="Every course of the store, defined and discovered",
    **openapi.operation(
        scopes=_READ_SCOPES,
        ok=openapi.response(
            "The courses",
            {
                "type": "object",
                "properties": {"courses": {"type": "array", "items": openapi.COURSE_SCHEMA}},
                "required": ["courses"],
            },
        ),
    ),
)
async def list_courses(
    request: Request, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    require_scope(credential, "progress/read", "progress/write", "all/read")
    courses = await request.app.state.services.catalogue.list(credential.store)
    return JSONResponse({"courses": [course_json(c) for c in courses]})


@router.post(
    "/courses/import",
    tags=["courses"],
    summary="Import a cmi5 course structure (cmi5.xml)",
    **openapi.operation(
        scopes=["progress/write"],
        status=201,
        description="Blocks become modules, AUs their items (with `moveOn` and "
        "`masteryScore`). Replaces a course with the same id.",
        parameters=[
            openapi.query(
                "profile", "The progress profile of the course (default `cmi5`)", openapi.STRING
            )
        ],
        body={
            "required": True,
            "content": {
                "application/xml": {"schema": {"type": "string", "description": "cmi5.xml"}}
            },
        },
        ok=openapi.response("The course as imported", openapi.COURSE_SCHEMA),
        errors=(400, 401, 403, 413),
    ),
)
async def import_cmi5(
    request: Request, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    """Import a cmi5 course structure (cmi5.xml): blocks become modules, AUs become items."""
    require_scope(credential, "progress/write")
    profile = request.query_params.get("profile", "cmi5")
    services: Services = request.app.state.services
    _profile_known(services, profile)
    try:
        course = parse_cmi5_course(await request.body(), profile)
    except CourseStructureError as exc:
        raise bad_request(f"invalid cmi5 course structure: {exc}") from exc
    await save_course(services, credential.store, course, None)
    return JSONResponse(course_json(course), status_code=201)


@router.get(
    "/courses/{rest:path}",
    name="get_course",
    tags=["courses"],
    summary="One course",
    **openapi.operation(
        scopes=_READ_SCOPES,
        documented_path=_COURSE_PATH,
        parameters=[_COURSE_ID],
        ok=openapi.response("The course", openapi.COURSE_SCHEMA),
        responses=_NO_COURSE,
    ),
)
@router.put(
    "/courses/{rest:path}",
    name="put_course",
    tags=["courses"],
    summary="Define (or redefine) a course: its modules, their content and assessment",
    **openapi.operation(
        scopes=["progress/write"],
        documented_path=_COURSE_PATH,
        description="A defined course fixes which activities each module requires, so "
        "progress has a known denominator; without a definition, modules are discovered from "
        "the statements' context activities. Progress is re-derived for the new definition.",
        parameters=[_COURSE_ID],
        body=openapi.json_body(openapi.model_schema(CourseDefinition)),
        ok=openapi.response("Redefined", openapi.COURSE_SCHEMA),
        errors=(400, 401, 403, 413),
        responses={201: openapi.response("Defined (new)", openapi.COURSE_SCHEMA)},
    ),
)
@router.delete(
    "/courses/{rest:path}",
    name="delete_course",
    tags=["courses"],
    summary="Delete a course and its progress records",
    **openapi.operation(
        scopes=["progress/write"],
        status=204,
        documented_path=_COURSE_PATH,
        parameters=[_COURSE_ID],
        ok=openapi.response("Deleted"),
        responses=_NO_COURSE,
    ),
)
async def course_resource(
    request: Request, rest: str, credential: Credential = Depends(current_credential)
) -> Response:
    services: Services = request.app.state.services
    course_id = _course_id(request)
    if request.method == "GET":
        require_scope(credential, "progress/read", "progress/write", "all/read")
        course = await services.catalogue.get(credential.store, course_id)
        if course is None:
            raise not_found(f"no course {course_id}")
        return JSONResponse(course_json(course))
    require_scope(credential, "progress/write")
    if request.method == "DELETE":
        if not await services.catalogue.delete(credential.store, course_id):
            raise not_found(f"no course {course_id}")
        await services.progress.delete_course(credential.store, course_id)
        return Response(status_code=204)
    # Kept as sent in the catalogue (BSON): integers must fit 64 bits.
    body = parse_json_body(await request.body(), "the course definition", int64=True)
    try:
        definition = CourseDefinition.model_validate(body)
    except ValidationError as exc:
        raise bad_request(_pydantic_message(exc)) from exc
    course = definition.to_course(course_id)
    existing = await services.catalogue.get(credential.store, course_id)
    await save_course(services, credential.store, course, body)
    return JSONResponse(course_json(course), status_code=200 if existing else 201)


def _pydantic_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
