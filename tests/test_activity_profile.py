"""The Activity Profile Resource over HTTP (xAPI 1.0.3 Communication 2.2, 2.7, 3.1, 3.2;
xAPI 2.0 4.1.6.6 and 4.1.4). Each test names the requirement it checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import LRS

PATH = "/xapi/activities/profile"
ACTIVITY = "http://example.com/activities/course-1"


def params(**overrides: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {"activityId": ACTIVITY, "profileId": "settings"}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


async def send(
    lrs: LRS,
    method: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    **p: str | None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await lrs.client.request(
        method,
        PATH,
        params=params(**p),
        content=content if method in ("PUT", "POST") else None,
        headers={"Content-Type": content_type, **(headers or {})},
    )


async def create(lrs: LRS, body: object, **p: str | None) -> httpx.Response:
    """A first PUT, as a careful client sends it: create only if absent."""
    response = await send(lrs, "PUT", body, {"If-None-Match": "*"}, **p)
    assert response.status_code == 204
    return response


async def get(lrs: LRS, **p: str | None) -> httpx.Response:
    return await lrs.client.get(PATH, params=params(**p))


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_put_then_get(lrs: LRS, version: str) -> None:
    """2.7.s3: PUT stores the profile document (204), GET with profileId returns it (200) with
    its Content-Type, the quoted SHA-1 ETag (3.1.s4.b1/b2/b4) and Last-Modified (2.2.s6.b1)."""
    lrs.client.headers["X-Experience-API-Version"] = version
    body = b"<profile>binary-ish \x00\xff</profile>"
    await create(lrs, body, content_type="application/xml")
    response = await get(lrs)
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["Content-Type"] == "application/xml"
    assert response.headers["ETag"] == '"' + hashlib.sha1(body).hexdigest() + '"'
    assert response.headers["Last-Modified"].endswith("GMT")


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_put_without_precondition_on_missing_document_is_400_communication_3_1(
    lrs: LRS, version: str
) -> None:
    """1.0.3 3.1.s3.b1 (and 2.0.0's requirements for Learning Record Providers): a PUT to a
    profile resource MUST carry If-Match or If-None-Match. Without either, on a document that
    does not exist yet, the LRS answers 400 naming the headers, and creates nothing."""
    lrs.client.headers["X-Experience-API-Version"] = version
    response = await send(lrs, "PUT", {"a": 1})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "If-Match" in message and "If-None-Match" in message
    assert (await get(lrs)).status_code == 404
    assert (await send(lrs, "PUT", {"a": 1}, {"If-None-Match": "*"})).status_code == 204
    assert (await get(lrs)).json() == {"a": 1}


async def test_put_without_precondition_on_existing_document_is_409(lrs: LRS) -> None:
    """3.1.s4.b13-b15: a PUT without If-Match/If-None-Match on an existing document MUST get
    409, a response explaining to check the current state and set If-Match with the current
    ETag, and MUST NOT modify the document."""
    await create(lrs, {"a": 1})
    response = await send(lrs, "PUT", {"a": 2})
    assert response.status_code == 409
    message = response.json()["error"]
    assert "If-Match" in message and "ETag" in message
    assert (await get(lrs)).json() == {"a": 1}


async def test_put_with_current_etag_replaces(lrs: LRS) -> None:
    """3.1.s4.b5: If-Match with the current ETag lets the PUT replace the document."""
    await create(lrs, {"a": 1})
    etag = (await get(lrs)).headers["ETag"]
    response = await send(lrs, "PUT", {"b": 2}, {"If-Match": etag})
    assert response.status_code == 204
    assert (await get(lrs)).json() == {"b": 2}


async def test_put_with_stale_etag_is_412(lrs: LRS) -> None:
    """3.1.s4.b5, b9, b10: If-Match with another ETag: 412, document unchanged."""
    await create(lrs, {"a": 1})
    response = await send(lrs, "PUT", {"b": 2}, {"If-Match": '"' + "0" * 40 + '"'})
    assert response.status_code == 412
    assert (await get(lrs)).json() == {"a": 1}


async def test_if_none_match_star_on_existing_is_412(lrs: LRS) -> None:
    """3.1.s4.b6, b9, b10: If-None-Match: * when the document exists: 412, unchanged."""
    await create(lrs, {"a": 1})
    response = await send(lrs, "PUT", {"b": 2}, {"If-None-Match": "*"})
    assert response.status_code == 412
    assert (await get(lrs)).json() == {"a": 1}


async def test_post_merges_without_preconditions(lrs: LRS) -> None:
    """2.2.s7: POST merges JSON objects; 3.1.s3.b2 only recommends (SHOULD*) precondition
    headers for POST, so a plain POST is accepted."""
    await create(lrs, {"x": "foo", "y": "bar"})
    response = await send(lrs, "POST", {"x": "bash", "z": "faz"})
    assert response.status_code == 204
    assert (await get(lrs)).json() == {"x": "bash", "y": "bar", "z": "faz"}


async def test_post_with_stale_etag_is_412(lrs: LRS) -> None:
    """3.1.s4.b7, b11, b12: POST with a failing If-Match: 412 and no change."""
    await create(lrs, {"x": "foo"})
    response = await send(lrs, "POST", {"x": "bar"}, {"If-Match": '"abc"'})
    assert response.status_code == 412
    assert (await get(lrs)).json() == {"x": "foo"}


async def test_post_onto_non_json_document_is_400(lrs: LRS) -> None:
    """2.2.s8.b1: merging into a document that is not application/json: 400, unchanged."""
    await create(lrs, b"plain", content_type="text/plain")
    response = await send(lrs, "POST", {"x": 1})
    assert response.status_code == 400
    assert (await get(lrs)).content == b"plain"


async def test_delete(lrs: LRS) -> None:
    """2.7.s3: DELETE removes the document (204); with a stale If-Match it is a 412 (3.1.s4.b7)
    and the document stays."""
    await create(lrs, {"a": 1})
    response = await send(lrs, "DELETE", headers={"If-Match": '"stale"'})
    assert response.status_code == 412
    assert (await get(lrs)).status_code == 200
    etag = (await get(lrs)).headers["ETag"]
    response = await send(lrs, "DELETE", headers={"If-Match": etag})
    assert response.status_code == 204
    assert (await get(lrs)).status_code == 404


async def test_delete_needs_profile_id(lrs: LRS) -> None:
    """2.7.s3: the Activity Profile Resource deletes single documents only: DELETE without
    profileId is a 400, and nothing is deleted."""
    await create(lrs, {"a": 1})
    response = await send(lrs, "DELETE", profileId=None)
    assert response.status_code == 400
    assert (await get(lrs)).status_code == 200


async def test_list_ids_with_since(lrs: LRS) -> None:
    """2.7.s4: GET without profileId returns the profile ids of the Activity (200); with
    `since`, only those stored or updated after it (exclusive); 2.2.s6.b2: Last-Modified."""
    await create(lrs, {}, profileId="old")
    await create(lrs, {}, profileId="elsewhere", activityId="http://example.com/other")
    await asyncio.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.01)
    await create(lrs, {}, profileId="new")

    response = await get(lrs, profileId=None)
    assert response.status_code == 200
    assert sorted(response.json()) == ["new", "old"]
    assert "ETag" in response.headers and "Last-Modified" in response.headers
    assert (await get(lrs, profileId=None, since=between)).json() == ["new"]
    assert (await get(lrs, profileId=None, since="not a timestamp")).status_code == 400
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert sorted((await get(lrs, profileId=None, since=earlier)).json()) == ["new", "old"]


async def test_get_absent_document_is_404(lrs: LRS) -> None:
    """3.2.s2.b4: a request for a specific absent document: 404."""
    assert (await get(lrs, profileId="nothing")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
async def test_activity_id_required(lrs: LRS, method: str) -> None:
    """2.7.s3.table1.row1: activityId is required: 400."""
    response = await send(lrs, method, {}, activityId=None)
    assert response.status_code == 400
    assert "activityId" in response.json()["error"]


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_profile_id_required_for_writes(lrs: LRS, method: str) -> None:
    """2.7.s3.table1.row2: profileId is required to store a document: 400."""
    response = await send(lrs, method, {}, profileId=None)
    assert response.status_code == 400


@pytest.mark.parametrize("activity_id", ["not an IRI", "/relative/path"])
async def test_activity_id_must_be_an_iri(lrs: LRS, activity_id: str) -> None:
    """2.7.s3.table1.row1: activityId is an IRI: anything else is a 400."""
    response = await send(lrs, "PUT", {}, activityId=activity_id)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "extra",
    [
        {"agent": '{"mbox": "mailto:a@example.com"}'},
        {"registration": "6fbd600f-d17c-4c74-801a-2ec2e53231e7"},
        {"stateId": "x"},
        {"ProfileId": "x"},
    ],
)
async def test_parameters_of_other_resources_rejected(lrs: LRS, extra: dict[str, str]) -> None:
    """3.2.s3.b7 / b8: parameters not recognised for this resource (agent, registration and
    stateId belong to the State Resource; case matters): 400, nothing stored."""
    response = await lrs.client.put(
        PATH, params={**params(), **extra}, json={}, headers={"If-None-Match": "*"}
    )
    assert response.status_code == 400
    assert (await get(lrs)).status_code == 404


@pytest.mark.parametrize(
    ("scopes", "can_read", "can_write"),
    [
        (["profile"], True, True),
        (["all/read"], True, False),
        (["state"], False, False),
        (["statements/read"], False, False),
    ],
)
async def test_scopes(lrs: LRS, scopes: list[str], can_read: bool, can_write: bool) -> None:
    """Communication 4.2 / 3.2.s3.b10: `profile` reads and writes profiles, `all/read` reads;
    otherwise 403 and nothing changes."""
    await create(lrs, {"v": 1})
    headers = lrs.headers(await lrs.credential(scopes))
    response = await lrs.client.get(PATH, params=params(), headers=headers)
    assert response.status_code == (200 if can_read else 403)
    response = await lrs.client.put(
        PATH,
        params=params(profileId="new"),
        json={"v": 2},
        headers={**headers, "If-None-Match": "*"},
    )
    assert response.status_code == (204 if can_write else 403)
    response = await lrs.client.delete(PATH, params=params(), headers=headers)
    assert response.status_code == (204 if can_write else 403)
    expected = ["new"] if can_write else ["settings"]
    assert (await get(lrs, profileId=None)).json() == expected
