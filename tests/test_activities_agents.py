"""The Activities and Agents resources (xAPI 1.0.3 Communication 2.4, 2.5, 4.2 `define`;
Data 2.4.4.1; xAPI 2.0 4.1.6.3, 4.1.6.4), and the canonical definitions gathered from
statements. Each test names the requirement it checks.

The statements write path calls `ActivityRepository.record_from_statements` with the stored
statements; most tests here call it directly, as that path does."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pytest

from lrs.storage.activities import merge_definition
from tests.conftest import LRS, statement

ACTIVITY = "http://example.com/activities/quiz"
LEARNER = {"objectType": "Agent", "mbox": "mailto:learner@example.com", "name": "Learner"}


def about(activity: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return statement(object=activity, actor=LEARNER, **overrides)


def quiz(**definition: Any) -> dict[str, Any]:
    return {"objectType": "Activity", "id": ACTIVITY, "definition": definition}


async def record(lrs: LRS, statements: list[dict[str, Any]], can_define: bool = True) -> None:
    await lrs.services.activities.record_from_statements(lrs.store, statements, can_define)


async def get_activity(lrs: LRS, activity_id: str = ACTIVITY, **headers: str):
    return await lrs.client.get(
        "/xapi/activities", params={"activityId": activity_id}, headers=headers or None
    )


# --- Activities resource --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_unknown_activity_still_returns_an_activity_object(lrs: LRS, version: str) -> None:
    """2.5.s2.b1: without a canonical definition the LRS SHOULD* still return an Activity
    Object (200); Communication 2.5 "has Concurrency controls": the GET carries an ETag."""
    response = await lrs.client.get(
        "/xapi/activities",
        params={"activityId": "http://example.com/never-seen"},
        headers={"X-Experience-API-Version": version},
    )
    assert response.status_code == 200
    assert response.json() == {"objectType": "Activity", "id": "http://example.com/never-seen"}
    assert response.headers["ETag"] == '"' + hashlib.sha1(response.content).hexdigest() + '"'


async def test_definition_gathered_from_statements(lrs: LRS) -> None:
    """2.5.s1: GET returns the complete Activity Object the LRS holds: the definition from the
    statement's object, SubStatement object and context activities."""
    sub = {
        "objectType": "SubStatement",
        "actor": LEARNER,
        "verb": {"id": "http://example.com/verbs/plans"},
        "object": {
            "id": "http://example.com/activities/sub",
            "definition": {"name": {"en-US": "Sub"}},
        },
    }
    parent = {
        "id": "http://example.com/activities/course",
        "definition": {"type": "http://adlnet.gov/expapi/activities/course"},
    }
    await record(
        lrs,
        [
            about(
                quiz(name={"en-US": "Quiz"}, type="http://adlnet.gov/expapi/activities/assessment")
            ),
            statement(
                actor=LEARNER, object=sub, context={"contextActivities": {"parent": [parent]}}
            ),
        ],
    )
    response = await get_activity(lrs)
    assert response.json() == {
        "objectType": "Activity",
        "id": ACTIVITY,
        "definition": {
            "name": {"en-US": "Quiz"},
            "type": "http://adlnet.gov/expapi/activities/assessment",
        },
    }
    assert (await get_activity(lrs, "http://example.com/activities/sub")).json()["definition"] == {
        "name": {"en-US": "Sub"}
    }
    course = await get_activity(lrs, "http://example.com/activities/course")
    assert course.json()["definition"] == parent["definition"]
    assert "Last-Modified" in course.headers


async def test_definitions_merge_across_statements(lrs: LRS) -> None:
    """Data 2.4.4.1.s4.b3/b4: with authority to define, a differing definition updates the
    canonical one: languages add up in language maps, corrections replace their entry,
    extensions merge by key."""
    await record(lrs, [about(quiz(name={"en-US": "Quizz"}, extensions={"http://x.org/a": 1}))])
    await record(
        lrs,
        [
            about(quiz(name={"fr-FR": "Questionnaire"}, description={"en-US": "Ten questions"})),
            about(quiz(name={"en-US": "Quiz"}, extensions={"http://x.org/b": 2})),
        ],
    )
    definition = (await get_activity(lrs)).json()["definition"]
    assert definition == {
        "name": {"en-US": "Quiz", "fr-FR": "Questionnaire"},
        "description": {"en-US": "Ten questions"},
        "extensions": {"http://x.org/a": 1, "http://x.org/b": 2},
    }


