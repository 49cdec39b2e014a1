"""Deterministic, realistic xAPI statements: learners in courses, with registrations,
parent/grouping context activities, scored results and a mix of verbs.

Everything comes from one `random.Random(seed)`, so two runs with the same seed send the same
statements (ids included) and the figures stay comparable.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

VERBS: dict[str, str] = {
    "experienced": "http://adlnet.gov/expapi/verbs/experienced",
    "attempted": "http://adlnet.gov/expapi/verbs/attempted",
    "answered": "http://adlnet.gov/expapi/verbs/answered",
    "completed": "http://adlnet.gov/expapi/verbs/completed",
    "passed": "http://adlnet.gov/expapi/verbs/passed",
    "failed": "http://adlnet.gov/expapi/verbs/failed",
    "progressed": "http://adlnet.gov/expapi/verbs/progressed",
    "initialized": "http://adlnet.gov/expapi/verbs/initialized",
    "terminated": "http://adlnet.gov/expapi/verbs/terminated",
}
# Rough shape of real traffic: mostly views and answers, fewer completions.
_VERB_WEIGHTS = {
    "experienced": 30,
    "answered": 25,
    "progressed": 12,
    "attempted": 8,
    "initialized": 6,
    "terminated": 6,
    "completed": 6,
    "passed": 4,
    "failed": 3,
}
_LESSON = "http://adlnet.gov/expapi/activities/lesson"
_ASSESSMENT = "http://adlnet.gov/expapi/activities/assessment"
_INTERACTION = "http://adlnet.gov/expapi/activities/cmi.interaction"
_COURSE = "http://adlnet.gov/expapi/activities/course"
_BASE = "https://courses.example.com"
# Fixed origin for statement timestamps, so the generated data never depends on the clock.
_EPOCH = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass
class Corpus:
    """The population the statements are drawn from; queries pick their filters from it."""

    learners: list[dict[str, Any]]
    courses: list[dict[str, Any]]
    activities: list[dict[str, Any]]  # lessons, assessments, interactions (objects)
    course_of: dict[str, dict[str, Any]]  # activity id -> its course activity
    registrations: dict[tuple[int, str], str]  # (learner index, course id) -> registration
    used_registrations: list[str] = field(default_factory=list)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _name(rng: random.Random) -> str:
    first = ["Ana", "Ben", "Chloé", "Dmitri", "Eva", "Farah", "Gus", "Hiro", "Ines", "Jonas"]
    last = ["Ng", "Okafor", "Silva", "Müller", "Kowalski", "Dubois", "Rossi", "Tanaka", "Smith"]
    return f"{rng.choice(first)} {rng.choice(last)}"


def build_corpus(
    rng: random.Random, learners: int = 300, courses: int = 5, per_course: int = 10
) -> Corpus:
    people: list[dict[str, Any]] = []
    for i in range(learners):
        # Most systems identify by e-mail; some (SSO) by an account.
        if i % 5 == 4:
            agent = {
                "objectType": "Agent",
                "name": _name(rng),
                "account": {"homePage": "https://sso.example.com", "name": f"u{i:05d}"},
            }
        else:
            agent = {
                "objectType": "Agent",
                "name": _name(rng),
                "mbox": f"mailto:learner{i:04d}@example.com",
            }
        people.append(agent)

    course_list: list[dict[str, Any]] = []
    activities: list[dict[str, Any]] = []
    course_of: dict[str, dict[str, Any]] = {}
    for c in range(courses):
        course = {
            "objectType": "Activity",
            "id": f"{_BASE}/course/{c}",
            "definition": {
                "type": _COURSE,
                "name": {"en-US": f"Course {c}", "fr-FR": f"Cours {c}"},
            },
        }
        course_list.append(course)
        for a in range(per_course):
            if a < per_course - 4:
                kind, type_, label = "lesson", _LESSON, f"Lesson {a}"
            elif a < per_course - 1:
                kind, type_, label = "question", _INTERACTION, f"Question {a}"
            else:
                kind, type_, label = "assessment", _ASSESSMENT, "Final assessment"
            definition: dict[str, Any] = {
                "type": type_,
                "name": {"en-US": f"{label} of course {c}"},
                "description": {"en-US": f"{label}, part of course {c}."},
            }
            if kind == "question":
                definition["interactionType"] = "choice"
                definition["correctResponsesPattern"] = ["b"]
                definition["choices"] = [
                    {"id": letter, "description": {"en-US": f"Option {letter}"}}
                    for letter in "abcd"
                ]
            activity = {
                "objectType": "Activity",
                "id": f"{_BASE}/course/{c}/{kind}/{a}",
                "definition": definition,
            }
            activities.append(activity)
            course_of[activity["id"]] = course

    registrations = {
        (learner, course["id"]): _uuid(rng) for learner in range(learners) for course in course_list
    }
    return Corpus(people, course_list, activities, course_of, registrations)


def _result(rng: random.Random, verb: str, activity: dict[str, Any]) -> dict[str, Any] | None:
    seconds = rng.randint(5, 3600)
    duration = f"PT{seconds // 60}M{seconds % 60}S"
    if verb in ("passed", "failed", "completed"):
        raw = (
            rng.randint(0, 100)
            if verb == "completed"
            else (rng.randint(70, 100) if verb == "passed" else rng.randint(0, 69))
        )
        result: dict[str, Any] = {
            "score": {"scaled": raw / 100, "raw": raw, "min": 0, "max": 100},
            "completion": True,
            "duration": duration,
        }
        if verb != "completed":
            result["success"] = verb == "passed"
        return result
    if verb == "answered":
        answer = rng.choice("abcd")
        return {
            "success": answer == "b",
            "response": answer,
            "score": {"raw": 1 if answer == "b" else 0, "min": 0, "max": 1},
            "duration": duration,
        }
    if verb == "progressed":
        return {
            "completion": False,
            "extensions": {
                "https://w3id.org/xapi/cmi5/result/extensions/progress": (rng.randint(1, 99))
            },
        }
    if verb == "terminated":
        return {"duration": duration}
    return None


def make_statement(rng: random.Random, corpus: Corpus, index: int) -> dict[str, Any]:
    learner_index = rng.randrange(len(corpus.learners))
    activity = rng.choice(corpus.activities)
    course = corpus.course_of[activity["id"]]
    verb = rng.choices(list(_VERB_WEIGHTS), weights=list(_VERB_WEIGHTS.values()))[0]
    if verb == "answered" and activity["definition"]["type"] != _INTERACTION:
        verb = "experienced"
    registration = corpus.registrations[(learner_index, course["id"])]
    when = _EPOCH + timedelta(seconds=index * 37 + rng.randint(0, 36))

    statement: dict[str, Any] = {
        "actor": corpus.learners[learner_index],
        "verb": {"id": VERBS[verb], "display": {"en-US": verb}},
        "object": activity,
        "context": {
            "registration": registration,
            "contextActivities": {
                "parent": [{"objectType": "Activity", "id": course["id"]}],
                "grouping": [{"objectType": "Activity", "id": f"{_BASE}/programme/onboarding"}],
                "category": [{"id": "https://w3id.org/xapi/cmi5/context/categories/moveon"}],
            },
            "platform": "Example LMS",
            "language": "en-US",
            "extensions": {"https://example.com/xapi/extensions/session": rng.randint(1, 10**6)},
        },
        "timestamp": when.isoformat().replace("+00:00", "Z"),
    }
    # Half the clients assign their own ids (as xAPI recommends), the others let the LRS do it.
    if index % 2 == 0:
        statement["id"] = _uuid(rng)
    result = _result(rng, verb, activity)
    if result is not None:
        statement["result"] = result
    return statement


def generate(seed: int, count: int) -> tuple[Corpus, list[dict[str, Any]]]:
    """The corpus and `count` statements; registrations actually used are recorded."""
    rng = random.Random(seed)
    corpus = build_corpus(rng)
    statements = [make_statement(rng, corpus, i) for i in range(count)]
    seen: dict[str, None] = {}
    for statement in statements:
        seen.setdefault(statement["context"]["registration"], None)
    corpus.used_registrations = list(seen)
    return corpus, statements
