"""The State Resource over HTTP, requirement by requirement (xAPI 1.0.3 Communication 2.2
"Document Resources", 2.3 "State Resource", 3.1 "Concurrency", 3.2 "Error Codes"; xAPI 2.0
4.1.6.2 and 4.1.4). Each test names the requirement it checks (spec section and, where the
ADL conformance requirements list it, the XAPI-nnnnn id)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

import lrs.storage.documents as documents_module
from lrs.storage.documents import STATE, DocumentKey, NewContent
from tests.conftest import LRS

PATH = "/xapi/activities/state"
ACTIVITY = "http://example.com/activities/course-1"
AGENT = {"objectType": "Agent", "mbox": "mailto:learner@example.com", "name": "Learner"}


def params(**overrides: str | None) -> dict[str, str]:
    """State parameters for one document; keyword None removes a parameter."""
    values: dict[str, str | None] = {
        "activityId": ACTIVITY,
        "agent": json.dumps(AGENT),
        "stateId": "bookmark",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


async def put(lrs: LRS, body: object, content_type: str = "application/json", **p: str | None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await lrs.client.put(
        PATH, params=params(**p), content=content, headers={"Content-Type": content_type}
    )


async def post(lrs: LRS, body: object, content_type: str = "application/json", **p: str | None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await lrs.client.post(
        PATH, params=params(**p), content=content, headers={"Content-Type": content_type}
    )


async def get(lrs: LRS, **p: str | None) -> httpx.Response:
    return await lrs.client.get(PATH, params=params(**p))


def etag_of(content: bytes) -> str:
    return '"' + hashlib.sha1(content).hexdigest() + '"'


# --- storing and fetching -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_put_then_get_returns_document(lrs: LRS, version: str) -> None:
    """2.3.s3 (XAPI-00190, XAPI-00188, XAPI-00192): PUT stores the document (204), GET with
    stateId returns it (200) with its Content-Type; 3.1.s4.b1/b2/b4: the GET carries the
    quoted SHA-1 of the content as ETag; 2.2.s6.b1: and Last-Modified."""
    lrs.client.headers["X-Experience-API-Version"] = version
    body = b'{"page": 3, "note": "caf\xc3\xa9"}'
    response = await put(lrs, body)
    assert response.status_code == 204
    assert response.headers["X-Experience-API-Version"] == version

    response = await get(lrs)
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["ETag"] == etag_of(body)
    modified = parsedate_to_datetime(response.headers["Last-Modified"])
    assert abs(modified - datetime.now(UTC)) < timedelta(minutes=1)


async def test_binary_document_is_stored_byte_exact(lrs: LRS) -> None:
    """Communication 1.5.b1: documents can have any content type; the bytes and the type come
    back unchanged."""
    body = bytes(range(256)) * 4
    response = await put(lrs, body, content_type="application/octet-stream; x-custom=1")
    assert response.status_code == 204
    response = await get(lrs)
    assert response.content == body
    assert response.headers["Content-Type"] == "application/octet-stream; x-custom=1"
    assert response.headers["ETag"] == etag_of(body)


async def test_put_replaces_the_document(lrs: LRS) -> None:
    """3.1.s3: the State Resource permits PUT without concurrency headers, also over an
    existing document (the 409 rule applies to the profile resources only)."""
    assert (await put(lrs, {"a": 1})).status_code == 204
    response = await put(lrs, b"plain text", content_type="text/plain")
    assert response.status_code == 204
    response = await get(lrs)
    assert response.content == b"plain text"
    assert response.headers["Content-Type"].startswith("text/plain")


async def test_get_missing_document_is_404(lrs: LRS) -> None:
    """3.2.s2.b4: 404 Not Found for a request targeting a specific document that is absent."""
    response = await get(lrs, stateId="never-stored")
    assert response.status_code == 404
    assert "error" in response.json()


async def test_head_returns_headers_without_body(lrs: LRS) -> None:
    """Communication 1.1.s3.b1: HEAD answers as GET would, without the body."""
    await put(lrs, {"a": 1})
    response = await lrs.client.head(PATH, params=params())
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["ETag"] == etag_of(json.dumps({"a": 1}).encode())


async def test_documents_of_other_agents_and_activities_are_separate(lrs: LRS) -> None:
    """2.3.s3: a document exists in the context of Activity + Agent (+ registration); the Agent
    is identified by its IFI, so another name for the same mbox is the same Agent."""
    await put(lrs, {"who": "learner"})
    other_agent = json.dumps({"mbox": "mailto:other@example.com"})
    assert (await get(lrs, agent=other_agent)).status_code == 404
    assert (await get(lrs, activityId="http://example.com/other")).status_code == 404
    renamed = json.dumps({"mbox": "mailto:learner@example.com", "name": "Someone Else"})
    assert (await get(lrs, agent=renamed)).json() == {"who": "learner"}


async def test_registration_scopes_documents(lrs: LRS) -> None:
    """2.3.s3 (XAPI-00218, XAPI-00220): with a registration, the document belongs to that
    registration; without one, to no registration."""
    registration = str(uuid.uuid4())
    await put(lrs, {"with": True}, registration=registration)
    await put(lrs, {"with": False})
    assert (await get(lrs, registration=registration)).json() == {"with": True}
    assert (await get(lrs, registration=registration.upper())).json() == {"with": True}
    assert (await get(lrs)).json() == {"with": False}
    assert (await get(lrs, registration=str(uuid.uuid4()))).status_code == 404


async def test_stores_are_isolated(lrs: LRS) -> None:
    """Design 2 (store = tenant): a credential of another store never sees the document."""
    await put(lrs, {"secret": 1})
    other = await lrs.credential(["all"], store="other-store")
    response = await lrs.client.get(PATH, params=params(), headers=lrs.headers(other))
    assert response.status_code == 404


# --- POST: JSON merge ---------------------------------------------------------------------


async def test_post_creates_absent_document(lrs: LRS) -> None:
    """2.3.s3 (XAPI-00189): POST to an absent document stores it (204)."""
    response = await post(lrs, {"x": "foo"})
    assert response.status_code == 204
    assert (await get(lrs)).json() == {"x": "foo"}


async def test_post_merges_top_level_properties(lrs: LRS) -> None:
    """2.2.s7 / 2.2.s8.b2: POSTing a JSON object onto a JSON document sets each posted
    top-level property on the stored object (replacing whole values, not merging deeper),
    and answers 204."""
    await put(lrs, {"x": "foo", "y": "bar", "deep": {"keep": 1}})
    response = await post(lrs, {"x": "bash", "z": "faz", "deep": {"new": 2}})
    assert response.status_code == 204
    response = await get(lrs)
    assert response.json() == {"x": "bash", "y": "bar", "z": "faz", "deep": {"new": 2}}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["ETag"] == etag_of(response.content)


@pytest.mark.parametrize(
    ("stored", "stored_type", "posted", "posted_type"),
    [
        (b"plain", "text/plain", b'{"a": 1}', "application/json"),
        (b'{"a": 1}', "application/json", b"plain", "text/plain"),
        (b'{"a": 1}', "application/json", b"[1, 2]", "application/json"),
        (b"[1, 2]", "application/json", b'{"a": 1}', "application/json"),
        (b'{"a": 1}', "application/json", b"{not json", "application/json"),
    ],
)
async def test_post_merge_needs_json_objects_on_both_sides(
    lrs: LRS, stored: bytes, stored_type: str, posted: bytes, posted_type: str
) -> None:
    """2.2.s8.b1: if either document is not application/json or not a JSON object, the LRS
    MUST answer 400 and MUST NOT update the document."""
    assert (await put(lrs, stored, content_type=stored_type)).status_code == 204
    before = await get(lrs)
    response = await post(lrs, posted, content_type=posted_type)
    assert response.status_code == 400
    assert response.json()["error"]
    after = await get(lrs)
    assert after.content == stored
    assert after.headers["ETag"] == before.headers["ETag"]


async def test_json_body_that_is_not_json_is_rejected(lrs: LRS) -> None:
    """3.2.s3.b6: a body whose content does not match its declared Content-Type is a 400."""
    response = await put(lrs, b"{oops", content_type="application/json")
    assert response.status_code == 400
    assert (await get(lrs)).status_code == 404


# --- multiple documents -------------------------------------------------------------------


async def test_get_without_state_id_lists_ids(lrs: LRS) -> None:
    """2.3.s4 (XAPI-00193): GET without stateId returns the array of state ids of the context
    (200); 2.2.s6.b2: with Last-Modified of the newest; 3.1.s4.b1: and an ETag."""
    await put(lrs, {"n": 1}, stateId="one")
    await put(lrs, {"n": 2}, stateId="two")
    await put(lrs, {"n": 3}, stateId="three", activityId="http://example.com/elsewhere")
    response = await get(lrs, stateId=None)
    assert response.status_code == 200
    assert sorted(response.json()) == ["one", "two"]
    assert response.headers["ETag"] == etag_of(response.content)
    newest = (await get(lrs, stateId="two")).headers["Last-Modified"]
    assert response.headers["Last-Modified"] == newest


async def test_list_of_empty_context_is_empty_array(lrs: LRS) -> None:
    """2.3.s4: an unknown context has no state ids: 200 and []."""
    response = await get(lrs, stateId=None, activityId="http://example.com/nothing-here")
    assert response.status_code == 200
    assert response.json() == []
    assert "ETag" in response.headers


async def test_since_filters_ids_exclusively(lrs: LRS) -> None:
    """2.3.s4.table1.row4 (XAPI-00195, XAPI-00221): only ids of documents stored or updated
    after `since` (exclusive)."""
    await put(lrs, {"n": 1}, stateId="old")
    await asyncio.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.01)
    await put(lrs, {"n": 2}, stateId="new")

    response = await get(lrs, stateId=None, since=between)
    assert response.json() == ["new"]
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert sorted((await get(lrs, stateId=None, since=an_hour_ago)).json()) == ["new", "old"]
    assert (await get(lrs, stateId=None, since="2100-01-01T00:00:00Z")).json() == []

    # updating "old" makes it newer than `between` again
    await post(lrs, {"n": 3}, stateId="old")
    assert sorted((await get(lrs, stateId=None, since=between)).json()) == ["new", "old"]


async def test_list_honours_registration(lrs: LRS) -> None:
    """2.3.s4: the ids are those of Activity + Agent [+ registration if specified]."""
    registration = str(uuid.uuid4())
    await put(lrs, {}, stateId="in-registration", registration=registration)
    await put(lrs, {}, stateId="no-registration")
    assert (await get(lrs, stateId=None, registration=registration)).json() == ["in-registration"]
    assert sorted((await get(lrs, stateId=None)).json()) == ["in-registration", "no-registration"]


async def test_delete_single_document(lrs: LRS) -> None:
    """2.3.s3 (XAPI-00187, XAPI-00191): DELETE with stateId removes that document (204)."""
    await put(lrs, {"a": 1}, stateId="gone")
    await put(lrs, {"a": 2}, stateId="kept")
    response = await lrs.client.delete(PATH, params=params(stateId="gone"))
    assert response.status_code == 204
    assert (await get(lrs, stateId="gone")).status_code == 404
    assert (await get(lrs, stateId="kept")).status_code == 200
    # deleting what is not there is still a success
    response = await lrs.client.delete(PATH, params=params(stateId="gone"))
    assert response.status_code == 204


async def test_delete_without_state_id_deletes_the_context(lrs: LRS) -> None:
    """2.3.s5 (XAPI-00194): DELETE without stateId deletes all state of Activity + Agent
    [+ registration if specified] (204), and nothing outside it."""
    registration = str(uuid.uuid4())
    await put(lrs, {}, stateId="a")
    await put(lrs, {}, stateId="b", registration=registration)
    await put(lrs, {}, stateId="c", registration=str(uuid.uuid4()))
    await put(lrs, {}, stateId="other-activity", activityId="http://example.com/other")
    await put(lrs, {}, stateId="other-agent", agent=json.dumps({"openid": "http://id.example"}))

    response = await lrs.client.delete(PATH, params=params(stateId=None, registration=registration))
    assert response.status_code == 204
    assert sorted((await get(lrs, stateId=None)).json()) == ["a", "c"]

    response = await lrs.client.delete(PATH, params=params(stateId=None))
    assert response.status_code == 204
    assert (await get(lrs, stateId=None)).json() == []
    assert (
        await get(lrs, stateId="other-activity", activityId="http://example.com/other")
    ).json() == {}
    other_agent = json.dumps({"openid": "http://id.example"})
    assert (await get(lrs, stateId="other-agent", agent=other_agent)).status_code == 200


# --- bad input: 400, nothing changes ------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
@pytest.mark.parametrize("missing", ["activityId", "agent"])
async def test_missing_required_parameter(lrs: LRS, method: str, missing: str) -> None:
    """2.3.s3.table1 (XAPI-00207..00210, XAPI-00212..00215): activityId and agent are required
    for every method: 400."""
    response = await lrs.client.request(
        method,
        PATH,
        params=params(**{missing: None}),
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert missing in response.json()["error"]


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_state_id_required_for_writes(lrs: LRS, method: str) -> None:
    """2.3.s3.table1.row4 (XAPI-00206, XAPI-00211): PUT and POST need stateId: 400."""
    response = await lrs.client.request(
        method,
        PATH,
        params=params(stateId=None),
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "stateId" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
@pytest.mark.parametrize(
    "agent",
    [
        "not JSON",
        "true",
        '{"name": "no identifier"}',
        '{"mbox": "learner@example.com"}',
        '{"mbox": "mailto:a@example.com", "openid": "http://example.com/a"}',
        '{"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]}',
    ],
)
async def test_invalid_agent_rejected(lrs: LRS, method: str, agent: str) -> None:
    """2.3.s3.table1.row2 (XAPI-00196..00199): the agent parameter must be a valid Agent in
    JSON (one IFI; an anonymous Group has none): 400, and nothing is stored."""
    response = await lrs.client.request(
        method,
        PATH,
        params=params(agent=agent),
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]
    assert (await get(lrs, stateId=None)).json() == []


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
@pytest.mark.parametrize("registration", ["not-a-uuid", "true", "1234"])
async def test_invalid_registration_rejected(lrs: LRS, method: str, registration: str) -> None:
    """2.3.s3.table1.row3 (XAPI-00200..00203): registration must be a UUID: 400."""
    response = await lrs.client.request(
        method,
        PATH,
        params=params(registration=registration),
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "registration" in response.json()["error"]


@pytest.mark.parametrize("activity_id", ["not an iri", "example.com/no-scheme", ""])
async def test_activity_id_must_be_an_iri(lrs: LRS, activity_id: str) -> None:
    """2.3.s3.table1.row1: activityId is an Activity id (IRI): anything else is a 400."""
    response = await put(lrs, {"a": 1}, activityId=activity_id)
    assert response.status_code == 400
    assert "activityId" in response.json()["error"]


async def test_since_must_be_a_timestamp(lrs: LRS) -> None:
    """2.3.s4.table1.row4 (XAPI-00204): since must be a Timestamp: 400."""
    response = await get(lrs, stateId=None, since="not a timestamp")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "extra",
    [{"profileId": "x"}, {"StateId": "x"}, {"activityid": ACTIVITY}, {"limit": "1"}],
)
async def test_unknown_parameters_rejected(lrs: LRS, extra: dict[str, str]) -> None:
    """3.2.s3.b7 / b8: parameters the LRS does not recognise in this context, including ones
    that differ from a known one only in case, are a 400."""
    response = await lrs.client.put(
        PATH,
        params={**params(), **extra},
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert (await get(lrs)).status_code == 404


async def test_since_is_not_a_write_parameter(lrs: LRS) -> None:
    """3.2.s3.b7: `since` belongs to the multiple-document GET; on a DELETE it would widen or
    narrow what is deleted in a way the spec does not define, so it is a 400."""
    await put(lrs, {})
    response = await lrs.client.delete(PATH, params=params(since="2020-01-01T00:00:00Z"))
    assert response.status_code == 400
    assert (await get(lrs)).status_code == 200


async def test_repeated_parameter_rejected(lrs: LRS) -> None:
    """3.2.s2.b1: a repeated parameter is an invalid argument: 400."""
    query = httpx.QueryParams([*params().items(), ("stateId", "second")])
    response = await lrs.client.get(PATH, params=query)
    assert response.status_code == 400
    assert "repeated" in response.json()["error"]


async def test_oversized_document_is_413(lrs: LRS, monkeypatch: pytest.MonkeyPatch) -> None:
    """3.2.s3.b11: a document larger than the LRS accepts is a 413, and nothing is stored."""
    monkeypatch.setattr(documents_module, "MAX_CONTENT_BYTES", 10)
    response = await put(lrs, b"x" * 11, content_type="text/plain")
    assert response.status_code == 413
    assert (await get(lrs)).status_code == 404


# --- concurrency --------------------------------------------------------------------------


async def test_if_match_with_current_etag_succeeds(lrs: LRS) -> None:
    """3.1.s4.b5: a PUT with If-Match holding the current ETag is applied."""
    await put(lrs, {"v": 1})
    etag = (await get(lrs)).headers["ETag"]
    response = await lrs.client.put(
        PATH, params=params(), json={"v": 2}, headers={"If-Match": etag}
    )
    assert response.status_code == 204
    assert (await get(lrs)).json() == {"v": 2}


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
async def test_if_match_with_stale_etag_is_412(lrs: LRS, method: str) -> None:
    """3.1.s4.b5/b7 and b9-b12: If-Match with an ETag that is not current fails with 412
    and the document is not modified (unquoted and weak tags never match either)."""
    await put(lrs, {"v": 1})
    stale = (await get(lrs)).headers["ETag"]
    await put(lrs, {"v": 2})
    for tag in (stale, "1234", stale.strip('"'), f"W/{etag_of(b'{}')}"):
        response = await lrs.client.request(
            method, PATH, params=params(), json={"v": 3}, headers={"If-Match": tag}
        )
        assert response.status_code == 412, tag
        assert (await get(lrs)).json() == {"v": 2}


async def test_if_match_accepts_bare_sha1_and_lists(lrs: LRS) -> None:
    """RFC 2616 14.24 (3.1.s4.b5): If-Match may list several tags; one current tag suffices.
    The bare SHA-1 some clients send is accepted as that tag."""
    await put(lrs, {"v": 1})
    etag = (await get(lrs)).headers["ETag"]
    response = await lrs.client.put(
        PATH, params=params(), json={"v": 2}, headers={"If-Match": f'"nope", {etag}'}
    )
    assert response.status_code == 204
    etag = (await get(lrs)).headers["ETag"]
    response = await lrs.client.put(
        PATH, params=params(), json={"v": 3}, headers={"If-Match": etag.strip('"')}
    )
    assert response.status_code == 204


async def test_if_match_on_absent_document_is_412(lrs: LRS) -> None:
    """RFC 2616 14.24: If-Match (even "*") fails when there is no current document."""
    for tag in ("*", etag_of(b"{}")):
        response = await lrs.client.put(
            PATH, params=params(), json={"v": 1}, headers={"If-Match": tag}
        )
        assert response.status_code == 412
    assert (await get(lrs)).status_code == 404


async def test_if_none_match_star(lrs: LRS) -> None:
    """3.1.s4.b6 / b8: If-None-Match: * creates an absent document and fails with 412 when
    one exists, leaving it unchanged."""
    response = await lrs.client.put(
        PATH, params=params(), json={"v": 1}, headers={"If-None-Match": "*"}
    )
    assert response.status_code == 204
    for method in ("PUT", "POST"):
        response = await lrs.client.request(
            method, PATH, params=params(), json={"v": 2}, headers={"If-None-Match": "*"}
        )
        assert response.status_code == 412
    assert (await get(lrs)).json() == {"v": 1}


async def test_delete_with_current_etag(lrs: LRS) -> None:
    """3.1.s4.b7: DELETE with If-Match holding the current ETag deletes."""
    await put(lrs, {"v": 1})
    etag = (await get(lrs)).headers["ETag"]
    response = await lrs.client.delete(PATH, params=params(), headers={"If-Match": etag})
    assert response.status_code == 204
    assert (await get(lrs)).status_code == 404


async def test_racing_if_match_writers_cannot_both_win(lrs: LRS) -> None:
    """3.1.s1: concurrency control stops a client from writing over data it has not seen: of
    two writers holding the same ETag, exactly one succeeds, the other gets 412."""
    await put(lrs, {"v": 0})
    etag = (await get(lrs)).headers["ETag"]
    responses = await asyncio.gather(
        *(
            lrs.client.put(PATH, params=params(), json={"v": n}, headers={"If-Match": etag})
            for n in (1, 2)
        )
    )
    assert sorted(r.status_code for r in responses) == [204, 412]
    winner = 1 if responses[0].status_code == 204 else 2
    assert (await get(lrs)).json() == {"v": winner}


async def test_conditional_write_refuses_a_changed_document(lrs: LRS) -> None:
    """3.1.s1, storage level: a write based on a revision that has changed since it was read
    is refused, so a read-check-write sequence can never overwrite a newer document."""
    repository = lrs.services.documents
    key = DocumentKey(STATE, "race", ACTIVITY, "mbox:mailto:learner@example.com")
    first = await repository.modify(lrs.store, key, lambda _: NewContent(b"1", "text/plain"))
    second = await repository.replace_if_unchanged(
        lrs.store, key, first, NewContent(b"2", "text/plain")
    )
    assert second is not None
    assert (
        await repository.replace_if_unchanged(lrs.store, key, first, NewContent(b"3", "text/plain"))
        is None
    )
    assert await repository.create_if_absent(lrs.store, key, NewContent(b"4", "text/plain")) is None
    current = await repository.get(lrs.store, key)
    assert current is not None and current.content == b"2"


async def test_concurrent_merges_keep_every_key(lrs: LRS) -> None:
    """2.2.s7: each POST merges into the document as it stands: concurrent merges of different
    keys all end up in the document."""
    await put(lrs, {"start": True})
    await asyncio.gather(*(post(lrs, {f"k{n}": n}) for n in range(8)))
    stored = (await get(lrs)).json()
    assert stored == {"start": True, **{f"k{n}": n for n in range(8)}}


# --- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "can_read", "can_write"),
    [
        (["state"], True, True),
        (["all"], True, True),
        (["all/read"], True, False),
        (["profile"], False, False),
        (["statements/write", "statements/read"], False, False),
    ],
)
async def test_scopes(lrs: LRS, scopes: list[str], can_read: bool, can_write: bool) -> None:
    """Communication 4.2 / 3.2.s3.b10: `state` reads and writes state, `all/read` reads; a
    credential without permission gets 403 and changes nothing."""
    await put(lrs, {"v": 1})
    auth = await lrs.credential(scopes)
    headers = lrs.headers(auth)
    response = await lrs.client.get(PATH, params=params(), headers=headers)
    assert response.status_code == (200 if can_read else 403)
    for method in ("PUT", "POST", "DELETE"):
        response = await lrs.client.request(
            method,
            PATH,
            params=params(stateId=f"by-{method}"),
            json={"v": 2},
            headers=headers,
        )
        assert response.status_code == (204 if can_write else 403)
    ids = (await get(lrs, stateId=None)).json()
    assert sorted(ids) == (["bookmark", "by-POST", "by-PUT"] if can_write else ["bookmark"])


async def test_text_that_is_not_utf8_is_refused_not_a_500(lrs: LRS) -> None:
    """Communication 1.4.s1.b1: strings are UTF-8. A lone surrogate escape in the agent
    parameter is a 400; in a merged JSON document it stays escaped, so the result is still
    JSON (and never a 500)."""
    agent = '{"account": {"homePage": "http://lms.example.com", "name": "\\ud800"}}'
    response = await put(lrs, {"a": 1}, agent=agent)
    assert response.status_code == 400
    await put(lrs, {"a": "é"})
    response = await post(lrs, b'{"b": "\\ud800"}')
    assert response.status_code == 204
    merged = await get(lrs)
    assert merged.content == b'{"a":"\\u00e9","b":"\\ud800"}'
    assert json.loads(merged.content) == {"a": "é", "b": "\ud800"}


async def test_alternate_request_syntax(lrs: LRS) -> None:
    """Communication 1.3.s3 (xAPI 1.0.x): a form POST with method=PUT carries headers,
    parameters and the content as form fields; the LRS MUST support it."""
    form = {
        **params(),
        "content": '{"via": "form"}',
        "Content-Type": "application/json",
        "Authorization": lrs.auth,
        "X-Experience-API-Version": "1.0.3",
    }
    response = await lrs.client.post(
        PATH,
        params={"method": "PUT"},
        data=form,
        headers={"Authorization": "", "X-Experience-API-Version": ""},
    )
    assert response.status_code == 204, response.text
    response = await get(lrs)
    assert response.json() == {"via": "form"}
    assert response.headers["Content-Type"] == "application/json"