async def test_within_a_batch_the_later_statement_wins_even_back_to_the_canonical(
    lrs: LRS,
) -> None:
    """A batch that changes a definition and then sets it back leaves it as it was; one whose
    first statement repeats the canonical definition and whose second changes it takes the
    change (statements that repeat what is canonical are skipped without a copy)."""
    await record(lrs, [about(quiz(name={"en-US": "Quiz"}))])
    await record(lrs, [about(quiz(name={"en-US": "Changed"})), about(quiz(name={"en-US": "Quiz"}))])
    assert (await get_activity(lrs)).json()["definition"] == {"name": {"en-US": "Quiz"}}
    await record(
        lrs,
        [
            about(quiz(name={"en-US": "Quiz"})),
            about(quiz(name={"en-US": "Quiz"}, description={"en-US": "Ten questions"})),
            about(quiz(name={"en-US": "Quiz"}, description={"en-US": "Ten questions"})),
        ],
    )
    assert (await get_activity(lrs)).json()["definition"] == {
        "name": {"en-US": "Quiz"},
        "description": {"en-US": "Ten questions"},
    }


async def test_concurrent_batches_lose_no_language(lrs: LRS) -> None:
    """Data 2.4.4.1.s4.b3: every authorised update reaches the canonical definition, also when
    batches are stored at the same moment (each merge is conditional on what it read)."""
    await record(lrs, [about(quiz(name={"en": "Quiz"}))])
    languages = ["fr", "de", "es", "it", "nl", "pt"]
    await asyncio.gather(
        *(record(lrs, [about(quiz(name={tag: f"Quiz ({tag})"}))]) for tag in languages)
    )
    name = (await get_activity(lrs)).json()["definition"]["name"]
    assert sorted(name) == sorted(["en", *languages])


async def test_correct_responses_are_not_changed(lrs: LRS) -> None:
    """Data 2.4.4.1.s4.b5: the LRS SHOULD NOT make significant changes to a canonical
    definition, e.g. to correct responses; new choices and descriptions still merge."""
    first = quiz(
        interactionType="choice",
        correctResponsesPattern=["a"],
        choices=[{"id": "a", "description": {"en-US": "A"}}],
    )
    second = quiz(
        interactionType="fill-in",
        correctResponsesPattern=["b"],
        choices=[
            {"id": "a", "description": {"de": "A (de)"}},
            {"id": "b", "description": {"en-US": "B"}},
        ],
    )
    await record(lrs, [about(first)])
    await record(lrs, [about(second)])
    definition = (await get_activity(lrs)).json()["definition"]
    assert definition["interactionType"] == "choice"
    assert definition["correctResponsesPattern"] == ["a"]
    assert definition["choices"] == [
        {"id": "a", "description": {"en-US": "A", "de": "A (de)"}},
        {"id": "b", "description": {"en-US": "B"}},
    ]


async def test_without_define_scope_only_new_activities_are_created(lrs: LRS) -> None:
    """Communication 4.2 `define`: without it, ids are saved but the LRS SHOULD NOT update its
    canonical representation; an Activity never seen before is still created."""
    await record(lrs, [about(quiz(name={"en-US": "Quiz"}))], can_define=False)
    assert (await get_activity(lrs)).json()["definition"] == {"name": {"en-US": "Quiz"}}
    await record(lrs, [about(quiz(name={"en-US": "Hijacked", "fr": "Détourné"}))], can_define=False)
    assert (await get_activity(lrs)).json()["definition"] == {"name": {"en-US": "Quiz"}}
    await record(lrs, [about(quiz(name={"fr": "Questionnaire"}))], can_define=True)
    assert (await get_activity(lrs)).json()["definition"] == {
        "name": {"en-US": "Quiz", "fr": "Questionnaire"}
    }


async def test_activity_without_definition_does_not_block_a_later_definition(lrs: LRS) -> None:
    """Communication 4.2 `define`: a bare reference teaches nothing, so a later statement
    without `define` can still introduce the definition."""
    await record(lrs, [about({"id": ACTIVITY})], can_define=False)
    await record(lrs, [about(quiz(name={"en-US": "Quiz"}))], can_define=False)
    assert (await get_activity(lrs)).json()["definition"] == {"name": {"en-US": "Quiz"}}


