"""The Statements resource over HTTP, requirement by requirement (xAPI 1.0.3 Communication 2.1
"Statement Resource" and the 2.0 equivalent). Each test names the requirement it checks."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import LRS, statement

VOIDED = "http://adlnet.gov/expapi/verbs/voided"
PASSED = "http://adlnet.gov/expapi/verbs/passed"


async def post(lrs: LRS, body: object, **headers: str):
    return await lrs.client.post("/xapi/statements", json=body, headers=headers or None)


async def get(lrs: LRS, **params: str):
    return await lrs.client.get("/xapi/statements", params=params)


# --- versions and headers ---------------------------------------------------------------------


async def test_version_header_required(lrs: LRS) -> None:
    """Communication 3.3: the LRS MUST reject requests without X-Experience-API-Version (400)."""
    response = await lrs.client.get("/xapi/statements", headers={"X-Experience-API-Version": ""})
    assert response.status_code == 400
    del lrs.client.headers["X-Experience-API-Version"]
    response = await lrs.client.get("/xapi/statements")
    assert response.status_code == 400
    assert "X-Experience-API-Version" in response.json()["error"]
    # ...and the error response still carries the version header (LRS_DEFAULT_XAPI_VERSION).
    assert response.headers["X-Experience-API-Version"] == "2.0.0"


@pytest.mark.parametrize("version", ["0.95", "0.9", "1.1.0", "3.0.0", "banana"])
async def test_unsupported_versions_rejected(lrs: LRS, version: str) -> None:
    """Communication 3.3: requests with an unsupported version are rejected with 400."""
    response = await lrs.client.get(
        "/xapi/statements", headers={"X-Experience-API-Version": version}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("version", "answered"),
    [
        ("1.0", "1.0.3"),
        ("1.0.0", "1.0.3"),
        ("1.0.1", "1.0.3"),
        ("1.0.3", "1.0.3"),
        ("2.0.0", "2.0.0"),
    ],
)
async def test_supported_versions_accepted(lrs: LRS, version: str, answered: str) -> None:
    """Communication 3.3: the LRS MUST include X-Experience-API-Version in every response."""
    response = await lrs.client.get(
        "/xapi/statements", headers={"X-Experience-API-Version": version}
    )
    assert response.status_code == 200
    assert response.headers["X-Experience-API-Version"] == answered


async def test_consistent_through_on_statement_responses(lrs: LRS) -> None:
    """Communication 2.1.3: X-Experience-API-Consistent-Through on every Statement GET."""
    response = await post(lrs, statement())
    assert "X-Experience-API-Consistent-Through" in response.headers
    response = await get(lrs)
    through = response.headers["X-Experience-API-Consistent-Through"]
    assert through.endswith("Z")
    stored = response.json()["statements"][0]["stored"]
    assert through >= stored


async def test_about_needs_no_version_or_auth(lrs: LRS) -> None:
    """Communication 2.8: GET /about returns the supported versions, without authentication."""
    response = await lrs.client.get("/xapi/about", headers={"Authorization": ""})
    assert response.status_code == 200
    body = response.json()
    assert "1.0.3" in body["version"] and "2.0.0" in body["version"]
    assert isinstance(body["extensions"], dict)


# --- PUT / POST ---------------------------------------------------------------------------------


async def test_put_stores_with_given_id(lrs: LRS) -> None:
    """Communication 2.1.1: PUT with statementId stores the statement, 204 No Content."""
    statement_id = str(uuid.uuid4())
    response = await lrs.client.put(
        "/xapi/statements", params={"statementId": statement_id}, json=statement()
    )
    assert response.status_code == 204
    stored = await get(lrs, statementId=statement_id)
    assert stored.status_code == 200
    assert stored.json()["id"] == statement_id


async def test_put_requires_uuid_statement_id(lrs: LRS) -> None:
    """Communication 2.1.1: statementId MUST be a UUID; anything else is 400 and stores nothing."""
    response = await lrs.client.put(
        "/xapi/statements", params={"statementId": "not-a-uuid"}, json=statement()
    )
    assert response.status_code == 400
    response = await lrs.client.put("/xapi/statements", json=statement())
    assert response.status_code == 400
    assert (await get(lrs)).json()["statements"] == []


async def test_put_id_mismatch_is_rejected(lrs: LRS) -> None:
    """Communication 2.1.1: a body id that differs from statementId is a bad request."""
    response = await lrs.client.put(
        "/xapi/statements",
        params={"statementId": str(uuid.uuid4())},
        json=statement(id=str(uuid.uuid4())),
    )
    assert response.status_code == 400


async def test_post_single_and_array_return_ids(lrs: LRS) -> None:
    """Communication 2.1.2: POST returns the array of statement ids, in order."""
    given = str(uuid.uuid4())
    response = await post(lrs, [statement(id=given), statement()])
    assert response.status_code == 200
    ids = response.json()
    assert len(ids) == 2 and ids[0] == given
    assert uuid.UUID(ids[1])
    single = await post(lrs, statement())
    assert len(single.json()) == 1


async def test_lrs_sets_stored_authority_version_timestamp(lrs: LRS) -> None:
    """Data 2.4.8/2.4.9/2.4.10: the LRS sets stored, authority, and version (1.0.0 if absent);
    timestamp defaults to stored."""
    (statement_id,) = (await post(lrs, statement())).json()
    stored = (await get(lrs, statementId=statement_id)).json()
    assert stored["stored"] and stored["timestamp"] == stored["stored"]
    assert stored["version"] == "1.0.0"
    assert stored["authority"]["objectType"] == "Agent"
    assert stored["authority"]["account"]["name"]


async def test_client_authority_is_replaced_by_credential(lrs: LRS) -> None:
    """Data 2.4.9: the LRS SHOULD overwrite authority with the agent of the credentials used."""
    forged = {"objectType": "Agent", "mbox": "mailto:forger@example.com"}
    (statement_id,) = (await post(lrs, statement(authority=forged))).json()
    stored = (await get(lrs, statementId=statement_id)).json()
    assert stored["authority"] != forged


async def test_same_id_same_content_is_noop(lrs: LRS) -> None:
    """Communication 2.1.1/2.1.2 with Data 2.3 comparison: re-sending an existing statement with
    the same content is accepted and changes nothing."""
    body = statement(id=str(uuid.uuid4()))
    assert (await post(lrs, body)).status_code == 200
    first = (await get(lrs, statementId=body["id"])).json()
    response = await lrs.client.put(
        "/xapi/statements", params={"statementId": body["id"]}, json=body
    )
    assert response.status_code == 204
    assert (await post(lrs, body)).status_code == 200
    assert (await get(lrs, statementId=body["id"])).json() == first
    assert len((await get(lrs)).json()["statements"]) == 1


async def test_same_id_different_content_is_409(lrs: LRS) -> None:
    """Communication 2.1.1: an existing id with different content MUST give 409 Conflict."""
    body = statement(id=str(uuid.uuid4()))
    await post(lrs, body)
    changed = {**body, "verb": {"id": PASSED}}
    response = await lrs.client.put(
        "/xapi/statements", params={"statementId": body["id"]}, json=changed
    )
    assert response.status_code == 409
    assert (await post(lrs, changed)).status_code == 409
    assert (await get(lrs, statementId=body["id"])).json()["verb"]["id"] != PASSED


async def test_batch_is_all_or_nothing_on_conflict(lrs: LRS) -> None:
    """Design 1.2: a batch with one conflicting statement stores none of the batch."""
    existing = statement(id=str(uuid.uuid4()))
    await post(lrs, existing)
    fresh = statement(id=str(uuid.uuid4()))
    response = await post(lrs, [fresh, {**existing, "verb": {"id": PASSED}}])
    assert response.status_code == 409
    assert (await get(lrs, statementId=fresh["id"])).status_code == 404


async def test_batch_is_all_or_nothing_on_invalid(lrs: LRS) -> None:
    """Communication 2.1.2: an invalid statement in a batch fails the request (400):
    nothing stored."""
    good = statement(id=str(uuid.uuid4()))
    bad = statement(actor={"objectType": "Agent", "name": "no identifier"})
    response = await post(lrs, [good, bad])
    assert response.status_code == 400
    assert "statements[1].actor" in response.json()["error"]
    assert (await get(lrs, statementId=good["id"])).status_code == 404


async def test_duplicate_ids_in_one_batch_rejected(lrs: LRS) -> None:
    """Communication 2.1.2: a batch holding two statements with the same id is rejected (400)."""
    statement_id = str(uuid.uuid4())
    response = await post(lrs, [statement(id=statement_id), statement(id=statement_id)])
    assert response.status_code == 400
    assert (await get(lrs)).json()["statements"] == []


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"{", b"[1,", b"", b"NaN", b'{"actor": NaN}', b"\xff\xfe", b"[]", b"null", b"42"]
)
async def test_malformed_bodies_are_400(lrs: LRS, raw: bytes) -> None:
    """Communication 2.1: malformed JSON or a body that is no statement gets 400, never a 500."""
    response = await lrs.client.post(
        "/xapi/statements", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]


async def test_wrong_content_type_is_400(lrs: LRS) -> None:
    """Communication 2.1.2: statements are application/json or multipart/mixed."""
    response = await lrs.client.post(
        "/xapi/statements", content=json.dumps(statement()), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 400


async def test_oversize_body_is_413(lrs: LRS) -> None:
    """Design 8: request bodies have a size limit; exceeding it changes nothing."""
    limit = lrs.services.settings.max_body_bytes
    response = await lrs.client.post(
        "/xapi/statements",
        content=b"[" + b" " * (limit + 10) + b"]",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "agent",
    [
        '{"$ne": null}',
        '{"mbox": {"$ne": "x"}}',
        '{"mbox": "mailto:a@b.c", "$where": "1"}',
        "not json",
        '{"name": "no ifi"}',
    ],
)
async def test_agent_parameter_cannot_smuggle_operators(lrs: LRS, agent: str) -> None:
    """Design 8: query parameters are typed before they reach MongoDB; operators are 400."""
    await post(lrs, statement())
    response = await get(lrs, agent=agent)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("verb", "not an iri"),
        ("activity", "nope"),
        ("registration", "1234"),
        ("since", "yesterday"),
        ("until", "2024-01-01T00:00:00-00:00"),
        ("limit", "-1"),
        ("limit", "ten"),
        ("format", "pretty"),
        ("ascending", "yes"),
        ("attachments", "1"),
        ("related_agents", "TRUE"),
        ("bogus", "1"),
        ("cursor", "!!!"),
    ],
)
async def test_invalid_query_parameters_are_400(lrs: LRS, name: str, value: str) -> None:
    """Communication 2.1.3: invalid or unknown GET parameters are rejected with 400."""
    response = await get(lrs, **{name: value})
    assert response.status_code == 400, response.text


async def test_single_get_rejects_other_filters(lrs: LRS) -> None:
    """Communication 2.1.3: with statementId/voidedStatementId only attachments and format."""
    (statement_id,) = (await post(lrs, statement())).json()
    response = await get(lrs, statementId=statement_id, verb=PASSED)
    assert response.status_code == 400
    response = await get(lrs, statementId=statement_id, voidedStatementId=statement_id)
    assert response.status_code == 400
    response = await get(lrs, statementId=statement_id, format="ids", attachments="false")
    assert response.status_code == 200


# --- auth and tenancy --------------------------------------------------------------------------


async def test_missing_or_bad_credentials_are_401(lrs: LRS) -> None:
    """Communication 4: requests without valid credentials get 401."""
    response = await lrs.client.get("/xapi/statements", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    response = await lrs.client.get(
        "/xapi/statements", headers={"Authorization": "Basic " + "a2V5Ondyb25n"}
    )
    assert response.status_code == 401
    response = await lrs.client.get("/xapi/statements", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401


async def test_missing_scope_is_403(lrs: LRS) -> None:
    """Communication 4.2 (scopes): a credential without the needed scope gets 403."""
    reader = await lrs.credential(["statements/read"])
    response = await lrs.client.post(
        "/xapi/statements", json=statement(), headers={"Authorization": reader}
    )
    assert response.status_code == 403
    writer = await lrs.credential(["statements/write"])
    response = await lrs.client.get("/xapi/statements", headers={"Authorization": writer})
    assert response.status_code == 403
    assert (
        await lrs.client.post(
            "/xapi/statements", json=statement(), headers={"Authorization": writer}
        )
    ).status_code == 200


async def test_all_read_scope_reads(lrs: LRS) -> None:
    """Scope all/read: read access to every resource."""
    reader = await lrs.credential(["all/read"])
    response = await lrs.client.get("/xapi/statements", headers={"Authorization": reader})
    assert response.status_code == 200


async def test_stores_are_isolated(lrs: LRS) -> None:
    """Design 2: a store never sees another store's statements."""
    other = await lrs.credential(["all"], store="other")
    (statement_id,) = (await post(lrs, statement())).json()
    response = await lrs.client.get("/xapi/statements", headers={"Authorization": other})
    assert response.json()["statements"] == []
    response = await lrs.client.get(
        "/xapi/statements", params={"statementId": statement_id}, headers={"Authorization": other}
    )
    assert response.status_code == 404
    # The same id may exist independently in the other store.
    body = (await get(lrs, statementId=statement_id)).json()
    response = await lrs.client.post(
        "/xapi/statements",
        json={**statement(verb={"id": PASSED}), "id": body["id"]},
        headers={"Authorization": other},
    )
    assert response.status_code == 200


