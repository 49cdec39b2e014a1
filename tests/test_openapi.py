"""The OpenAPI description is the truth (issue 13): every operation documents its parameters
(the hand-parsed ones too), bodies, real status codes and security; and schemathesis, driving
the app with generated requests, finds no server error and no answer the description does not
allow (status code, content type, body)."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from lrs.app import create_app
from lrs.config import Settings

ADMIN = ("schema-admin", "schema-secret")
# Peers a generated destination or source would reach: the discard port on loopback, so a
# federation delivery or poll fails at once and nothing leaves the machine.
UNREACHABLE_PEER = "http://127.0.0.1:9/xapi/"


def _app(tmp_path: Path, storage: str = "memory") -> Any:
    settings_ = Settings(
        storage=storage,
        data_dir=tmp_path / "data",
        database="openapi",
        redis_url=None,
        admin_key=ADMIN[0],
        admin_secret=ADMIN[1],
    )
    return create_app(settings_)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with warnings.catch_warnings():
        # A duplicate operationId makes FastAPI warn (into the JSON log, unformatted).
        warnings.simplefilter("error")
        return _app(tmp_path_factory.mktemp("spec")).openapi()


def test_operation_ids_are_unique(spec: dict[str, Any]) -> None:
    ids = collections.Counter(op["operationId"] for _, _, op in _operations(spec))
    assert ids and not [name for name, count in ids.items() if count > 1]


def test_no_operation_documents_the_422_the_api_never_sends(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        assert "422" not in op["responses"], f"{method} {path}"
        assert op["responses"], f"{method} {path}"
    assert "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})


def test_every_operation_states_its_security(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["basicAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "basic"}
    public = {"/", "/health", "/ready", "/metrics", "/xapi/about"}
    for path, method, op in _operations(spec):
        if path in public:
            assert op["security"] == [], path
            assert "401" not in op["responses"], path
        else:
            assert op["security"] == [{"basicAuth": []}], f"{method} {path}"
            assert op["x-scopes"], f"{method} {path}"
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"


def test_hand_parsed_query_parameters_are_documented(spec: dict[str, Any]) -> None:
    def names(path: str, method: str) -> set[str]:
        return {p["name"] for p in spec["paths"][path][method].get("parameters", [])}

    assert names("/xapi/statements", "get") >= {
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
        "X-Experience-API-Version",
    }
    assert names("/xapi/activities/state", "get") >= {"activityId", "agent", "stateId", "since"}
    assert names("/xapi/activities/profile", "put") >= {"activityId", "profileId", "If-Match"}
    assert names("/xapi/agents/profile", "delete") >= {"agent", "profileId"}
    assert names("/xapi/activities", "get") >= {"activityId"}
    assert names("/xapi/agents", "get") >= {"agent"}
    assert names("/progress", "get") >= {
        "learner",
        "course",
        "module",
        "status",
        "registration",
        "limit",
    }
    assert names("/progress/stream", "get") >= {"course", "learner", "Last-Event-ID"}
    assert names("/admin/destinations/{destination_id}/dead-letters", "get") >= {
        "destination_id",
        "limit",
        "cursor",
    }
    # The routes that read IRIs from the raw path are documented with the template clients use.
    assert names("/courses/{courseId}", "put") == {"courseId"}
    assert names("/progress/learners/{learner}/courses/{courseId}", "get") == {
        "learner",
        "courseId",
        "registration",
    }
    assert not [path for path in spec["paths"] if "{rest}" in path]


def test_status_codes_and_media_types_are_the_real_ones(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    assert set(paths["/xapi/statements"]["put"]["responses"]) >= {"204", "409"}
    assert "200" not in paths["/xapi/statements"]["put"]["responses"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert set(paths["/ready"]["get"]["responses"]) == {"200", "503"}
    body = paths["/xapi/statements"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/mixed"} <= set(body)
    put_course = paths["/courses/{courseId}"]["put"]
    course_schema = put_course["requestBody"]["content"]["application/json"]["schema"]
    assert course_schema == {"$ref": "#/components/schemas/CourseDefinition"}
    assert "modules" in spec["components"]["schemas"]["CourseDefinition"]["properties"]
    assert {"200", "201"} <= set(put_course["responses"])


# --- schemathesis ----------------------------------------------------------------------------


# One app for every generated request (in RAM: nothing on disk). Schemathesis starts its
# lifespan (the services) when it loads the schema, at collection: the periodic sweeps are
# slowed down so that it idles until the test runs.
SCHEMA = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(
        Settings(
            storage="memory",
            database="openapi",
            redis_url=None,
            admin_key=ADMIN[0],
            admin_secret=ADMIN[1],
            sweep_interval=3600.0,
            federation_interval=3600.0,
        )
    ),
    # The live stream never ends by itself (tests/test_progress_api.py covers it).
).exclude(path="/progress/stream")


@pytest.fixture(scope="module", autouse=True)
def _stop_the_schemathesis_app() -> Iterator[None]:
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


@SCHEMA.parametrize()
@settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_as_documented(case: Any) -> None:
    if isinstance(case.body, dict) and "endpoint" in case.body:
        case.body["endpoint"] = UNREACHABLE_PEER
    case.call_and_validate(
        auth=ADMIN,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
