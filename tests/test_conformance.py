"""xAPI conformance rules from the 1.0.3 and 2.0.0 checks (issue 12, items 1-9), one test per
rule, named after it. Run on every back end (tests/conftest.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from lrs.app import create_app
from lrs.services import build_services
from lrs.storage.database import open_database
from lrs.xapi.timestamps import parse_timestamp
from tests.conftest import LRS, basic_auth, make_settings, statement

STATEMENTS = "/xapi/statements"
CONSISTENT = "X-Experience-API-Consistent-Through"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
PASSED = "http://adlnet.gov/expapi/verbs/passed"
AGENT = {"objectType": "Agent", "mbox": "mailto:learner@example.com"}


async def post(lrs: LRS, *statements: dict[str, Any], version: str = "1.0.3") -> list[str]:
    response = await lrs.client.post(
        STATEMENTS, json=list(statements), headers={"X-Experience-API-Version": version}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _consistent_through(response: httpx.Response) -> None:
    assert CONSISTENT in response.headers, (response.status_code, dict(response.headers))
    parse_timestamp(response.headers[CONSISTENT])  # an ISO 8601 timestamp


# --- 1. X-Experience-API-Consistent-Through on every Statements response ---------------


async def test_consistent_through_on_error_responses_communication_2_1_3(lrs: LRS) -> None:
    """Communication 2.1.3.s2.b5: the header is on all responses to Statements resource
    requests, whatever the status: 400 (a bad parameter combination), 404 (an unknown or a
    voided id), 401, 400 for a missing version header, and the 200s and 204s."""
    (target,) = await post(lrs, statement())
    await post(
        lrs, statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": target})
    )
    unknown = str(uuid.uuid4())
    responses = {
        "both ids": await lrs.client.get(
            STATEMENTS, params={"statementId": target, "voidedStatementId": target}
        ),
        "unknown id": await lrs.client.get(STATEMENTS, params={"statementId": unknown}),
        "voided id": await lrs.client.get(STATEMENTS, params={"statementId": target}),
        "bad limit": await lrs.client.get(STATEMENTS, params={"limit": "²"}),
        "bad credentials": await lrs.client.get(
            STATEMENTS, headers={"Authorization": basic_auth("nobody", "wrong")}
        ),
        "no version": await lrs.client.get(STATEMENTS, headers={"X-Experience-API-Version": ""}),
        "HEAD unknown id": await lrs.client.head(STATEMENTS, params={"statementId": unknown}),
        "bad PUT": await lrs.client.put(STATEMENTS, params={"statementId": "x"}, json={}),
        "bad POST": await lrs.client.post(STATEMENTS, json={"actor": {}}),
        "list": await lrs.client.get(STATEMENTS),
        "voided by voidedStatementId": await lrs.client.get(
            STATEMENTS, params={"voidedStatementId": target}
        ),
    }
    statuses = {name: response.status_code for name, response in responses.items()}
    assert statuses == {
        "both ids": 400,
        "unknown id": 404,
        "voided id": 404,
        "bad limit": 400,
        "bad credentials": 401,
        "no version": 400,
        "HEAD unknown id": 404,
        "bad PUT": 400,
        "bad POST": 400,
        "list": 200,
        "voided by voidedStatementId": 200,
    }
    for response in responses.values():
        _consistent_through(response)
    # Other resources do not carry it.
    assert CONSISTENT not in (await lrs.client.get("/xapi/about")).headers


async def test_consistent_through_of_a_get_is_taken_before_the_query_communication_2_1_3(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header promises that every statement stored before it is in the answer: so it is
    computed before the query runs, and a statement stored while the query runs is later."""
    query = lrs.services.statements.query
    stored_during: list[str] = []

    async def query_while_a_statement_arrives(store: str, q: Any) -> Any:
        page = await query(store, q)
        stored_during.extend(await post(lrs, statement()))
        return page

    monkeypatch.setattr(lrs.services.statements, "query", query_while_a_statement_arrives)
    response = await lrs.client.get(STATEMENTS)
    monkeypatch.undo()
    through = parse_timestamp(response.headers[CONSISTENT])
    late = (await lrs.client.get(STATEMENTS, params={"statementId": stored_during[0]})).json()
    assert parse_timestamp(late["stored"]) > through
    assert stored_during[0] not in {s["id"] for s in response.json()["statements"]}