async def test_read_mine_sees_only_own_statements(lrs: LRS) -> None:
    """Scope statements/read/mine: only statements whose authority is the caller."""
    mine = await lrs.credential(["statements/write", "statements/read/mine"], name="mine")
    await post(lrs, statement())
    response = await lrs.client.post(
        "/xapi/statements", json=statement(), headers={"Authorization": mine}
    )
    (own_id,) = response.json()
    listed = await lrs.client.get("/xapi/statements", headers={"Authorization": mine})
    assert [s["id"] for s in listed.json()["statements"]] == [own_id]
    everyone = (await get(lrs)).json()["statements"]
    assert len(everyone) == 2
    foreign = next(s["id"] for s in everyone if s["id"] != own_id)
    response = await lrs.client.get(
        "/xapi/statements", params={"statementId": foreign}, headers={"Authorization": mine}
    )
    assert response.status_code == 404


# --- voiding ----------------------------------------------------------------------------------


async def test_voiding_hides_statement_and_voided_id_returns_it(lrs: LRS) -> None:
    """Data 2.3.2 / Communication 2.1.4: voided statements are not returned by normal queries;
    voidedStatementId returns them; statementId gives 404."""
    (target,) = (await post(lrs, statement())).json()
    (voider,) = (
        await post(
            lrs,
            statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": target}),
        )
    ).json()
    assert (await get(lrs, statementId=target)).status_code == 404
    response = await get(lrs, voidedStatementId=target)
    assert response.status_code == 200 and response.json()["id"] == target
    listed = [s["id"] for s in (await get(lrs)).json()["statements"]]
    assert target not in listed and voider in listed
    assert (await get(lrs, voidedStatementId=voider)).status_code == 404