async def test_accept_language_selects_one_language(lrs: LRS) -> None:
    """Communication 2.1.3.s4.b5 applied to the Activities resource: with Accept-Language each
    language map is reduced to the most relevant entry; without it, the full maps."""
    await record(
        lrs,
        [
            about(
                quiz(
                    name={"en-US": "Quiz", "fr-FR": "Questionnaire", "de": "Test"},
                    description={"en-US": "About", "fr-FR": "À propos"},
                    interactionType="choice",
                    choices=[{"id": "a", "description": {"en-US": "Yes", "fr-FR": "Oui"}}],
                )
            )
        ],
    )
    definition = (await get_activity(lrs, **{"Accept-Language": "fr-FR, en;q=0.5"})).json()[
        "definition"
    ]
    assert definition["name"] == {"fr-FR": "Questionnaire"}
    assert definition["description"] == {"fr-FR": "À propos"}
    assert definition["choices"] == [{"id": "a", "description": {"fr-FR": "Oui"}}]
    definition = (await get_activity(lrs, **{"Accept-Language": "de"})).json()["definition"]
    assert definition["name"] == {"de": "Test"}
    full = (await get_activity(lrs)).json()["definition"]
    assert full["name"] == {"en-US": "Quiz", "fr-FR": "Questionnaire", "de": "Test"}


async def test_definitions_are_per_store(lrs: LRS) -> None:
    """Design 2: canonical data of one store is never visible from another."""
    await record(lrs, [about(quiz(name={"en-US": "Quiz"}))])
    headers = lrs.headers(await lrs.credential(["all"], store="elsewhere"))
    response = await lrs.client.get(
        "/xapi/activities", params={"activityId": ACTIVITY}, headers=headers
    )
    assert response.json() == {"objectType": "Activity", "id": ACTIVITY}


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"activityId": "not an IRI"},
        {"activityId": ACTIVITY, "agent": "{}"},
        {"activityid": ACTIVITY},
    ],
)
async def test_activities_bad_parameters(lrs: LRS, query: dict[str, str]) -> None:
    """2.5.s1.table1.row1: activityId (an IRI) is required; 3.2.s3.b7/b8: nothing else: 400."""
    response = await lrs.client.get("/xapi/activities", params=query)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_activities_scope(lrs: LRS) -> None:
    """3.2.s3.b10: a credential that may not read is refused with 403."""
    headers = lrs.headers(await lrs.credential(["statements/write"]))
    response = await lrs.client.get(
        "/xapi/activities", params={"activityId": ACTIVITY}, headers=headers
    )
    assert response.status_code == 403


def test_merge_definition_is_pure() -> None:
    """Merging never modifies either input (the canonical copy is re-read for every batch)."""
    canonical = {"name": {"en": "A"}, "choices": [{"id": "x", "description": {"en": "X"}}]}
    incoming = {"name": {"fr": "A"}, "choices": [{"id": "x", "description": {"fr": "X"}}]}
    before = copy.deepcopy((canonical, incoming))
    merged = merge_definition(canonical, incoming)
    assert (canonical, incoming) == before
    assert merged["name"] == {"en": "A", "fr": "A"}


async def test_statement_write_path_records_definitions(lrs: LRS) -> None:
    """Data 2.4.4.1.s4.b3, end to end: a statement POSTed with a definition makes it
    canonical."""
    response = await lrs.client.post("/xapi/statements", json=about(quiz(name={"en-US": "Q"})))
    assert response.status_code == 200
    assert (await get_activity(lrs)).json()["definition"] == {"name": {"en-US": "Q"}}


# --- Agents resource ------------------------------------------------------------------------


async def get_person(lrs: LRS, agent: Any):
    raw = agent if isinstance(agent, str) else json.dumps(agent)
    return await lrs.client.get("/xapi/agents", params={"agent": raw})


@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
async def test_unknown_agent_still_gets_a_person(lrs: LRS, version: str) -> None:
    """2.4.s3.b3: with no further information the LRS MUST still return a Person Object with
    the information of the requested Agent; 2.4.s5/2.4.s6.b1: objectType "Person" and array
    properties holding values as in an Agent."""
    lrs.client.headers["X-Experience-API-Version"] = version
    response = await get_person(lrs, {"mbox": "mailto:stranger@example.com", "name": "Stranger"})
    assert response.status_code == 200
    assert response.json() == {
        "objectType": "Person",
        "name": ["Stranger"],
        "mbox": ["mailto:stranger@example.com"],
    }
    assert "ETag" in response.headers