# --- 2. contextActivities as arrays -------------------------------------------------------


@pytest.mark.parametrize("fmt", ["exact", "ids", "canonical"])
async def test_context_activities_returned_as_arrays_data_2_4_6_2(lrs: LRS, fmt: str) -> None:
    """Data 2.4.6.2: a contextActivities value sent as a single Activity object is returned as
    an array, in every format, in the statement and in a SubStatement."""
    single = {"parent": {"id": "http://example.com/parent"}, "grouping": {"id": "http://ex.com/g"}}
    sub = {
        "objectType": "SubStatement",
        "actor": AGENT,
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attempted"},
        "object": {"id": "http://example.com/sub"},
        "context": {"contextActivities": {"category": {"id": "http://example.com/cat"}}},
    }
    (statement_id,) = await post(
        lrs,
        statement(
            object=sub,
            context={"contextActivities": {**single, "other": [{"id": "http://ex.com/o"}]}},
        ),
    )
    for params in ({"statementId": statement_id, "format": fmt}, {"format": fmt}):
        body = (await lrs.client.get(STATEMENTS, params=params)).json()
        found = body if "id" in body else body["statements"][0]
        activities = found["context"]["contextActivities"]
        assert all(isinstance(value, list) for value in activities.values()), activities
        assert [a["id"] for a in activities["parent"]] == ["http://example.com/parent"]
        assert [a["id"] for a in activities["other"]] == ["http://ex.com/o"]
        inner = found["object"]["context"]["contextActivities"]["category"]
        assert [a["id"] for a in inner] == ["http://example.com/cat"]


# --- 3. format=ids ----------------------------------------------------------------------------


async def test_format_ids_gives_an_activity_its_id_only_communication_2_1_3(lrs: LRS) -> None:
    """Communication 2.1.3 `format=ids`: the minimum that identifies an Activity, its id; an
    Agent keeps its objectType and identifier, a StatementRef its objectType and id."""
    context = {"contextActivities": {"parent": [{"objectType": "Activity", "id": "http://p"}]}}
    (target,) = await post(lrs, statement(context=context))
    (referrer,) = await post(
        lrs, statement(object={"objectType": "StatementRef", "id": target}, context=context)
    )
    ids = (await lrs.client.get(STATEMENTS, params={"statementId": target, "format": "ids"})).json()
    assert ids["object"] == {"id": "http://example.com/activities/intro"}
    assert ids["context"]["contextActivities"]["parent"] == [{"id": "http://p"}]
    assert ids["actor"] == {"objectType": "Agent", "mbox": "mailto:learner@example.com"}
    ref = (
        await lrs.client.get(STATEMENTS, params={"statementId": referrer, "format": "ids"})
    ).json()
    assert ref["object"] == {"objectType": "StatementRef", "id": target}


# --- 4. voiding statements match through the statement they void --------------------------


async def test_voiding_statement_matches_filters_through_its_target_communication_2_1_4(
    lrs: LRS,
) -> None:
    """Communication 2.1.4.s1.b2: the LRS MUST still return statements targeting a voided
    statement, the voiding statement included, when the voided statement matches the filter
    (2.1.3 filter conditions for StatementRefs); the voided statement itself stays hidden."""
    activity = "http://example.com/activities/voided-target"
    (target,) = await post(lrs, statement(verb={"id": PASSED}, object={"id": activity}))
    (voiding,) = await post(
        lrs, statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": target})
    )
    # A statement referencing the voided one (not a voiding one) matches through it too.
    (comment,) = await post(
        lrs,
        statement(
            verb={"id": "http://adlnet.gov/expapi/verbs/commented"},
            object={"objectType": "StatementRef", "id": target},
        ),
    )
    for params in ({"verb": PASSED}, {"activity": activity}, {"verb": PASSED, "ascending": "true"}):
        listed = {
            s["id"] for s in (await lrs.client.get(STATEMENTS, params=params)).json()["statements"]
        }
        assert listed == {voiding, comment}, params
    # Voiding after the referrer was stored changes nothing either (the order of arrival).
    (late_target,) = await post(lrs, statement(verb={"id": PASSED}, object={"id": activity + "2"}))
    (late_ref,) = await post(
        lrs,
        statement(
            verb={"id": "http://adlnet.gov/expapi/verbs/shared"},
            object={"objectType": "StatementRef", "id": late_target},
        ),
    )
    (late_voiding,) = await post(
        lrs,
        statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": late_target}),
    )
    params = {"activity": activity + "2"}
    listed = {
        s["id"] for s in (await lrs.client.get(STATEMENTS, params=params)).json()["statements"]
    }
    assert listed == {late_ref, late_voiding}