async def test_voiding_statement_cannot_be_voided(lrs: LRS) -> None:
    """Data 2.3.2: a voiding statement cannot itself be voided (400, nothing stored)."""
    (target,) = (await post(lrs, statement())).json()
    (voider,) = (
        await post(
            lrs,
            statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": target}),
        )
    ).json()
    response = await post(
        lrs, statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": voider})
    )
    assert response.status_code == 400
    assert (await get(lrs, statementId=voider)).status_code == 200


async def test_voiding_before_target_arrives(lrs: LRS) -> None:
    """Data 2.3.2: the LRS SHOULD NOT reject a voiding statement whose target is unknown; the
    target, once it arrives, is voided."""
    target = str(uuid.uuid4())
    await post(
        lrs, statement(verb={"id": VOIDED}, object={"objectType": "StatementRef", "id": target})
    )
    await post(lrs, statement(id=target))
    assert (await get(lrs, statementId=target)).status_code == 404
    assert (await get(lrs, voidedStatementId=target)).status_code == 200


# --- queries ----------------------------------------------------------------------------------


async def test_filters_agent_verb_activity_registration(lrs: LRS) -> None:
    """Communication 2.1.3: agent, verb, activity and registration filters."""
    registration = str(uuid.uuid4())
    other_actor = {"mbox": "mailto:other@example.com"}
    await post(
        lrs,
        [
            statement(),
            statement(actor=other_actor, verb={"id": PASSED}),
            statement(
                object={"id": "http://example.com/activities/quiz"},
                context={"registration": registration},
            ),
        ],
    )
    by_agent = await get(lrs, agent=json.dumps(other_actor))
    assert [s["verb"]["id"] for s in by_agent.json()["statements"]] == [PASSED]
    by_verb = await get(lrs, verb=PASSED)
    assert len(by_verb.json()["statements"]) == 1
    by_activity = await get(lrs, activity="http://example.com/activities/quiz")
    assert len(by_activity.json()["statements"]) == 1
    by_registration = await get(lrs, registration=registration.upper())
    assert len(by_registration.json()["statements"]) == 1