@pytest.mark.parametrize(
    ("agent", "ifi"),
    [
        ({"mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9"}, "mbox_sha1sum"),
        ({"openid": "http://openid.example.org/12345"}, "openid"),
        ({"account": {"homePage": "http://lms.example.com", "name": "42"}}, "account"),
    ],
)
async def test_person_carries_each_identifier_kind(lrs: LRS, agent: dict, ifi: str) -> None:
    """2.4.s5 / 2.4.s6.b1: each identifier is returned as an array of values of the Agent
    property of that name (complete account objects); 2.4.s6.b2: no other properties."""
    person = (await get_person(lrs, agent)).json()
    assert person == {"objectType": "Person", ifi: [agent[ifi]]}


async def test_person_includes_names_seen_in_statements(lrs: LRS) -> None:
    """2.4.s1: the Person combines what the LRS knows of the Agent: names used for it in
    statements (actor, Group members, instructor) join the requested one."""
    member = {"mbox": "mailto:learner@example.com", "name": "L. Earner"}
    team = {"objectType": "Group", "name": "Team", "member": [member]}
    instructor = {"mbox": "mailto:learner@example.com", "name": "Dr Learner"}
    await record(
        lrs,
        [
            about(quiz(), context={"instructor": instructor}),
            statement(actor=team, object={"id": ACTIVITY}),
        ],
    )
    person = (await get_person(lrs, {"mbox": "mailto:learner@example.com"})).json()
    assert person["objectType"] == "Person"
    assert sorted(person["name"]) == ["Dr Learner", "L. Earner", "Learner"]
    assert person["mbox"] == ["mailto:learner@example.com"]


async def test_person_names_follow_define_scope(lrs: LRS) -> None:
    """Communication 4.2 `define` covers Actors too: without it, names are recorded only for an
    Agent never seen before."""
    await record(lrs, [about(quiz())], can_define=False)
    await record(lrs, [statement(actor={**LEARNER, "name": "Renamed"})], can_define=False)
    person = (await get_person(lrs, {"mbox": LEARNER["mbox"]})).json()
    assert person["name"] == ["Learner"]


@pytest.mark.parametrize(
    "agent",
    [
        "not JSON",
        '{"name": "no identifier"}',
        '{"objectType": "Group", "mbox": "mailto:team@example.com"}',
        '{"objectType": "Person", "mbox": ["mailto:a@example.com"]}',
        '{"account": {"homePage": "http://lms.example.com", "name": "\\ud800"}}',
    ],
)
async def test_agents_rejects_what_is_not_an_agent(lrs: LRS, agent: str) -> None:
    """2.4.s2: the agent parameter is a normal Agent Object with a single identifier and no
    arrays; not a Person Object, nor a Group: 400."""
    response = await get_person(lrs, agent)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_agents_parameter_rules(lrs: LRS) -> None:
    """2.4.s2.table1.row1: agent is required; 3.2.s3.b7: unknown parameters are a 400."""
    assert (await lrs.client.get("/xapi/agents")).status_code == 400
    response = await lrs.client.get(
        "/xapi/agents", params={"agent": json.dumps(LEARNER), "activityId": ACTIVITY}
    )
    assert response.status_code == 400


def test_adds_nothing_is_merge_definition_changing_nothing() -> None:
    """The shortcut a batch takes for an Activity it recently made canonical: it must say
    "nothing to merge" exactly when merging would change nothing."""
    import random

    from lrs.storage.activities import adds_nothing, merge_definition

    rng = random.Random(3)

    def definition() -> dict:
        made: dict = {}
        for key in rng.sample(
            [
                "name",
                "description",
                "extensions",
                "type",
                "moreInfo",
                "choices",
                "interactionType",
                "correctResponsesPattern",
            ],
            rng.randint(0, 5),
        ):
            if key in ("name", "description", "extensions"):
                made[key] = {rng.choice(["en", "fr", "de"]): rng.choice(["a", "b"])}
            elif key == "choices":
                made[key] = [
                    {"id": rng.choice("xyz"), "description": {"en": rng.choice("pq")}}
                    for _ in range(rng.randint(0, 2))
                ]
            else:
                made[key] = rng.choice(["u", "v"])
        return made

    for _ in range(3000):
        canonical = merge_definition({}, definition())
        incoming = definition()
        assert adds_nothing(canonical, incoming) == (
            merge_definition(canonical, incoming) == canonical
        ), (canonical, incoming)