# --- 5. the alternate request syntax keeps real headers ------------------------------------


async def test_alternate_request_syntax_keeps_real_headers_communication_1_3(lrs: LRS) -> None:
    """Communication 1.3.s3.b6-b8: Authorization and X-Experience-API-Version MAY come as form
    fields; a client that sends them as ordinary headers (using the syntax for a long query)
    is served with them."""
    (statement_id,) = await post(lrs, statement())
    form = f"statementId={statement_id}"
    response = await lrs.client.post(
        f"{STATEMENTS}?method=GET",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == statement_id
    # A form field still wins over the real header it names.
    response = await lrs.client.post(
        f"{STATEMENTS}?method=GET",
        content=f"{form}&Authorization={quote(basic_auth('nobody', 'x'), safe='')}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 401
    # And PUT with content, real headers, to a document resource.
    content = quote(json.dumps({"via": "alternate"}), safe="")
    agent = quote(json.dumps(AGENT), safe="")
    response = await lrs.client.post(
        "/xapi/activities/state?method=PUT",
        content=f"activityId=http%3A%2F%2Fex.com%2Fa&agent={agent}&stateId=s&content={content}"
        "&Content-Type=application%2Fjson",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 204, response.text


# --- 6 and 7. concurrency of the document resources ---------------------------------------


PROFILES = {
    "/xapi/activities/profile": {"activityId": "http://example.com/a", "profileId": "p"},
    "/xapi/agents/profile": {"agent": json.dumps(AGENT), "profileId": "p"},
}


@pytest.mark.parametrize("path", sorted(PROFILES))
@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_profile_put_without_precondition_headers_is_400_communication_3_1(
    lrs: LRS, path: str, version: str
) -> None:
    """1.0.3 Communication 3.1.s3.b1 (2.0.0: the same requirement on Learning Record
    Providers): a PUT to a profile resource must carry If-Match or If-None-Match. Missing
    document: 400 naming the headers; existing document: 409 (3.1.s4.b13); nothing changes."""
    headers = {"X-Experience-API-Version": version}
    params = PROFILES[path]
    response = await lrs.client.put(path, params=params, json={"a": 1}, headers=headers)
    assert response.status_code == 400
    assert "If-Match" in response.json()["error"]
    assert (await lrs.client.get(path, params=params, headers=headers)).status_code == 404
    created = await lrs.client.put(
        path, params=params, json={"a": 1}, headers={**headers, "If-None-Match": "*"}
    )
    assert created.status_code == 204
    response = await lrs.client.put(path, params=params, json={"a": 2}, headers=headers)
    assert response.status_code == 409
    assert (await lrs.client.get(path, params=params, headers=headers)).json() == {"a": 1}


async def test_state_put_without_preconditions_is_409_in_2_0_0_only_concurrency_4_1_4(
    lrs: LRS,
) -> None:
    """2.0.0 4.1.4 puts the State resource under concurrency control: a PUT without If-Match or
    If-None-Match on an existing state document is a 409 and changes nothing. 1.0.x keeps the
    State resource exempt (1.0.3 3.1.s3). Creating a document without them stays allowed."""
    params = {"activityId": "http://example.com/a", "agent": json.dumps(AGENT), "stateId": "s"}
    v2 = {"X-Experience-API-Version": "2.0.0"}
    v1 = {"X-Experience-API-Version": "1.0.3"}
    assert (
        await lrs.client.put("/xapi/activities/state", params=params, json={"n": 1}, headers=v2)
    ).status_code == 204
    response = await lrs.client.put(
        "/xapi/activities/state", params=params, json={"n": 2}, headers=v2
    )
    assert response.status_code == 409
    assert "If-Match" in response.json()["error"]
    assert (await lrs.client.get("/xapi/activities/state", params=params)).json() == {"n": 1}
    etag = (await lrs.client.get("/xapi/activities/state", params=params)).headers["ETag"]
    with_etag = {**v2, "If-Match": etag}
    assert (
        await lrs.client.put(
            "/xapi/activities/state", params=params, json={"n": 3}, headers=with_etag
        )
    ).status_code == 204
    assert (
        await lrs.client.put("/xapi/activities/state", params=params, json={"n": 4}, headers=v1)
    ).status_code == 204
    assert (await lrs.client.get("/xapi/activities/state", params=params)).json() == {"n": 4}


# --- 8 and 9. versions ------------------------------------------------------------------------


@pytest.fixture
async def app_with(tmp_path: Any) -> AsyncIterator[Any]:
    """Builds an API with settings overrides: `await make(**overrides)` -> (client, auth)."""
    opened: list[Any] = []

    async def make(**overrides: Any) -> tuple[httpx.AsyncClient, str]:
        settings = make_settings("memory", tmp_path, **overrides)
        services = build_services(settings, open_database(settings))
        await services.start()
        created, secret = await services.credentials.create("default", ["all"], "t")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, services)),
            base_url="http://lrs.test",
        )
        opened.append((client, services))
        return client, basic_auth(created.key, secret)

    yield make
    for client, services in opened:
        await client.aclose()
        await services.close()