async def test_agent_filter_matches_object_agent(lrs: LRS) -> None:
    """Communication 2.1.3 agent: the Agent is the actor OR the object of the statement."""
    teacher = {"objectType": "Agent", "mbox": "mailto:teacher@example.com"}
    await post(lrs, statement(object=teacher))
    response = await get(lrs, agent=json.dumps(teacher))
    assert len(response.json()["statements"]) == 1


async def test_related_agents_and_activities(lrs: LRS) -> None:
    """Communication 2.1.3 related_agents / related_activities: include authority, instructor,
    team, context activities and SubStatement contents."""
    instructor = {"mbox": "mailto:instructor@example.com"}
    course = "http://example.com/courses/1"
    sub_actor = {"mbox": "mailto:sub@example.com"}
    await post(
        lrs,
        [
            statement(
                context={"instructor": instructor, "contextActivities": {"parent": {"id": course}}}
            ),
            statement(
                object={
                    "objectType": "SubStatement",
                    "actor": sub_actor,
                    "verb": {"id": PASSED},
                    "object": {"id": "http://example.com/sub-activity"},
                }
            ),
        ],
    )
    assert (await get(lrs, agent=json.dumps(instructor))).json()["statements"] == []
    assert (
        len(
            (await get(lrs, agent=json.dumps(instructor), related_agents="true")).json()[
                "statements"
            ]
        )
        == 1
    )
    assert (
        len(
            (await get(lrs, agent=json.dumps(sub_actor), related_agents="true")).json()[
                "statements"
            ]
        )
        == 1
    )
    assert (await get(lrs, activity=course)).json()["statements"] == []
    assert (
        len((await get(lrs, activity=course, related_activities="true")).json()["statements"]) == 1
    )
    sub = "http://example.com/sub-activity"
    assert len((await get(lrs, activity=sub, related_activities="true")).json()["statements"]) == 1