# --- Recording many new activities and agents at once ------------------------------------------


def _count_writes(collection: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls: dict[str, int] = {}
    for name in ("insert_many", "insert_one", "update_one"):
        original = getattr(collection, name)

        async def counted(*args: Any, _original: Any = original, _name: str = name, **kw: Any):
            calls[_name] = calls.get(_name, 0) + 1
            return await _original(*args, **kw)

        monkeypatch.setattr(collection, name, counted)
    return calls


def _first_read_empty(find: Any) -> Any:
    calls = 0

    async def first_empty(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return [] if calls == 1 else await find(*args, **kwargs)

    return first_empty


def _new_things(count: int) -> list[dict[str, Any]]:
    return [
        statement(
            actor={"mbox": f"mailto:new{n}@example.com", "name": f"New {n}"},
            object={
                "objectType": "Activity",
                "id": f"http://example.com/items/{n}",
                "definition": {"name": {"en-US": f"Item {n}"}},
            },
        )
        for n in range(count)
    ]


async def _assert_recorded(lrs: LRS, numbers: Iterable[int]) -> None:
    """Activity and Agent `n` of `_new_things` are known: the definition and the name."""
    for n in numbers:
        activity = (await get_activity(lrs, f"http://example.com/items/{n}")).json()
        assert activity["definition"] == {"name": {"en-US": f"Item {n}"}}
        person = (await get_person(lrs, {"mbox": f"mailto:new{n}@example.com"})).json()
        assert person["name"] == [f"New {n}"]


async def test_new_activities_and_agents_of_a_batch_are_recorded_in_one_write_each(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch naming many Activities and Agents the LRS has never seen records them with one
    write per kind, not one per Activity or Agent (each write held up the request, and on the
    embedded store cost a commit of its own)."""
    activity_writes = _count_writes(lrs.services.activities.activities, monkeypatch)
    agent_writes = _count_writes(lrs.services.activities.people.agents, monkeypatch)
    await record(lrs, _new_things(40))
    assert activity_writes == {"insert_many": 1}
    assert agent_writes == {"insert_many": 1}
    await _assert_recorded(lrs, (0, 17, 39))


async def test_activities_and_agents_created_meanwhile_are_merged_into(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Activity or Agent another request created between this one's read and its write is
    refused by the bulk insert, and this batch's definition and names are merged into it; the
    others of the batch are created."""
    first = about(
        {"objectType": "Activity", "id": ACTIVITY, "definition": {"name": {"en-US": "Quiz"}}}
    )
    await record(lrs, [first])
    # The next batch's first read finds nothing, as if the first had not committed yet.
    for collection in (lrs.services.activities.activities, lrs.services.activities.people.agents):
        monkeypatch.setattr(collection, "find", _first_read_empty(collection.find))
    lrs.services.activities._canonical = type(lrs.services.activities._canonical)()
    lrs.services.activities.people._known = type(lrs.services.activities.people._known)()
    second = statement(
        actor={**LEARNER, "name": "L. Earner"},
        object={
            "objectType": "Activity",
            "id": ACTIVITY,
            "definition": {"description": {"en-US": "A quiz"}},
        },
    )
    activity_writes = _count_writes(lrs.services.activities.activities, monkeypatch)
    await record(lrs, [second, *_new_things(3)])
    monkeypatch.undo()
    # The refused one is read back and merged: no second insert of it.
    assert activity_writes == {"insert_many": 1, "update_one": 1}
    assert (await get_activity(lrs)).json()["definition"] == {
        "name": {"en-US": "Quiz"},
        "description": {"en-US": "A quiz"},
    }
    person = (await get_person(lrs, {"mbox": LEARNER["mbox"]})).json()
    assert sorted(person["name"]) == ["L. Earner", "Learner"]
    await _assert_recorded(lrs, range(3))


async def test_when_the_bulk_insert_fails_each_new_one_is_recorded_on_its_own(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk insert that fails for another reason than a duplicate (nothing known of what went
    in) leaves each new Activity and Agent to the one-by-one path: none is lost, with or
    without `define`."""

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the store hiccuped")

    for collection in (lrs.services.activities.activities, lrs.services.activities.people.agents):
        monkeypatch.setattr(collection, "insert_many", failing)
    await record(lrs, _new_things(3), can_define=False)
    monkeypatch.undo()
    await _assert_recorded(lrs, range(3))
