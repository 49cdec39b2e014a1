"""A cmi5 launch sequence end to end against the LRS (cmi5 Quartz: 8.1 launch, 9.3 verbs,
9.6 context, 10.0 State "LMS.LaunchData", 11.0 Agent Profile "cmi5LearnerPreferences").

The LMS (a credential with `all`) writes the launch data and learner preferences and records
`launched`; the AU (a credential limited as a cmi5 fetch token typically is) reads both and
sends `initialized`, `completed`, `passed`, `terminated`. The test relies on documents and
statements only, not on canonical Activity definitions."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import LRS

AU_ID = "https://lms.example.org/xapi/activities/course-7/au-1"
PUBLISHER_AU_ID = "https://publisher.example.com/courses/geology/au/intro"
ACTOR = {"objectType": "Agent", "account": {"homePage": "https://lms.example.org", "name": "u-17"}}

CMI5_CATEGORY = {"id": "https://w3id.org/xapi/cmi5/context/categories/cmi5"}
MOVEON_CATEGORY = {"id": "https://w3id.org/xapi/cmi5/context/categories/moveon"}
SESSION_ID = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
MASTERY_SCORE = "https://w3id.org/xapi/cmi5/context/extensions/masteryscore"
VERBS = {
    name: f"http://adlnet.gov/expapi/verbs/{name}"
    for name in ("launched", "initialized", "completed", "passed", "terminated")
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cmi5_statement(
    verb: str,
    registration: str,
    context_template: dict[str, Any],
    *,
    result: dict[str, Any] | None = None,
    categories: tuple[dict[str, str], ...] = (CMI5_CATEGORY,),
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A cmi5 defined statement: the contextTemplate merged into the context (9.6.2), the
    registration (9.6.1) and the cmi5 category (9.6.2.1)."""
    context = copy.deepcopy(context_template)
    context["registration"] = registration
    activities = context.setdefault("contextActivities", {})
    activities["category"] = list(activities.get("category", [])) + list(categories)
    if extensions:
        context.setdefault("extensions", {}).update(extensions)
    statement: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "actor": ACTOR,
        "verb": {"id": VERBS[verb], "display": {"en-US": verb}},
        "object": {"objectType": "Activity", "id": AU_ID},
        "context": context,
        "timestamp": now(),
    }
    if result is not None:
        statement["result"] = result
    return statement


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_cmi5_launch_sequence(lrs: LRS, version: str) -> None:
    lms = lrs.headers(version=version)
    au = lrs.headers(
        await lrs.credential(
            ["statements/write", "statements/read/mine", "state", "profile"], name="cmi5 AU"
        ),
        version=version,
    )
    registration = str(uuid.uuid4())
    session = str(uuid.uuid4())
    actor = json.dumps(ACTOR)
    state_params = {
        "activityId": AU_ID,
        "agent": actor,
        "registration": registration,
        "stateId": "LMS.LaunchData",
    }
    preference_params = {"agent": actor, "profileId": "cmi5LearnerPreferences"}

    # --- LMS, before launch (cmi5 10.0: the LMS MUST write LMS.LaunchData first) ---------
    launch_data = {
        "contextTemplate": {
            "contextActivities": {"grouping": [{"objectType": "Activity", "id": PUBLISHER_AU_ID}]},
            "extensions": {SESSION_ID: session},
        },
        "launchMode": "Normal",
        "launchMethod": "AnyWindow",
        "moveOn": "CompletedAndPassed",
        "masteryScore": 0.8,
        "returnURL": "https://lms.example.org/courses/7",
    }
    response = await lrs.client.put(
        "/xapi/activities/state",
        params=state_params,
        json=launch_data,
        headers={**lms, "If-None-Match": "*"},
    )
    assert response.status_code == 204
    # cmi5 11.0: the learner's preferences live in the Agent Profile.
    preferences = {"languagePreference": "fr-FR,en-US", "audioPreference": "off"}
    response = await lrs.client.put(
        "/xapi/agents/profile",
        params=preference_params,
        json=preferences,
        headers={**lms, "If-None-Match": "*"},
    )
    assert response.status_code == 204
    launched = cmi5_statement(
        "launched",
        registration,
        launch_data["contextTemplate"],
        extensions={
            "https://w3id.org/xapi/cmi5/context/extensions/launchmode": "Normal",
            "https://w3id.org/xapi/cmi5/context/extensions/launchurl": "https://au.example.com/",
            "https://w3id.org/xapi/cmi5/context/extensions/moveon": "CompletedAndPassed",
        },
    )
    response = await lrs.client.post("/xapi/statements", json=launched, headers=lms)
    assert response.status_code == 200

    # --- the AU, after launch ------------------------------------------------------------
    response = await lrs.client.get("/xapi/activities/state", params=state_params, headers=au)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    read_launch_data = response.json()
    assert read_launch_data == launch_data
    template = read_launch_data["contextTemplate"]
    mastery = read_launch_data["masteryScore"]

    response = await lrs.client.get("/xapi/agents/profile", params=preference_params, headers=au)
    assert response.status_code == 200
    assert response.json()["languagePreference"].split(",")[0] == "fr-FR"

    # The AU keeps its own state next to the launch data, in the same registration.
    bookmark_params = {**state_params, "stateId": "bookmark"}
    response = await lrs.client.put(
        "/xapi/activities/state", params=bookmark_params, json={"page": 12}, headers=au
    )
    assert response.status_code == 204

    sent = [
        cmi5_statement("initialized", registration, template),
        cmi5_statement(
            "completed",
            registration,
            template,
            result={"completion": True, "duration": "PT12M30S"},
            categories=(CMI5_CATEGORY, MOVEON_CATEGORY),
        ),
        cmi5_statement(
            "passed",
            registration,
            template,
            result={"success": True, "score": {"scaled": 0.9}, "duration": "PT13M"},
            categories=(CMI5_CATEGORY, MOVEON_CATEGORY),
            extensions={MASTERY_SCORE: mastery},
        ),
        cmi5_statement("terminated", registration, template, result={"duration": "PT13M5S"}),
    ]
    for statement in sent:
        response = await lrs.client.post("/xapi/statements", json=statement, headers=au)
        assert response.status_code == 200, response.text
        assert response.json() == [statement["id"]]

    # --- the LMS reads the session back --------------------------------------------------
    response = await lrs.client.get(
        "/xapi/statements",
        params={"registration": registration, "agent": actor, "ascending": "true"},
        headers=lms,
    )
    assert response.status_code == 200
    statements = response.json()["statements"]
    assert [s["verb"]["id"] for s in statements] == [VERBS[v] for v in VERBS]
    assert [s["id"] for s in statements] == [launched["id"]] + [s["id"] for s in sent]
    for stored in statements:
        context = stored["context"]
        assert context["registration"] == registration
        assert context["extensions"][SESSION_ID] == session
        assert CMI5_CATEGORY in [{"id": c["id"]} for c in context["contextActivities"]["category"]]
        assert context["contextActivities"]["grouping"][0]["id"] == PUBLISHER_AU_ID
    passed = statements[3]
    assert passed["result"]["success"] is True
    assert passed["result"]["score"]["scaled"] >= mastery

    # The AU's token reads back only what it wrote (statements/read/mine).
    response = await lrs.client.get(
        "/xapi/statements", params={"registration": registration}, headers=au
    )
    assert sorted(s["id"] for s in response.json()["statements"]) == sorted(s["id"] for s in sent)

    # Launch data is untouched and both state documents are in the registration.
    response = await lrs.client.get(
        "/xapi/activities/state",
        params={k: v for k, v in state_params.items() if k != "stateId"},
        headers=lms,
    )
    assert sorted(response.json()) == ["LMS.LaunchData", "bookmark"]
    response = await lrs.client.get("/xapi/activities/state", params=state_params, headers=lms)
    assert response.json() == launch_data


async def test_learner_preferences_are_optional(lrs: LRS) -> None:
    """cmi5 11.0: an AU reading cmi5LearnerPreferences that the LMS never wrote gets a 404 (an
    absent document, Communication 3.2.s2.b4) and carries on with its defaults."""
    response = await lrs.client.get(
        "/xapi/agents/profile",
        params={"agent": json.dumps(ACTOR), "profileId": "cmi5LearnerPreferences"},
    )
    assert response.status_code == 404