async def test_since_until_ascending_and_order(lrs: LRS) -> None:
    """Communication 2.1.3: since (exclusive), until (inclusive), newest first
    by default, or ascending."""
    ids = []
    for _ in range(3):
        ids += (await post(lrs, statement())).json()
    listed = (await get(lrs)).json()["statements"]
    assert [s["id"] for s in listed] == list(reversed(ids))
    ascending = (await get(lrs, ascending="true")).json()["statements"]
    assert [s["id"] for s in ascending] == ids
    stored = [s["stored"] for s in ascending]
    since = (await get(lrs, since=stored[0], ascending="true")).json()["statements"]
    assert [s["id"] for s in since] == ids[1:]
    until = (await get(lrs, until=stored[1], ascending="true")).json()["statements"]
    assert [s["id"] for s in until] == ids[:2]


async def test_paging_with_more_is_complete_and_stable(lrs: LRS) -> None:
    """Communication 2.1.3: limit and `more`: following more returns every statement exactly once,
    even when new statements arrive between pages."""
    ids = []
    for _ in range(7):
        ids += (await post(lrs, statement())).json()
    seen: list[str] = []
    response = await get(lrs, limit="3")
    while True:
        body = response.json()
        seen += [s["id"] for s in body["statements"]]
        if not body["more"]:
            break
        assert body["more"].startswith("/xapi/statements?")
        await post(lrs, statement())  # new statements must not shift the pages
        response = await lrs.client.get(body["more"])
    assert seen == list(reversed(ids))


