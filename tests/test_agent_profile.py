"""The Agent Profile Resource over HTTP (xAPI 1.0.3 Communication 2.2, 2.6, 3.1, 3.2;
xAPI 2.0 4.1.6.5 and 4.1.4). Each test names the requirement it checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import LRS

PATH = "/xapi/agents/profile"
AGENT = {"objectType": "Agent", "account": {"homePage": "http://lms.example.com", "name": "42"}}


def params(**overrides: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {"agent": json.dumps(AGENT), "profileId": "preferences"}
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


async def get(lrs: LRS, **p: str | None) -> httpx.Response:
    return await lrs.client.get(PATH, params=params(**p))


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_put_then_get(lrs: LRS, version: str) -> None:
    """2.6.s3: PUT stores the profile of the Agent (204); GET returns it byte-exact (200) with
    Content-Type, ETag (3.1.s4.b1/b2/b4) and Last-Modified (2.2.s6.b1)."""
    lrs.client.headers["X-Experience-API-Version"] = version
    body = json.dumps({"languagePreference": "fr-FR,en-US", "audioPreference": "off"}).encode()
    response = await send(lrs, "PUT", body, {"If-None-Match": "*"})
    assert response.status_code == 204
    response = await get(lrs)
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["ETag"] == '"' + hashlib.sha1(body).hexdigest() + '"'
    assert response.headers["Content-Type"] == "application/json"
    assert "Last-Modified" in response.headers


async def test_profiles_belong_to_the_agent_identifier(lrs: LRS) -> None:
    """2.6.s3: documents are stored in the context of the Agent, identified by its IFI: the
    same account with another name is the same Agent; another account is not."""
    await send(lrs, "PUT", {"a": 1}, {"If-None-Match": "*"})
    same = json.dumps({**AGENT, "name": "A Name"})
    assert (await get(lrs, agent=same)).json() == {"a": 1}
    other = json.dumps({"account": {"homePage": "http://lms.example.com", "name": "43"}})
    assert (await get(lrs, agent=other)).status_code == 404


async def test_identified_group_identifier_can_hold_profiles(lrs: LRS) -> None:
    """2.6.s3 note: a Learning Record Provider may store data against an Identified Group by
    using the Group's identifier within an Agent Object; both forms name the same profiles."""
    group = {"objectType": "Group", "mbox": "mailto:team@example.com"}
    response = await send(
        lrs, "PUT", {"team": True}, {"If-None-Match": "*"}, agent=json.dumps(group)
    )
    assert response.status_code == 204
    as_agent = json.dumps({"mbox": "mailto:team@example.com"})
    assert (await get(lrs, agent=as_agent)).json() == {"team": True}


async def test_put_over_existing_without_precondition_is_409(lrs: LRS) -> None:
    """3.1.s4.b13-b15: PUT without If-Match/If-None-Match over an existing profile: 409 with
    an explanation, no modification."""
    await send(lrs, "PUT", {"a": 1}, {"If-None-Match": "*"})
    response = await send(lrs, "PUT", {"a": 2})
    assert response.status_code == 409
    assert "If-Match" in response.json()["error"]
    assert (await get(lrs)).json() == {"a": 1}


async def test_if_match_and_if_none_match(lrs: LRS) -> None:
    """3.1.s4.b5, b6, b9, b10: If-Match with the current ETag replaces; a stale one and
    If-None-Match: * over an existing document are 412 and change nothing."""
    await send(lrs, "PUT", {"a": 1}, {"If-None-Match": "*"})
    etag = (await get(lrs)).headers["ETag"]
    assert (await send(lrs, "PUT", {"a": 2}, {"If-Match": etag})).status_code == 204
    assert (await send(lrs, "PUT", {"a": 3}, {"If-Match": etag})).status_code == 412
    assert (await send(lrs, "PUT", {"a": 4}, {"If-None-Match": "*"})).status_code == 412
    assert (await get(lrs)).json() == {"a": 2}


async def test_post_merge_and_delete(lrs: LRS) -> None:
    """2.2.s7: POST merges top-level properties; 2.6.s3: DELETE removes the document (204)."""
    await send(lrs, "POST", {"languagePreference": "en-US"})
    await send(lrs, "POST", {"audioPreference": "on"})
    assert (await get(lrs)).json() == {"languagePreference": "en-US", "audioPreference": "on"}
    assert (await send(lrs, "DELETE")).status_code == 204
    assert (await get(lrs)).status_code == 404


async def test_list_ids_with_since(lrs: LRS) -> None:
    """2.6.s4: GET without profileId returns the Agent's profile ids; `since` keeps those
    stored or updated after it (exclusive); 2.2.s6.b2: Last-Modified of the newest."""
    await send(lrs, "PUT", {}, {"If-None-Match": "*"}, profileId="first")
    await asyncio.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.01)
    await send(lrs, "PUT", {}, {"If-None-Match": "*"}, profileId="second")
    response = await get(lrs, profileId=None)
    assert sorted(response.json()) == ["first", "second"]
    assert (
        response.headers["Last-Modified"]
        == (await get(lrs, profileId="second")).headers["Last-Modified"]
    )
    assert (await get(lrs, profileId=None, since=between)).json() == ["second"]


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
async def test_agent_required(lrs: LRS, method: str) -> None:
    """2.6.s3.table1.row1: agent is required: 400."""
    response = await send(lrs, method, {}, agent=None)
    assert response.status_code == 400
    assert "agent" in response.json()["error"]


@pytest.mark.parametrize(
    "agent",
    [
        "not JSON",
        "[]",
        '{"account": {"homePage": "http://lms.example.com"}}',
        '{"mbox_sha1sum": "not-a-sha1"}',
        '{"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]}',
    ],
)
async def test_invalid_agent_rejected(lrs: LRS, agent: str) -> None:
    """2.6.s3.table1.row1: the agent must be a valid Agent Object in JSON: 400, and nothing
    is stored."""
    response = await send(lrs, "PUT", {"a": 1}, agent=agent)
    assert response.status_code == 400
    assert response.json()["error"]
    assert (await get(lrs, profileId=None)).json() == []


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
async def test_profile_id_required(lrs: LRS, method: str) -> None:
    """2.6.s3.table1.row2: profileId is required to store or delete: 400."""
    response = await send(lrs, method, {}, profileId=None)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "extra", [{"activityId": "http://example.com/a"}, {"Agent": "{}"}, {"since": "x"}]
)
async def test_unknown_parameters_rejected(lrs: LRS, extra: dict[str, str]) -> None:
    """3.2.s3.b7 / b8: parameters not recognised in this context: 400."""
    response = await lrs.client.put(PATH, params={**params(), **extra}, json={})
    assert response.status_code == 400
    assert (await get(lrs)).status_code == 404


async def test_scope_profile_required(lrs: LRS) -> None:
    """Communication 4.2 / 3.2.s3.b10: without `profile` (or `all`) writing is a 403."""
    headers = lrs.headers(await lrs.credential(["state", "statements/write"]))
    response = await lrs.client.put(PATH, params=params(), json={}, headers=headers)
    assert response.status_code == 403
    assert (await get(lrs)).status_code == 404
