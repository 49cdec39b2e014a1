"""What the Statements resource takes and answers, for the OpenAPI description (kept apart
from lrs.api.statements, whose handlers parse the query by hand)."""

from __future__ import annotations

from typing import Any

from lrs.api import openapi
from lrs.api.openapi import BOOLEAN_TEXT, IRI, STATEMENT_SCHEMA, TIMESTAMP, UUID, query

_CONSISTENT_THROUGH = {
    "X-Experience-API-Consistent-Through": {
        "description": "Every statement stored at or before this time is visible to queries",
        "schema": TIMESTAMP,
    }
}
_LAST_MODIFIED = {
    "Last-Modified": {
        "description": "When the newest statement in the answer was stored",
        "schema": openapi.STRING,
    }
}
_MULTIPART = {
    "type": "string",
    "format": "binary",
    "description": "multipart/mixed: the statement(s) as the first part (application/json), "
    "then one part per attachment with its X-Experience-API-Hash and "
    "Content-Transfer-Encoding: binary",
}

GET = openapi.operation(
    scopes=["statements/read", "all/read", "statements/read/mine"],
    xapi=True,
    description="One statement by `statementId` (or a voided one by `voidedStatementId`), or "
    "a page of the statements that match every filter given (most recently stored first "
    "unless `ascending=true`), with a `more` link to the next page. With only "
    "`statements/read/mine`, a credential sees the statements it wrote. A parameter given "
    "twice, or one not listed here, is a 400. HEAD answers the same headers without a body.",
    parameters=[
        query("statementId", "The id of the statement to get", UUID),
        query("voidedStatementId", "The id of a voided statement to get", UUID),
        openapi.json_query(
            "agent",
            "Statements whose actor (or, with related_agents=true, any agent) is this Agent or "
            "identified Group (JSON)",
            openapi.AGENT_SCHEMA,
        ),
        query("verb", "Statements with this verb id", IRI),
        query(
            "activity",
            "Statements whose object (or, with related_activities=true, any activity) has this id",
            IRI,
        ),
        query("registration", "Statements of this registration", UUID),
        query(
            "related_activities",
            "Match `activity` in context activities and sub-statements too",
            BOOLEAN_TEXT,
        ),
        query(
            "related_agents",
            "Match `agent` as authority, instructor, team or in sub-statements too",
            BOOLEAN_TEXT,
        ),
        query("since", "Only statements stored after this time (exclusive)", TIMESTAMP),
        query("until", "Only statements stored at or before this time", TIMESTAMP),
        query(
            "limit",
            "Statements per page; 0 (the default) is LRS_STATEMENT_PAGE_SIZE; at most "
            "LRS_MAX_STATEMENT_PAGE_SIZE",
            {"type": "integer", "minimum": 0},
        ),
        query(
            "format",
            "ids: agents, activities and groups reduced to their identifiers; exact (default): "
            "as stored; canonical: language maps reduced to the best match for "
            "Accept-Language",
            {"type": "string", "enum": ["ids", "exact", "canonical"], "default": "exact"},
        ),
        query(
            "attachments",
            "true: answer multipart/mixed with the attachments' content",
            BOOLEAN_TEXT,
        ),
        query("ascending", "true: oldest stored first", BOOLEAN_TEXT),
        query("cursor", "The position of a page; part of the `more` link, not to be built"),
    ],
    ok={
        "description": "The statement (by id), or a page of statements",
        "content": {
            "application/json": {
                "schema": {"anyOf": [openapi.STATEMENT_RESULT_SCHEMA, STATEMENT_SCHEMA]}
            },
            "multipart/mixed": {"schema": _MULTIPART},
        },
        "headers": {**_CONSISTENT_THROUGH, **_LAST_MODIFIED},
    },
    responses={404: openapi.error(404, "No such statement (or it is voided, or not voided)")},
)

PUT = openapi.operation(
    scopes=["statements/write"],
    xapi=True,
    status=204,
    description="Store one statement under the given id. Storing the same statement again "
    "is a no-op; a different one with that id is a 409.",
    parameters=[query("statementId", "The statement's id", UUID, required=True)],
    body={
        "required": True,
        "content": {
            "application/json": {"schema": STATEMENT_SCHEMA},
            "multipart/mixed": {"schema": _MULTIPART},
        },
    },
    ok=openapi.response("Stored", headers=_CONSISTENT_THROUGH),
    errors=(400, 401, 403, 409, 413),
    responses={409: openapi.error(409, "Another statement with this id is stored")},
)

_STATEMENTS: dict[str, Any] = {
    "anyOf": [STATEMENT_SCHEMA, {"type": "array", "items": STATEMENT_SCHEMA, "minItems": 1}]
}

POST = openapi.operation(
    scopes=["statements/write"],
    xapi=True,
    description="Store one statement or an array of statements, all or nothing. The 1.0.3 "
    "alternate request syntax (`?method=` with a form body) is accepted too.",
    body={
        "required": True,
        "content": {
            "application/json": {"schema": _STATEMENTS},
            "multipart/mixed": {"schema": _MULTIPART},
        },
    },
    ok=openapi.response(
        "Stored: the ids of the statements, in the order sent",
        {"type": "array", "items": UUID},
        headers=_CONSISTENT_THROUGH,
    ),
    errors=(400, 401, 403, 409, 413),
    responses={409: openapi.error(409, "A statement id is stored with a different statement")},
)