def _referring(target: str, verb: str, **extra: Any) -> dict[str, Any]:
    """A statement whose object is a StatementRef to `target` (verb: an ADL verb's name)."""
    return statement(
        verb={"id": f"http://adlnet.gov/expapi/verbs/{verb}"},
        object={"objectType": "StatementRef", "id": target},
        **extra,
    )


async def test_statement_ref_targets_are_included_in_filtered_queries(lrs: LRS) -> None:
    """Communication 2.1.3 (Filter Conditions for StatementRefs): statements that target a
    matching statement through a StatementRef are returned with it."""
    (target,) = (await post(lrs, statement(verb={"id": PASSED}))).json()
    (referrer,) = (await post(lrs, _referring(target, "commented"))).json()
    (second,) = (await post(lrs, _referring(referrer, "shared"))).json()
    listed = {s["id"] for s in (await get(lrs, verb=PASSED)).json()["statements"]}
    assert listed == {target, referrer, second}


async def test_statement_ref_chains_hold_whatever_order_their_statements_arrive_in(
    lrs: LRS,
) -> None:
    """The same chain as above, sent last link first: each statement is stored before the one it
    references. Once all three are stored, the filter reaches through the whole chain, as if
    they had arrived in order (the first one's chain is brought up to date when the last link
    arrives, not only when its own target does)."""
    target, referrer, second = (str(uuid.uuid4()) for _ in range(3))
    await post(lrs, _referring(referrer, "shared", id=second))
    await post(lrs, _referring(target, "commented", id=referrer))
    await post(lrs, statement(id=target, verb={"id": PASSED}))
    listed = {s["id"] for s in (await get(lrs, verb=PASSED)).json()["statements"]}
    assert listed == {target, referrer, second}


async def test_formats_ids_and_canonical(lrs: LRS) -> None:
    """Communication 2.1.3 format: ids keeps identifiers only; canonical one language per map."""
    (statement_id,) = (await post(lrs, statement())).json()
    ids = (await get(lrs, statementId=statement_id, format="ids")).json()
    assert ids["actor"] == {"objectType": "Agent", "mbox": "mailto:learner@example.com"}
    assert ids["object"] == {"id": "http://example.com/activities/intro"}
    assert ids["verb"] == {"id": "http://adlnet.gov/expapi/verbs/experienced"}
    canonical = await lrs.client.get(
        "/xapi/statements",
        params={"statementId": statement_id, "format": "canonical"},
        headers={"Accept-Language": "fr, en;q=0.5"},
    )
    assert canonical.json()["object"]["definition"]["name"] == {"fr": "Intro FR"}
    exact = (await get(lrs, statementId=statement_id)).json()
    assert exact["object"]["definition"]["name"] == {"en-US": "Intro", "fr": "Intro FR"}