@pytest.mark.parametrize("default", [None, "2.0.0", "1.0.3"])
async def test_default_xapi_version_for_requests_without_one_communication_3_3(
    app_with: Any, default: str | None
) -> None:
    """A request without X-Experience-API-Version is a 400 whose version header is
    LRS_DEFAULT_XAPI_VERSION's line (2.0.0 unless set), so a 2.0.0 checker and a 1.0.3 one
    can each be served; a request that names a version gets its own line."""
    overrides = {} if default is None else {"default_xapi_version": default}
    client, auth = await app_with(**overrides)
    response = await client.get(STATEMENTS, headers={"Authorization": auth})
    assert response.status_code == 400
    assert response.headers["X-Experience-API-Version"] == (default or "2.0.0")
    for sent, answered in (("1.0.3", "1.0.3"), ("1.0.0", "1.0.3"), ("2.0.0", "2.0.0")):
        response = await client.get(
            STATEMENTS, headers={"Authorization": auth, "X-Experience-API-Version": sent}
        )
        assert response.status_code == 200
        assert response.headers["X-Experience-API-Version"] == answered
    # Routes that take no version header answer with the default line too.
    assert (await client.get("/health")).headers["X-Experience-API-Version"] == (default or "2.0.0")


def test_default_xapi_version_setting_must_be_supported(tmp_path: Any) -> None:
    with pytest.raises(ValueError):
        make_settings("memory", tmp_path, default_xapi_version="1.1.0")


async def test_version_2_0_is_accepted_as_2_0_0_versioning_4_1_7(lrs: LRS) -> None:
    """2.0.0 4.1.7: "The LRS shall accept requests with a version header of 2.0 as if the
    version header was 2.0.0" (as 1.0 is 1.0.0); later patches of 1.0 and 2.0 are accepted;
    other versions are refused with 400."""
    (statement_id,) = await post(lrs, statement(), version="2.0")
    response = await lrs.client.get(
        STATEMENTS,
        params={"statementId": statement_id},
        headers={"X-Experience-API-Version": "2.0"},
    )
    assert response.status_code == 200
    assert response.headers["X-Experience-API-Version"] == "2.0.0"
    assert response.json()["version"] == "2.0.0"  # stored as a 2.0.0 statement
    for accepted, line in (("1.0", "1.0.3"), ("1.0.9", "1.0.3"), ("2.0.1", "2.0.0")):
        response = await lrs.client.get(STATEMENTS, headers={"X-Experience-API-Version": accepted})
        assert response.status_code == 200, accepted
        assert response.headers["X-Experience-API-Version"] == line
    for refused in ("2.1.0", "2", "0.95", "2.0.x"):
        response = await lrs.client.get(STATEMENTS, headers={"X-Experience-API-Version": refused})
        assert response.status_code == 400, refused