async def test_extension_keys_with_dots_and_dollars_round_trip(lrs: LRS) -> None:
    """Data 2.4.x extensions: any IRI key is stored and returned exactly."""
    extensions = {"http://example.com/ext/a.b": {"$value": 1, "nested.key": [1, 2]}}
    (statement_id,) = (await post(lrs, statement(result={"extensions": extensions}))).json()
    stored = (await get(lrs, statementId=statement_id)).json()
    assert stored["result"]["extensions"] == extensions


async def test_last_modified_header(lrs: LRS) -> None:
    """xAPI 2.0 Communication: Last-Modified carries the most recent stored of the returned."""
    (statement_id,) = (await post(lrs, statement())).json()
    for response in (await get(lrs, statementId=statement_id), await get(lrs)):
        assert response.headers["Last-Modified"].endswith("GMT")


async def test_head_on_statements(lrs: LRS) -> None:
    """Communication 1.x: HEAD is supported on every GET resource, with no body."""
    await post(lrs, statement())
    response = await lrs.client.head("/xapi/statements")
    assert response.status_code == 200
    assert response.content == b""
    assert "X-Experience-API-Consistent-Through" in response.headers


async def test_cors_preflight(lrs: LRS) -> None:
    """CORS for browser-based content players."""
    response = await lrs.client.options(
        "/xapi/statements",
        headers={
            "Origin": "http://player.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, X-Experience-API-Version",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "http://player.example.com")


# --- 1.0.3 alternate request syntax -------------------------------------------------------------


async def test_alternate_request_syntax_put_and_get(lrs: LRS) -> None:
    """Communication 1.3 (1.0.3): a form POST with method= carries headers, params and content."""
    statement_id = str(uuid.uuid4())
    form = {
        "Authorization": lrs.auth,
        "X-Experience-API-Version": "1.0.3",
        "Content-Type": "application/json",
        "statementId": statement_id,
        "content": json.dumps(statement()),
    }
    response = await lrs.client.post(
        "/xapi/statements?method=PUT",
        content="&".join(f"{k}={quote(v, safe='')}" for k, v in form.items()),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
    )
    assert response.status_code == 204, response.text
    form = {
        "Authorization": lrs.auth,
        "X-Experience-API-Version": "1.0.3",
        "statementId": statement_id,
    }
    response = await lrs.client.post(
        "/xapi/statements?method=GET",
        content="&".join(f"{k}={quote(v, safe='')}" for k, v in form.items()),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
    )
    assert response.status_code == 200
    assert response.json()["id"] == statement_id


async def test_alternate_request_syntax_rejects_extra_query_parameters(lrs: LRS) -> None:
    """Communication 1.3: no query parameter besides method."""
    response = await lrs.client.post(
        "/xapi/statements?method=GET&verb=x",
        content="X-Experience-API-Version=1.0.3",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400


async def test_duplicate_json_properties_rejected(lrs: LRS) -> None:
    """Data 2.2: a property used more than once in one object MUST be rejected (400)."""
    raw = json.dumps(statement())[:-1] + ', "verb": {"id": "http://example.com/v"}}'
    response = await lrs.client.post(
        "/xapi/statements", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_lone_surrogate_is_400(lrs: LRS) -> None:
    """Never a 500: JSON that decodes to a lone UTF-16 surrogate is not storable text."""
    raw = json.dumps(statement()).replace('"experienced"}', '"\\ud800"}')
    assert "\\ud800" in raw
    response = await lrs.client.post(
        "/xapi/statements", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
