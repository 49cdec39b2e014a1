"""Conformance tests for lrs.xapi.validation (xAPI 1.0.3 Data model and IEEE 9274.1.1 / 2.0.0).

Spec references: "Data x.y" = xAPI 1.0.3 Part Two (xAPI-Data.md), "Comm x.y" = Part Three
(xAPI-Communication.md), "2.0 x.y" = IEEE 9274.1.1 (xAPI 2.0.0 base standard).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrs.xapi.validation import (
    StatementValidationError,
    is_iri,
    is_iso8601_duration,
    is_language_tag,
    is_uuid,
    reject_duplicate_keys,
    validate_agent,
    validate_statement,
)

Json = Any

# --------------------------------------------------------------------------------------------
# Fixtures (plain functions returning fresh copies)
# --------------------------------------------------------------------------------------------

AGENT: dict[str, Json] = {"objectType": "Agent", "name": "Ann", "mbox": "mailto:ann@example.com"}
VERB: dict[str, Json] = {
    "id": "http://adlnet.gov/expapi/verbs/attempted",
    "display": {"en-US": "attempted"},
}
ACTIVITY: dict[str, Json] = {"objectType": "Activity", "id": "http://example.com/activities/1"}
ATTACHMENT: dict[str, Json] = {
    "usageType": "http://example.com/attachment-usage/test",
    "display": {"en-US": "A test attachment"},
    "description": {"en-US": "A test attachment (description)"},
    "contentType": "text/plain; charset=ascii",
    "length": 27,
    "sha2": "495395e777cd98da653df9615d09c0fd6bb2f8d4788394cd53c56a3bfdcd848a",
    "fileUrl": "http://over.there.com/file.txt",
}
UUID_1 = "fd41c918-b88b-4b20-a0a5-a4c32391aaa0"
UUID_2 = "e05aa883-acaf-40ad-bf54-02c8ce485fb0"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"


def minimal() -> dict[str, Json]:
    """Data 2.4.s2: the simplest possible Statement."""
    return {
        "actor": {"mbox": "mailto:xapi@adlnet.gov"},
        "verb": {
            "id": "http://adlnet.gov/expapi/verbs/created",
            "display": {"en-US": "created"},
        },
        "object": {"id": "http://example.adlnet.gov/xapi/example/activity"},
    }


def full() -> dict[str, Json]:
    """A Statement using every 1.0.3 property at least once."""
    return {
        "id": UUID_1,
        "actor": {
            "objectType": "Group",
            "name": "Team PB",
            "mbox": "mailto:teampb@example.com",
            "member": [
                {"name": "Andrew", "account": {"homePage": "http://www.example.com", "name": "1"}},
                {"objectType": "Agent", "openid": "http://toby.openid.example.org/"},
                {"mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9"},
            ],
        },
        "verb": copy.deepcopy(VERB),
        "object": {
            "objectType": "Activity",
            "id": "http://www.example.com/meetings/occurances/34534",
            "definition": {
                "name": {"en-GB": "example meeting", "en-US": "example meeting"},
                "description": {"en-US": "An example meeting."},
                "type": "http://adlnet.gov/expapi/activities/cmi.interaction",
                "moreInfo": "http://virtualmeeting.example.com/345256",
                "interactionType": "choice",
                "correctResponsesPattern": ["golf[,]tetris"],
                "choices": [
                    {"id": "golf", "description": {"en-US": "Golf Example"}},
                    {"id": "tetris", "description": {"en-US": "Tetris Example"}},
                ],
                "extensions": {"http://example.com/ext/room": {"name": "Kilby"}},
            },
        },
        "result": {
            "score": {"scaled": 0.5, "raw": 50, "min": 0, "max": 100},
            "success": True,
            "completion": False,
            "response": "golf",
            "duration": "PT1H0M0S",
            "extensions": {"http://example.com/ext/minutes": "X:\\meetings"},
        },
        "context": {
            "registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
            "instructor": copy.deepcopy(AGENT),
            "team": {"objectType": "Group", "mbox": "mailto:team@example.com"},
            "contextActivities": {
                "parent": [{"id": "http://www.example.com/meetings/series/267"}],
                "grouping": {"id": "http://www.example.com/meetings/grouping"},
                "category": [{"id": "http://www.example.com/cat", "objectType": "Activity"}],
                "other": [
                    {"id": "http://www.example.com/other/1"},
                    {"id": "http://www.example.com/other/2"},
                ],
            },
            "revision": "r1",
            "platform": "Example virtual meeting software",
            "language": "tlh",
            "statement": {"objectType": "StatementRef", "id": UUID_2},
            "extensions": {"http://example.com/ext/altitude": 1000},
        },
        "timestamp": "2013-05-18T05:32:34.804+00:00",
        "stored": "2013-05-18T05:32:34.804Z",
        "authority": {
            "objectType": "Agent",
            "account": {"homePage": "http://cloud.scorm.com/", "name": "anonymous"},
        },
        "version": "1.0.0",
        "attachments": [copy.deepcopy(ATTACHMENT)],
    }


def substatement() -> dict[str, Json]:
    """Data 2.4.4.3.s9: a SubStatement example ("I planned to visit 'Some Awesome Website'")."""
    return {
        "actor": {"objectType": "Agent", "mbox": "mailto:test@example.com"},
        "verb": {"id": "http://example.com/planned", "display": {"en-US": "planned"}},
        "object": {
            "objectType": "SubStatement",
            "actor": {"objectType": "Agent", "mbox": "mailto:test@example.com"},
            "verb": {"id": "http://example.com/visited", "display": {"en-US": "will visit"}},
            "object": {
                "objectType": "Activity",
                "id": "http://example.com/website",
                "definition": {"name": {"en-US": "Some Awesome Website"}},
            },
            "result": {"completion": True},
            "context": {
                "registration": UUID_2,
                "contextActivities": {"parent": {"id": "http://example.com/parent"}},
                "revision": "2",
                "platform": "web",
            },
            "timestamp": "2099-01-01T00:00:00Z",
            "attachments": [copy.deepcopy(ATTACHMENT)],
        },
    }


def v2_statement() -> dict[str, Json]:
    """2.0 4.2.2.5: a Statement with contextAgents and contextGroups."""
    stmt = minimal()
    stmt["context"] = {
        "contextAgents": [
            {
                "objectType": "contextAgent",
                "agent": {"objectType": "Agent", "mbox": "mailto:player-1@example.com"},
                "relevantTypes": ["https://example.com/types/instructor"],
            },
            {"objectType": "contextAgent", "agent": {"mbox": "mailto:player-2@example.com"}},
        ],
        "contextGroups": [
            {
                "objectType": "contextGroup",
                "group": {
                    "objectType": "Group",
                    "mbox": "mailto:team-1@example.com",
                    "member": [{"mbox": "mailto:player-1@example.com"}],
                },
                "relevantTypes": ["https://example.com/types/team"],
            },
            {
                "objectType": "contextGroup",
                "group": {"objectType": "Group", "member": [{"mbox": "mailto:p3@example.com"}]},
            },
        ],
    }
    stmt["version"] = "2.0.0"
    return stmt


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\.?([^.\[]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        assert match is not None, path
        name, index, quoted = match.groups()
        if index is not None:
            steps.append(int(index))
        elif quoted is not None:
            steps.append(json.loads(quoted))
        else:
            steps.append(name)
        pos = match.end()
    return steps


def put(doc: Json, path: str, value: Json) -> Json:
    """Return a copy of ``doc`` with the value at ``path`` replaced (or added)."""
    doc = copy.deepcopy(doc)
    *parents, last = _steps(path)
    node = doc
    for step in parents:
        node = node[step]
    node[last] = value
    return doc


def drop(doc: Json, path: str) -> Json:
    """Return a copy of ``doc`` without the property at ``path``."""
    doc = copy.deepcopy(doc)
    *parents, last = _steps(path)
    node = doc
    for step in parents:
        node = node[step]
    del node[last]
    return doc


def _recognise_the_bases() -> None:
    """Let the validator see every base Statement's parts as valid (`parsed_json`), so that a
    case built from a base by changing one part tests that the changed part is checked."""
    validate_statement(minimal(), parsed_json=True)
    for _, stmt, version in _bases():
        validate_statement(stmt, version=version, parsed_json=True)


def invalid(stmt: Json, path: str, version: str = "1.0.3", contains: str = "") -> None:
    """Refused with this error; also as the server validates (`parsed_json`), after the valid
    parts of the base Statements were seen."""
    for parsed_json in (False, True):
        if parsed_json:
            _recognise_the_bases()
        with pytest.raises(StatementValidationError) as info:
            validate_statement(copy.deepcopy(stmt), version=version, parsed_json=parsed_json)
        assert info.value.path == path, str(info.value)
        assert contains in info.value.message, str(info.value)


def valid(stmt: Json, version: str = "1.0.3") -> None:
    validate_statement(stmt, version=version)
    validate_statement(stmt, version=version, parsed_json=True)


_LANGUAGE_MAP_KEYS = {"display", "name", "description"}


def walk(doc: Json, path: str = "", parent_key: str = "") -> Iterator[tuple[str, Json]]:
    """Every (path, value) below ``doc``, in the validator's path notation.

    Language-map keys are shown as ["tag"]; extension values are not entered.
    """
    if isinstance(doc, dict):
        is_map = parent_key in _LANGUAGE_MAP_KEYS
        for key, value in doc.items():
            child = f'{path}["{key}"]' if is_map else (f"{path}.{key}" if path else key)
            yield child, value
            if key != "extensions" and not is_map:
                yield from walk(value, child, key)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            child = f"{path}[{i}]"
            yield child, value
            yield from walk(value, child, parent_key)


def _bases() -> list[tuple[str, dict[str, Json], str]]:
    return [
        ("full", full(), "1.0.3"),
        ("substatement", substatement(), "1.0.3"),
        ("v2", v2_statement(), "2.0.0"),
    ]


def test_fixtures_are_valid() -> None:
    """Every base Statement used below is itself valid."""
    valid(minimal())
    for _, stmt, version in _bases():
        valid(stmt, version)


# --------------------------------------------------------------------------------------------
# StatementValidationError
# --------------------------------------------------------------------------------------------


def test_error_str_and_attributes() -> None:
    err = StatementValidationError("actor.mbox", "bad")
    assert (err.path, err.message, str(err)) == ("actor.mbox", "bad", "actor.mbox: bad")
    assert str(StatementValidationError("", "bad")) == "bad"
    assert isinstance(err, ValueError)


def test_path_prefix_is_applied() -> None:
    """The API passes e.g. "statements[3]" as a prefix for error paths."""
    stmt = put(minimal(), "actor.mbox", "not-an-email")
    with pytest.raises(StatementValidationError) as info:
        validate_statement(stmt, path="statements[3]")
    assert info.value.path == "statements[3].actor.mbox"
    with pytest.raises(StatementValidationError) as info:
        validate_statement("nope", path="statements[3]")
    assert info.value.path == "statements[3]"


@pytest.mark.parametrize("value", [None, 1, "s", [], True, 1.5])
def test_statement_must_be_an_object(value: Json) -> None:
    with pytest.raises(StatementValidationError) as info:
        validate_statement(value)
    assert info.value.path == ""


# --------------------------------------------------------------------------------------------
# Data 2.2 Formatting requirements
# --------------------------------------------------------------------------------------------


def _null_cases() -> list[Any]:
    cases = []
    for name, base, version in _bases():
        for path, _ in walk(base):
            cases.append(pytest.param(base, path, version, id=f"{name}:{path}"))
    return cases


@pytest.mark.parametrize(("base", "path", "version"), _null_cases())
def test_null_values_are_rejected_everywhere(base: Json, path: str, version: str) -> None:
    """Data 2.2.s4.b1.b1: The LRS MUST reject Statements with any null values (except inside
    extensions)."""
    invalid(put(base, path, None), path, version, "must not be null")


@pytest.mark.parametrize(
    "path",
    [
        "object.definition.extensions",
        "result.extensions",
        "context.extensions",
    ],
)
def test_null_inside_extensions_is_accepted(path: str) -> None:
    """Data 2.2.s4.b1.b1: "... (except inside extensions)"; Data 4.1.s3.b2: An LRS MUST NOT
    reject a Statement based on the values of the extensions map."""
    valid(put(full(), path, {"http://example.com/null": None, "http://example.com/x": [None]}))


def _unknown_property_cases() -> list[Any]:
    cases = []
    for name, base, version in _bases():
        object_paths = [""] + [
            path
            for path, value in walk(base)
            if isinstance(value, dict)
            and not path.endswith(("display", "name", "description", "extensions"))
        ]
        for path in object_paths:
            target = f"{path}.unexpectedProperty" if path else "unexpectedProperty"
            cases.append(pytest.param(base, target, version, id=f"{name}:{target}"))
    return cases


@pytest.mark.parametrize(("base", "path", "version"), _unknown_property_cases())
def test_unknown_properties_are_rejected_at_every_level(
    base: Json, path: str, version: str
) -> None:
    """Data 2.2.s4.b1.b7: reject Statements where a key or value is not allowed by this
    specification; 2.0 4.2.1: an LRS shall reject a Statement with additional properties other
    than extensions in the locations where extensions are allowed."""
    invalid(put(base, path, "x"), path, version, "is not a property of")


def _wrong_type_cases() -> list[Any]:
    cases = []
    for name, base, version in _bases():
        for path, value in walk(base):
            if isinstance(value, bool):
                replacement: Json = "true"
            elif isinstance(value, (int, float)):
                replacement = str(value)
            elif isinstance(value, str):
                replacement = 12345
            else:
                replacement = "not a container"
            cases.append(pytest.param(base, path, replacement, version, id=f"{name}:{path}"))
    return cases


@pytest.mark.parametrize(("base", "path", "replacement", "version"), _wrong_type_cases())
def test_wrong_json_types_are_rejected(
    base: Json, path: str, replacement: Json, version: str
) -> None:
    """Data 2.2.s4.b1.b2/b3 (2.0 4.2.1): reject Statements where the wrong data type is used,
    e.g. strings where numbers or booleans are required, even if those strings contain
    numbers or booleans; 2.0 4.2.1: reject any Statement that does not conform to "Type"."""
    invalid(put(base, path, replacement), path, version)


@pytest.mark.parametrize(
    ("key", "wrong"),
    [
        ("id", "iD"),
        ("actor", "Actor"),
        ("verb", "veRb"),
        ("object", "oBject"),
        ("result", "RESULT"),
        ("context", "conText"),
        ("timestamp", "timeStamp"),
        ("stored", "STOred"),
        ("authority", "auTHORity"),
        ("version", "Version"),
        ("attachments", "attachmentS"),
    ],
)
def test_keys_are_case_sensitive(key: str, wrong: str) -> None:
    """Data 2.2.s4.b1.b5: reject Statements where the case of a key does not match the case
    specified in this specification."""
    stmt = full()
    stmt[wrong] = stmt.pop(key)
    invalid(stmt, wrong, contains=f"use '{key}'")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("result.score.max", "100"),
        ("result.score.max", "one hundred"),
        ("result.score.scaled", "0.5"),
        ("result.success", "We regret to inform you that your effort was unsuccessful."),
        ("result.completion", "false"),
        ("result.success", 1),
        ("result.completion", 0),
        ("attachments[0].length", "27"),
        ("attachments[0].length", True),
    ],
)
def test_strings_where_numbers_or_booleans_are_required(path: str, value: Json) -> None:
    """Data 2.2.s4.b1.b2: "with strings where numbers are required, even if those strings
    contain numbers"; b3: "with strings where booleans are required, even if those strings
    contain booleans"."""
    invalid(put(full(), path, value), path)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    """Python's json module accepts NaN/Infinity, which are not JSON numbers (RFC 8259)."""
    invalid(put(full(), "result.score.raw", value), "result.score.raw", contains="finite")


def test_empty_objects_are_accepted() -> None:
    """Data 2.2.s2.b1: Statements SHOULD NOT include properties with a value of an empty
    object - a SHOULD for the provider, not a rejection rule for the LRS."""
    stmt = put(minimal(), "verb.display", {})
    stmt = put(stmt, "result", {})
    stmt = put(stmt, "context", {"contextActivities": {}, "extensions": {}})
    valid(stmt)


@pytest.mark.parametrize("key", ["actor", "verb", "object"])
def test_actor_verb_object_are_required(key: str) -> None:
    """Data 2.2.s2.b3: A Statement MUST use "actor", "verb", and "object"."""
    invalid(drop(minimal(), key), key, contains="is required")


def test_duplicate_properties_are_rejected_by_the_json_hook() -> None:
    """Data 2.2.s2.b2: A Statement MUST use each property no more than one time (2.0 4.2.1:
    an LRS shall reject a Statement that uses a property more than once)."""
    body = '{"actor": {"mbox": "mailto:a@b.c"}, "actor": {"mbox": "mailto:d@e.f"}}'
    with pytest.raises(StatementValidationError, match="more than once"):
        json.loads(body, object_pairs_hook=reject_duplicate_keys)
    assert json.loads('{"a": {"a": 1}}', object_pairs_hook=reject_duplicate_keys) == {"a": {"a": 1}}


# --------------------------------------------------------------------------------------------
# Data 2.4.1 id, 2.4.7 timestamp, 2.4.8 stored, 2.4.10 version
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        UUID_1,
        UUID_1.upper(),
        "12345678-1234-5678-1234-567812345678",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_statement_id_uuid_valid(value: str) -> None:
    """Data 2.4.1: "A UUID (...) MUST be in standard string form"; 4.4: variant 2 is only
    recommended, so other variants (like the spec's own example id) are accepted."""
    valid(put(minimal(), "id", value))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "should fail",
        "AA97B177-9383-4934-8543-0F91A7A028368",
        "MA97B177-9383-4934-8543-0F91A7A02836",
        "fd41c918b88b4b20a0a5a4c32391aaa0",
        "{fd41c918-b88b-4b20-a0a5-a4c32391aaa0}",
        "urn:uuid:fd41c918-b88b-4b20-a0a5-a4c32391aaa0",
        " fd41c918-b88b-4b20-a0a5-a4c32391aaa0",
        12345,
        {"key": "should fail"},
    ],
)
def test_statement_id_uuid_invalid(value: Json) -> None:
    """Data 2.2.s4.b1.b4 / 4.4: reject non-format-following UUIDs, including the empty
    string; UUIDs MUST be in the standard string form."""
    invalid(put(minimal(), "id", value), "id")


@pytest.mark.parametrize(
    "value",
    [
        "2013-05-18T05:32:34.804+00:00",
        "2015-11-18T12:17:00Z",
        "2008-09-15 15:53:00.601+00:00",
        "2013-05-18T05:32:34.804123456-05:00",
        "2013-05-18T05:32:34",
    ],
)
@pytest.mark.parametrize("key", ["timestamp", "stored"])
def test_timestamps_valid(key: str, value: str) -> None:
    """Data 4.5.s1.b1: A Timestamp MUST be formatted according to ISO 8601 (RFC 3339 form
    recommended)."""
    valid(put(minimal(), key, value))


@pytest.mark.parametrize(
    "value",
    [
        "should fail",
        "01/011/2015",
        "2008-09-15T15:53:00.601-00",
        "2008-09-15T15:53:00.601-0000",
        "2008-09-15T15:53:00.601-00:00",
        "2013-02-30T00:00:00Z",
        "",
        "2020-01-01T00:00:00Z\n",
        "\uff12\uff10\uff12\uff10-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        1368855154,
    ],
)
@pytest.mark.parametrize("key", ["timestamp", "stored"])
def test_timestamps_invalid(key: str, value: Json) -> None:
    """Data 4.5.s1.b1: ISO 8601; RFC 3339 section 4.3 forbids the unknown-offset -00:00.
    Values whose UTC conversion overflows must be rejected, not crash."""
    invalid(put(minimal(), key, value), key)


def test_substatement_timestamp_may_be_in_the_future() -> None:
    """Data 2.4.7.s3.b5: A SubStatement MAY have a "timestamp" property that is in the future
    (and s3.b6: the LRS SHOULD NOT reject future timestamps)."""
    valid(put(substatement(), "object.timestamp", "2999-01-01T00:00:00Z"))
    valid(put(minimal(), "timestamp", "2999-01-01T00:00:00Z"))


@pytest.mark.parametrize("value", ["1.0", "1.0.0", "1.0.3", "1.0.9", "1.0.10"])
def test_version_1_0_x_accepted(value: str) -> None:
    """Data 2.4.10.s3.b1: An LRS MUST accept all Statements where their version starts with
    "1.0." if they otherwise validate (Comm 3.3: "1.0" is accepted as "1.0.0")."""
    valid(put(minimal(), "version", value))
    valid(put(minimal(), "version", value), "2.0.0")


@pytest.mark.parametrize(
    "value", ["0.95", "0.9", "1.1.0", "1", "2.0.0", "1.0.0-beta", "1.0.", "v1.0.0", "", " 1.0.0"]
)
def test_version_other_rejected_under_1_0(value: str) -> None:
    """Data 2.4.10.s3.b2: An LRS MUST reject all Statements with a version specified that does
    not start with "1.0."."""
    invalid(put(minimal(), "version", value), "version")


@pytest.mark.parametrize("value", ["2.0", "2.0.0", "2.0.1"])
def test_version_2_0_x_accepted_under_2_0(value: str) -> None:
    """2.0 4.2.4.3: Statements returned by an LRS shall retain the version they are accepted
    with (2.0.0 is the Statement version of xAPI 2.0.x)."""
    valid(put(minimal(), "version", value), "2.0.0")


@pytest.mark.parametrize("value", ["2.1.0", "3.0.0", "0.95", 2.0])
def test_version_other_rejected_under_2_0(value: Json) -> None:
    invalid(put(minimal(), "version", value), "version", "2.0.0")


# --------------------------------------------------------------------------------------------
# Data 2.4.2 Actor: Agents, Groups, IFIs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent",
    [
        {"mbox": "mailto:xapi@adlnet.gov"},
        {"objectType": "Agent", "mbox": "mailto:andrew@example.co.uk", "name": "Andrew"},
        {"mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9"},
        {"mbox_sha1sum": "EBD31E95054C018B10727CCFFD2EF2EC3A016EE9"},
        {"openid": "http://toby.openid.example.org/"},
        {"account": {"homePage": "http://www.example.com", "name": "1625378"}},
        {"account": {"homePage": "http://www.example.com", "name": ""}},
    ],
)
def test_agent_with_one_ifi_is_valid(agent: Json) -> None:
    """Data 2.4.2.1.s2.b1: An Agent MUST be identified by one (1) of the four types of IFI."""
    valid(put(minimal(), "actor", agent))


@pytest.mark.parametrize(
    "agent",
    [{}, {"objectType": "Agent"}, {"name": "nobody"}, {"objectType": "Agent", "name": "x"}],
)
def test_agent_without_ifi_is_rejected(agent: Json) -> None:
    """Data 2.4.2.1.s2.b1: An Agent MUST be identified by one (1) of the four types of IFI."""
    invalid(put(minimal(), "actor", agent), "actor", contains="MUST be identified")


@pytest.mark.parametrize(
    "extra",
    [
        {"mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9"},
        {"openid": "http://openid.example.org/12345"},
        {"account": {"homePage": "http://www.example.com", "name": "xAPI account name"}},
    ],
)
def test_agent_with_two_ifis_is_rejected(extra: Json) -> None:
    """Data 2.4.2.1.s2.b2: An Agent MUST NOT include more than one (1) IFI (2.0 4.2.4.2: The
    LRS shall reject Statements if the Actor object contains more than one IFI)."""
    invalid(put(minimal(), "actor", {"mbox": "mailto:a@example.com", **extra}), "actor")


@pytest.mark.parametrize(
    "value",
    [
        "xapi@adlnet.gov",
        "mailto:",
        "mailto:nobody",
        "mailto:@example.com",
        "mailto:a@",
        "MAILTO:xapi@adlnet.gov",
        "mailto:a b@example.com",
        "http://example.com",
        "",
        "mailto:a@example.com?subject=hi",
        "mailto:a@b@example.com",
    ],
)
def test_mbox_must_be_a_mailto_iri(value: str) -> None:
    """Data 2.4.2.3: mbox is a mailto IRI; "The required format is 'mailto:email address'"."""
    invalid(put(minimal(), "actor.mbox", value), "actor.mbox")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ebd31e95054c018b10727ccffd2ef2ec3a016ee",
        "ebd31e95054c018b10727ccffd2ef2ec3a016eeg",
        "mailto:a@example.com",
    ],
)
def test_mbox_sha1sum_must_be_40_hex_digits(value: str) -> None:
    """Data 2.4.2.3: mbox_sha1sum is the hex-encoded SHA1 hash of a mailto IRI."""
    invalid(put(minimal(), "actor", {"mbox_sha1sum": value}), "actor.mbox_sha1sum")


@pytest.mark.parametrize("value", ["", "toby", "openid.example.org/toby", "http://ex.com/é"])
def test_openid_must_be_a_uri(value: str) -> None:
    """Data 2.4.2.3: openid is a URI (absolute, ASCII)."""
    invalid(put(minimal(), "actor", {"openid": value}), "actor.openid")


@pytest.mark.parametrize(
    ("account", "path"),
    [
        ({"name": "1"}, "actor.account.homePage"),
        ({"homePage": "http://www.example.com"}, "actor.account.name"),
        ({"homePage": "www.example.com", "name": "1"}, "actor.account.homePage"),
        ({"homePage": "http://www.example.com", "name": {"key": "x"}}, "actor.account.name"),
        ({"homePage": "http://www.example.com", "name": "1", "x": 1}, "actor.account.x"),
        ({"homepage": "http://www.example.com", "name": "1"}, "actor.account.homepage"),
        ("http://www.example.com", "actor.account"),
    ],
)
def test_account_requires_homepage_irl_and_name_string(account: Json, path: str) -> None:
    """Data 2.4.2.4: Account Object: homePage (IRL, Required), name (String, Required)."""
    invalid(put(minimal(), "actor", {"account": account}), path)


@pytest.mark.parametrize("value", ["agent", "group", "Person", "Activity", "StatementRef", 1])
def test_actor_object_type_must_be_agent_or_group(value: Json) -> None:
    """Data 2.2.s4.b1.b6: enumerated values are case-sensitive; an Actor is an Agent or Group."""
    invalid(put(minimal(), "actor.objectType", value), "actor.objectType")


def test_agent_name_must_be_a_string() -> None:
    """Data 2.4.2.1: name is a String."""
    invalid(put(minimal(), "actor.name", ["Ann"]), "actor.name")


def test_member_on_an_agent_is_rejected() -> None:
    """Conformance XAPI-00035: "member" is rejected anywhere but in a Group object."""
    stmt = put(minimal(), "actor.member", [{"mbox": "mailto:b@example.com"}])
    invalid(stmt, "actor.member", contains="only a Group")


@pytest.mark.parametrize(
    "group",
    [
        {"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]},
        {"objectType": "Group", "name": "n", "member": [{"openid": "http://a.example.org/"}]},
        {"objectType": "Group", "mbox": "mailto:team@example.com"},
        {"objectType": "Group", "mbox": "mailto:team@example.com", "member": []},
        {"objectType": "Group", "openid": "http://openid.example.org/12345"},
        {"objectType": "Group", "mbox_sha1sum": "cd9b00a5611f94eaa7b1661edab976068e364975"},
        {
            "objectType": "Group",
            "account": {"homePage": "http://example.com/homePage", "name": "GroupAccount"},
            "member": [{"objectType": "Agent", "mbox": "mailto:andrew@example.com"}],
        },
    ],
)
def test_valid_groups(group: Json) -> None:
    """Data 2.4.2.2: Anonymous Groups (member required) and Identified Groups (exactly one
    IFI, member optional)."""
    valid(put(minimal(), "actor", group))
    valid(put(minimal(), "context", {"team": group}))
    valid(put(minimal(), "context", {"instructor": group}))


def test_anonymous_group_requires_member() -> None:
    """Data 2.4.2.2.s4.b1: An Anonymous Group MUST include a "member" property listing
    constituent Agents."""
    invalid(put(minimal(), "actor", {"objectType": "Group"}), "actor.member", contains="required")
    invalid(
        put(minimal(), "actor", {"objectType": "Group", "name": "n"}), "actor.member", contains=""
    )


def test_anonymous_group_requires_at_least_one_member() -> None:
    """Data 2.4.2.2.s4.b1 ("listing constituent Agents"); conformance XAPI-00037: a Group has
    an IFI or a member property with at least one Agent."""
    invalid(put(minimal(), "actor", {"objectType": "Group", "member": []}), "actor.member")


@pytest.mark.parametrize("identified", [False, True])
def test_group_members_must_not_be_groups(identified: bool) -> None:
    """Data 2.4.2.2.s4.b2 / s5.b2: A Group MUST NOT contain Group Objects in "member"
    (2.0 4.2.4.2)."""
    group: dict[str, Json] = {
        "objectType": "Group",
        "member": [
            {"mbox": "mailto:a@example.com"},
            {"objectType": "Group", "mbox": "mailto:inner@example.com"},
        ],
    }
    if identified:
        group["mbox"] = "mailto:outer@example.com"
    invalid(put(minimal(), "actor", group), "actor.member[1].objectType", contains="MUST NOT")


@pytest.mark.parametrize(
    ("member", "path"),
    [
        ({"mbox": "mailto:a@example.com"}, "actor.member"),
        ([{"name": "no ifi"}], "actor.member[0]"),
        (["mailto:a@example.com"], "actor.member[0]"),
        ([{"mbox": "mailto:a@example.com"}, {"mbox": "bad"}], "actor.member[1].mbox"),
    ],
)
def test_group_member_is_an_array_of_agents(member: Json, path: str) -> None:
    """Data 2.4.2.2: member is an "Array of Agent Objects" (conformance XAPI-00036)."""
    invalid(put(minimal(), "actor", {"objectType": "Group", "member": member}), path)


def test_identified_group_with_two_ifis_is_rejected() -> None:
    """Data 2.4.2.2.s5.b1: An Identified Group MUST include exactly one (1) IFI."""
    group = {
        "objectType": "Group",
        "mbox": "mailto:team@example.com",
        "openid": "http://openid.example.org/team",
    }
    invalid(put(minimal(), "actor", group), "actor", contains="exactly one")


def test_group_without_object_type_is_an_agent() -> None:
    """Data 2.4.2.2: objectType "Group" is Required for Groups; without it the Actor is an
    Agent, which has no "member" property."""
    invalid(put(minimal(), "actor", {"member": [{"mbox": "mailto:a@x.com"}]}), "actor.member")


# --------------------------------------------------------------------------------------------
# Data 2.4.3 Verb
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb",
    [
        {"id": "http://example.com/xapi/verbs#defenestrated"},
        {"id": "http://example.com/xapi/verbs#defenestrated", "display": {"es": "defenestrado"}},
        {"id": "http://example.com/فعل/خواندن", "display": {"en-US": "read", "fa": "خواندن"}},
        {"id": "urn:x-verbs:did"},
    ],
)
def test_valid_verbs(verb: Json) -> None:
    """Data 2.4.3: id (IRI, Required), display (Language Map, Recommended)."""
    valid(put(minimal(), "verb", verb))


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ({"display": {"en-US": "x"}}, "verb.id"),
        ({"id": "defenestrated"}, "verb.id"),
        ({"id": ""}, "verb.id"),
        ({"id": "/relative/verb"}, "verb.id"),
        ({"id": "http://example.com/a verb"}, "verb.id"),
        ({"id": "http://example.com/v", "display": "created"}, "verb.display"),
        (
            {"id": "http://example.com/v", "display": {"something": "x"}},
            'verb.display["something"]',
        ),
        ({"id": "http://example.com/v", "display": {"en-US": 1}}, 'verb.display["en-US"]'),
        ({"id": "http://example.com/v", "Display": {}}, "verb.Display"),
        ("http://example.com/v", "verb"),
    ],
)
def test_invalid_verbs(verb: Json, path: str) -> None:
    """Data 2.4.3: the Verb id is a Required IRI; display is a Language Map; 2.2.s4.b1.b8:
    IRIs without a scheme are rejected."""
    invalid(put(minimal(), "verb", verb), path)


# --------------------------------------------------------------------------------------------
# Data 2.4.4 Object
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "http://www.example.co.uk/exampleactivity"},
        {"objectType": "Activity", "id": "http://www.example.co.uk/exampleactivity"},
        {"objectType": "Agent", "mbox": "mailto:andrew@example.co.uk"},
        {"objectType": "Group", "member": [{"mbox": "mailto:andrew@example.co.uk"}]},
        {"objectType": "Group", "account": {"homePage": "http://ex.com", "name": "g"}},
        {"objectType": "StatementRef", "id": "8f87ccde-bb56-4c2e-ab83-44982ef22df0"},
    ],
)
def test_valid_objects(obj: Json) -> None:
    """Data 2.4.4: the Object can be an Activity, Agent/Group, SubStatement or StatementRef;
    2.0 4.2.2.3: an Object without objectType is treated as an Activity."""
    valid(put(minimal(), "object", obj))


@pytest.mark.parametrize(
    "value", ["activity", "Statement", "statementref", "Substatement", "Person", "", 7]
)
def test_object_type_values_are_exact(value: Json) -> None:
    """Data 2.4.4.s2: valid objectType values are Activity, Agent, Group, SubStatement,
    StatementRef; 2.2.s4.b1.b6: enumerated values are case-sensitive."""
    invalid(put(minimal(), "object.objectType", value), "object.objectType")


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"objectType": "Activity"}, "object.id"),
        ({"definition": {}}, "object.id"),
        ({"id": "example activity"}, "object.id"),
        ({"id": "#fragment"}, "object.id"),
        ({"id": "http://ex.com/a", "definition": "x"}, "object.definition"),
    ],
)
def test_activity_requires_an_iri_id(obj: Json, path: str) -> None:
    """Data 2.4.4.1: Activity id (IRI, Required); "IRI fragments (sometimes called relative
    IRLs) are not valid IRIs"."""
    invalid(put(minimal(), "object", obj), path)


def test_agent_as_object_requires_object_type() -> None:
    """Data 2.4.4.2.s1.b1: Statements that specify an Agent or Group as an Object MUST specify
    an 'objectType' property (without it the Object is an Activity, and an Activity has no
    mbox)."""
    invalid(put(minimal(), "object", {"mbox": "mailto:a@example.com"}), "object.mbox")


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"id": UUID_1}, "object.id"),  # an Activity with a UUID id: not an IRI
        ({"objectType": "StatementRef"}, "object.id"),
        ({"objectType": "StatementRef", "id": "not-a-uuid"}, "object.id"),
        ({"objectType": "StatementRef", "id": UUID_1, "definition": {}}, "object.definition"),
    ],
)
def test_statement_reference_rules(obj: Json, path: str) -> None:
    """Data 2.4.4.3.s4.b1: A Statement Reference MUST specify an "objectType" property with
    the value StatementRef; s4.b2: it MUST set the "id" property to the UUID of a Statement."""
    invalid(put(minimal(), "object", obj), path)


@pytest.mark.parametrize("key", ["id", "stored", "version", "authority"])
def test_substatement_must_not_have_lrs_properties(key: str) -> None:
    """Data 2.4.4.3.s8.b3: A SubStatement MUST NOT have the "id", "stored", "version" or
    "authority" properties."""
    value = full()[key]
    invalid(put(substatement(), f"object.{key}", value), f"object.{key}", contains="MUST NOT")


def test_substatement_must_not_be_nested() -> None:
    """Data 2.4.4.3.s8.b4: A SubStatement MUST NOT contain a SubStatement of its own
    (2.0 4.2.4.2)."""
    inner = copy.deepcopy(substatement()["object"])
    del inner["attachments"]
    stmt = put(substatement(), "object.object", inner)
    invalid(stmt, "object.object.objectType", contains="MUST NOT")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("object.actor", {"mbox": "bad"}),
        ("object.verb", {"id": "nope"}),
        ("object.object", {"id": "nope"}),
        ("object.result", {"success": "yes"}),
        ("object.context", {"registration": "nope"}),
        ("object.timestamp", "yesterday"),
        ("object.attachments", [{"usageType": "x"}]),
    ],
)
def test_substatement_is_validated_as_a_statement(path: str, value: Json) -> None:
    """Data 2.4.4.3.s8.b2: A SubStatement MUST be validated as a Statement in addition to
    other SubStatement requirements."""
    with pytest.raises(StatementValidationError) as info:
        validate_statement(put(substatement(), path, value))
    assert info.value.path.startswith(path)


@pytest.mark.parametrize("key", ["actor", "verb", "object", "objectType"])
def test_substatement_required_properties(key: str) -> None:
    """Data 2.4.4.3.s8.b1: A SubStatement MUST specify an "objectType" property with the
    value SubStatement; s8.b2: as a Statement it MUST use actor, verb and object."""
    stmt = drop(substatement(), f"object.{key}")
    if key == "objectType":
        invalid(stmt, "object.actor")  # without objectType it is an Activity
    else:
        invalid(stmt, f"object.{key}", contains="is required")


def test_substatement_objects_of_other_types_are_valid() -> None:
    """Appendix B: a SubStatement whose Object is a Statement Reference."""
    stmt = put(substatement(), "object.object", {"objectType": "StatementRef", "id": UUID_2})
    stmt = drop(stmt, "object.context.revision")
    valid(drop(stmt, "object.context.platform"))


# --------------------------------------------------------------------------------------------
# Data 2.4.4.1 Activity Definitions and Interaction Activities
# --------------------------------------------------------------------------------------------

APPENDIX_C: dict[str, dict[str, Json]] = {
    "true-false": {"interactionType": "true-false", "correctResponsesPattern": ["true"]},
    "choice": {
        "interactionType": "choice",
        "correctResponsesPattern": ["golf[,]tetris"],
        "choices": [
            {"id": "golf", "description": {"en-US": "Golf Example"}},
            {"id": "facebook", "description": {"en-US": "Facebook App"}},
            {"id": "tetris", "description": {"en-US": "Tetris Example"}},
            {"id": "scrabble", "description": {"en-US": "Scrabble Example"}},
        ],
    },
    "fill-in": {"interactionType": "fill-in", "correctResponsesPattern": ["Bob's your uncle"]},
    "long-fill-in": {
        "interactionType": "long-fill-in",
        "correctResponsesPattern": [
            "{case_matters=false}{lang=en}To store and provide access to learning experiences."
        ],
    },
    "likert": {
        "interactionType": "likert",
        "correctResponsesPattern": ["likert_3"],
        "scale": [
            {"id": "likert_0", "description": {"en-US": "It's OK"}},
            {"id": "likert_3", "description": {"sr-Latn-RS": "Promeniće svet"}},
        ],
    },
    "matching": {
        "interactionType": "matching",
        "correctResponsesPattern": ["ben[.]3[,]chris[.]2"],
        "source": [{"id": "ben"}, {"id": "chris"}],
        "target": [{"id": "2"}, {"id": "3"}],
    },
    "performance": {
        "interactionType": "performance",
        "correctResponsesPattern": ["pong[.]1:[,]dg[.]:10[,]lunch[.]"],
        "steps": [{"id": "pong"}, {"id": "dg"}, {"id": "lunch"}],
    },
    "sequencing": {
        "interactionType": "sequencing",
        "correctResponsesPattern": ["tim[,]mike[,]ells[,]ben"],
        "choices": [{"id": "tim"}, {"id": "ben"}, {"id": "ells"}, {"id": "mike"}],
    },
    "numeric": {"interactionType": "numeric", "correctResponsesPattern": ["4[:]"]},
    "other": {"interactionType": "other", "correctResponsesPattern": ["(35.937432,-86.868896)"]},
}


def with_definition(definition: dict[str, Json]) -> dict[str, Json]:
    base = {
        "description": {"en-US": "A question"},
        "type": "http://adlnet.gov/expapi/activities/cmi.interaction",
    }
    return put(minimal(), "object.definition", {**base, **definition})


@pytest.mark.parametrize("interaction_type", sorted(APPENDIX_C))
def test_appendix_c_interaction_definitions_are_valid(interaction_type: str) -> None:
    """Data Appendix C: example definitions for each cmi.interaction type."""
    valid(with_definition(APPENDIX_C[interaction_type]))


@pytest.mark.parametrize("interaction_type", sorted(APPENDIX_C))
def test_interaction_without_correct_responses_and_empty_pattern(interaction_type: str) -> None:
    """Data 2.4.4.1.s11: correctResponsesPattern is Optional; an empty array means there is no
    correct answer."""
    definition = {"interactionType": interaction_type, "correctResponsesPattern": []}
    valid(with_definition(definition))


@pytest.mark.parametrize(
    "value",
    [
        "true-faLse",
        "choiCe",
        "fill-iN",
        "long-fiLl-in",
        "matchIng",
        "perfOrmance",
        "seqUencing",
        "liKert",
        "nUmeric",
        "Other",
        "essay",
        "",
        1,
    ],
)
def test_interaction_type_must_be_exact(value: Json) -> None:
    """Data 2.4.4.1.s13.b1: Interaction Activities MUST have a valid interactionType;
    2.2.s4.b1.b6: the case of enumerated values must match exactly (2.0 4.2.4.2)."""
    invalid(with_definition({"interactionType": value}), "object.definition.interactionType")


@pytest.mark.parametrize(
    "definition",
    [
        {"correctResponsesPattern": ["true"]},
        {"choices": [{"id": "golf"}]},
        {"scale": [{"id": "likert_0"}]},
        {"source": [{"id": "a"}], "target": [{"id": "b"}]},
        {"steps": [{"id": "s"}]},
    ],
)
def test_interaction_properties_require_interaction_type(definition: Json) -> None:
    """Data 2.4.4.1.s13.b1: Interaction Activities MUST have a valid interactionType."""
    invalid(with_definition(definition), "object.definition.interactionType", "", "required")


@pytest.mark.parametrize(
    ("interaction_type", "component_list"),
    [
        (interaction_type, component_list)
        for interaction_type, allowed in {
            "choice": {"choices"},
            "sequencing": {"choices"},
            "likert": {"scale"},
            "matching": {"source", "target"},
            "performance": {"steps"},
            "true-false": set(),
            "fill-in": set(),
            "long-fill-in": set(),
            "numeric": set(),
            "other": set(),
        }.items()
        for component_list in ("choices", "scale", "source", "target", "steps")
        if component_list not in allowed
    ],
)
def test_component_lists_only_for_their_interaction_types(
    interaction_type: str, component_list: str
) -> None:
    """Data 2.4.4.1 Interaction Components table: choice/sequencing -> choices, likert ->
    scale, matching -> source/target, performance -> steps, others -> no component lists;
    s13.b3: the LRS MAY reject properties not valid for the Interaction Activity."""
    definition = {"interactionType": interaction_type, component_list: [{"id": "a"}]}
    invalid(with_definition(definition), f"object.definition.{component_list}")


@pytest.mark.parametrize("component_list", ["choices", "scale", "source", "target", "steps"])
def test_component_ids_must_be_distinct(component_list: str) -> None:
    """Data 2.4.4.1.s16.b1: Within an array of interaction components, all id values MUST be
    distinct."""
    interaction_type = {
        "choices": "choice",
        "scale": "likert",
        "source": "matching",
        "target": "matching",
        "steps": "performance",
    }[component_list]
    components = [{"id": "a"}, {"id": "b"}, {"id": "a"}]
    definition = {"interactionType": interaction_type, component_list: components}
    invalid(
        with_definition(definition),
        f"object.definition.{component_list}[2].id",
        contains="distinct",
    )
    definition[component_list] = [{"id": "a"}, {"id": "A"}]  # ids are case-sensitive strings
    valid(with_definition(definition))


@pytest.mark.parametrize(
    ("definition", "path"),
    [
        ({"interactionType": "choice", "choices": [{}]}, "object.definition.choices[0].id"),
        (
            {"interactionType": "choice", "choices": [{"id": 1}]},
            "object.definition.choices[0].id",
        ),
        (
            {"interactionType": "choice", "choices": [{"id": "a", "label": "x"}]},
            "object.definition.choices[0].label",
        ),
        (
            {"interactionType": "choice", "choices": [{"id": "a", "description": "x"}]},
            "object.definition.choices[0].description",
        ),
        (
            {
                "interactionType": "likert",
                "scale": [{"id": "a"}, {"id": "b", "description": {"x y": "z"}}],
            },
            'object.definition.scale[1].description["x y"]',
        ),
        ({"interactionType": "choice", "choices": {"id": "a"}}, "object.definition.choices"),
        ({"interactionType": "choice", "choices": ["a"]}, "object.definition.choices[0]"),
        (
            {"interactionType": "true-false", "correctResponsesPattern": "true"},
            "object.definition.correctResponsesPattern",
        ),
        (
            {"interactionType": "numeric", "correctResponsesPattern": ["1", 4]},
            "object.definition.correctResponsesPattern[1]",
        ),
    ],
)
def test_interaction_components_and_patterns(definition: Json, path: str) -> None:
    """Data 2.4.4.1: interaction components are {id: String (Required), description: Language
    Map}; correctResponsesPattern is an Array of Strings."""
    invalid(with_definition(definition), path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", {"en-US": 1}),
        ("name", "example"),
        ("description", {"something": "x"}),
        ("type", "meeting"),
        ("type", ""),
        ("moreInfo", "virtualmeeting.example.com/345256"),
        ("extensions", {"room": "Kilby"}),
        ("extensions", ["http://example.com/x"]),
    ],
)
def test_activity_definition_property_types(key: str, value: Json) -> None:
    """Data 2.4.4.1.s2: name/description Language Maps, type IRI, moreInfo IRL, extensions
    Object with IRI keys."""
    path = f"object.definition.{key}"
    stmt = put(minimal(), "object.definition", {key: value})
    with pytest.raises(StatementValidationError) as info:
        validate_statement(stmt)
    assert info.value.path.startswith(path)


# --------------------------------------------------------------------------------------------
# Data 2.4.5 Result and Score
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "score",
    [
        {"scaled": 0.95},
        {"scaled": 1},
        {"scaled": -1.0},
        {"scaled": 0.6767676},
        {"raw": 0.6767676},
        {"raw": -1000, "min": -1000, "max": -1},
        {"raw": -1, "min": -1000, "max": -1},
        {"raw": 10**30},
        {"min": 0.6767676},
        {"max": 100.6767676},
        {"min": 1, "max": 2},
        {},
    ],
)
def test_valid_scores(score: Json) -> None:
    """Data 2.4.5.1: scaled between -1 and 1 inclusive; raw between min and max (if present,
    otherwise unrestricted) inclusive; min < max."""
    valid(put(minimal(), "result", {"score": score}))


@pytest.mark.parametrize(
    ("score", "field"),
    [
        ({"scaled": 1.01}, "scaled"),
        ({"scaled": -1.00001}, "scaled"),
        ({"scaled": 10**400}, "scaled"),
        ({"raw": 0.6767676, "max": 0.6567676}, "raw"),
        ({"raw": 0.6767676, "min": 1.4067676}, "raw"),
        ({"min": 0.6767676, "max": 0.6767355, "raw": 0.6767643}, "min"),
        ({"min": 5, "max": 5}, "min"),
        ({"scaled": "0.5"}, "scaled"),
        ({"raw": True}, "raw"),
        ({"Raw": 1}, "Raw"),
    ],
)
def test_invalid_scores(score: Json, field: str) -> None:
    """Data 2.4.5.1 Score table (conformance XAPI-00080..83)."""
    invalid(put(minimal(), "result", {"score": score}), f"result.score.{field}")


@pytest.mark.parametrize(
    ("result", "path"),
    [
        ({"score": 50}, "result.score"),
        ({"score": "should fail"}, "result.score"),
        ({"success": "true"}, "result.success"),
        ({"completion": 1}, "result.completion"),
        ({"response": 42}, "result.response"),
        ({"duration": 12345}, "result.duration"),
        ({"duration": "should fail"}, "result.duration"),
        ({"duration": "PA1H0M0S"}, "result.duration"),
        ({"duration": "P4W1D"}, "result.duration"),
        ({"extensions": {"not an iri": 1}}, 'result.extensions["not an iri"]'),
        ("passed", "result"),
    ],
)
def test_invalid_results(result: Json, path: str) -> None:
    """Data 2.4.5: score Object, success/completion Boolean, response String, duration
    Duration (4.6), extensions Object."""
    invalid(put(minimal(), "result", result), path)


@pytest.mark.parametrize(
    "duration", ["PT4H35M59.14S", "P3Y1M29DT4H35M59.14S", "P3Y", "P4W", "PT1H0M0.1S", "PT0S"]
)
def test_valid_result_durations(duration: str) -> None:
    """Data 4.6.s2: example ISO 8601 Durations."""
    valid(put(minimal(), "result", {"duration": duration}))


# --------------------------------------------------------------------------------------------
# Data 2.4.6 Context
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "path"),
    [
        ({"registration": "should fail"}, "context.registration"),
        ({"registration": {"key": "should fail"}}, "context.registration"),
        ({"instructor": {"key": "should fail"}}, "context.instructor.key"),
        ({"instructor": "should fail"}, "context.instructor"),
        ({"instructor": {"name": "no ifi"}}, "context.instructor"),
        ({"team": {"mbox": "mailto:a@example.com"}}, "context.team.objectType"),
        ({"team": {"objectType": "Agent", "mbox": "mailto:a@x.com"}}, "context.team.objectType"),
        ({"team": "should fail"}, "context.team"),
        ({"team": {"objectType": "Group"}}, "context.team.member"),
        ({"contextActivities": "should fail"}, "context.contextActivities"),
        ({"revision": 12345}, "context.revision"),
        ({"platform": {"key": "x"}}, "context.platform"),
        ({"language": 12345}, "context.language"),
        ({"language": "something"}, "context.language"),
        ({"language": {"a12345": "should fail"}}, "context.language"),
        ({"statement": {"objectType": "statementref"}}, "context.statement.objectType"),
        ({"statement": {"objectType": "StatementRef", "id": "x"}}, "context.statement.id"),
        ({"statement": {"id": UUID_1}}, "context.statement.objectType"),
        (
            {"statement": {"objectType": "SubStatement", "id": UUID_1}},
            "context.statement.objectType",
        ),
        ({"extensions": {"altitude": 1}}, 'context.extensions["altitude"]'),
        ({"extensions": []}, "context.extensions"),
    ],
)
def test_invalid_context_properties(context: Json, path: str) -> None:
    """Data 2.4.6.s3: registration UUID, instructor Agent (MAY be a Group), team Group,
    contextActivities Object, revision/platform String, language RFC 5646 String, statement
    Statement Reference, extensions Object (conformance XAPI-00086..92)."""
    invalid(put(minimal(), "context", context), path)


@pytest.mark.parametrize("key", ["parent", "grouping", "category", "other"])
@pytest.mark.parametrize("single", [True, False])
def test_context_activities_single_or_array(key: str, single: bool) -> None:
    """Data 2.4.6.2.s4.b2: Every value in the contextActivities Object MUST be either a single
    Activity Object or an array of Activity Objects."""
    activity = {"id": "http://www.example.com/meetings/series/267", "objectType": "Activity"}
    value = activity if single else [activity, {"id": "http://www.example.com/2"}]
    valid(put(minimal(), "context", {"contextActivities": {key: value}}))


@pytest.mark.parametrize("key", ["Parent", "parents", "sibling", "GROUPING", ""])
def test_context_activities_keys(key: str) -> None:
    """Data 2.4.6.2.s4.b1: Every key in the contextActivities Object MUST be one of parent,
    grouping, category, or other."""
    stmt = put(minimal(), "context", {"contextActivities": {key: []}})
    invalid(stmt, f"context.contextActivities.{key}")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("http://www.example.com/a", "context.contextActivities.parent"),
        ([{"id": "not an iri"}], "context.contextActivities.parent[0].id"),
        (
            [{"objectType": "Agent", "mbox": "mailto:a@x.com"}],
            "context.contextActivities.parent[0].objectType",
        ),
        ([{"id": "http://ex.com/a"}, "http://ex.com/b"], "context.contextActivities.parent[1]"),
        (
            {"id": "http://ex.com/a", "definition": {"type": "t"}},
            "context.contextActivities.parent.definition.type",
        ),
    ],
)
def test_context_activities_values_must_be_activities(value: Json, path: str) -> None:
    """Data 2.4.6.2.s4.b2: values are Activity Objects (or arrays of them)."""
    invalid(put(minimal(), "context", {"contextActivities": {"parent": value}}), path)


NON_ACTIVITY_OBJECTS: list[Json] = [
    {"objectType": "Agent", "mbox": "mailto:a@example.com"},
    {"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]},
    {"objectType": "StatementRef", "id": UUID_2},
    {
        "objectType": "SubStatement",
        "actor": {"mbox": "mailto:a@example.com"},
        "verb": {"id": "http://example.com/v"},
        "object": {"id": "http://example.com/a"},
    },
]


@pytest.mark.parametrize("key", ["revision", "platform"])
@pytest.mark.parametrize("obj", NON_ACTIVITY_OBJECTS, ids=lambda o: o["objectType"])
@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
def test_revision_and_platform_only_with_activity_objects(
    key: str, obj: Json, version: str
) -> None:
    """Data 2.4.6.s4.b1/b2: The "revision"/"platform" property MUST only be used if the
    Statement's Object is an Activity (conformance XAPI-00084/85, also run for 2.0.0)."""
    stmt = put(put(minimal(), "object", obj), "context", {key: "x"})
    invalid(stmt, f"context.{key}", version, "MUST only be used")


@pytest.mark.parametrize("key", ["revision", "platform"])
def test_revision_and_platform_inside_substatement(key: str) -> None:
    """Data 2.4.6.s4: the rule applies to a SubStatement's own Object too (it is validated as
    a Statement)."""
    stmt = put(substatement(), "object.object", {"objectType": "StatementRef", "id": UUID_2})
    stmt = drop(stmt, "object.context.platform" if key == "revision" else "object.context.revision")
    invalid(stmt, f"object.context.{key}", contains="MUST only be used")
    # ... and with an Activity Object, with or without objectType, they are fine.
    valid(put(minimal(), "context", {key: "x"}))
    valid(put(put(minimal(), "object.objectType", "Activity"), "context", {key: "x"}))


@pytest.mark.parametrize(
    "language", ["en", "en-US", "zh-Hant", "cmn", "tlh", "fr-CA", "de-CH-1996"]
)
def test_context_language_valid(language: str) -> None:
    """Data 2.4.6.s3: language is a String as defined in RFC 5646."""
    valid(put(minimal(), "context", {"language": language}))


# --------------------------------------------------------------------------------------------
# 2.0 4.2.2.5 contextAgents / contextGroups
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["contextAgents", "contextGroups"])
def test_context_agents_and_groups_only_in_2_0(key: str) -> None:
    """contextAgents/contextGroups are new in IEEE 9274.1.1 (2.0.0); in 1.0.x they are
    properties not allowed by the specification (Data 2.2.s4.b1.b7)."""
    stmt = v2_statement()
    del stmt["version"]
    valid(stmt, "2.0.0")
    invalid(stmt, f"context.{key}" if key == "contextAgents" else "context.contextAgents", "1.0.3")
    only = put(minimal(), "context", {key: []})
    invalid(only, f"context.{key}", "1.0.3", "2.0.0")
    valid(only, "2.0.0")


@pytest.mark.parametrize(
    ("item", "path"),
    [
        (
            {"objectType": "Should fail", "agent": {"mbox": "mailto:p@example.com"}},
            "context.contextAgents[0].objectType",
        ),
        (
            {"objectType": "ContextAgent", "agent": {"mbox": "mailto:p@example.com"}},
            "context.contextAgents[0].objectType",
        ),
        ({"agent": {"mbox": "mailto:p@example.com"}}, "context.contextAgents[0].objectType"),
        ({"objectType": "contextAgent"}, "context.contextAgents[0].agent"),
        (
            {"objectType": "contextAgent", "agent": {"key": "Should fail"}},
            "context.contextAgents[0].agent.key",
        ),
        (
            {"objectType": "contextAgent", "agent": {"objectType": "Group", "member": []}},
            "context.contextAgents[0].agent.objectType",
        ),
        (
            {
                "objectType": "contextAgent",
                "agent": {"mbox": "mailto:p@x.com"},
                "relevantTypes": [],
            },
            "context.contextAgents[0].relevantTypes",
        ),
        (
            {
                "objectType": "contextAgent",
                "agent": {"mbox": "mailto:p@x.com"},
                "relevantTypes": ["abc"],
            },
            "context.contextAgents[0].relevantTypes[0]",
        ),
        (
            {
                "objectType": "contextAgent",
                "agent": {"mbox": "mailto:p@x.com"},
                "relevantTypes": "http://x.com/t",
            },
            "context.contextAgents[0].relevantTypes",
        ),
        (
            {"objectType": "contextAgent", "agent": {"mbox": "mailto:p@x.com"}, "extra": 1},
            "context.contextAgents[0].extra",
        ),
        ("mailto:p@x.com", "context.contextAgents[0]"),
    ],
)
def test_invalid_context_agents(item: Json, path: str) -> None:
    """2.0 4.2.2.5 Context Agents table: objectType "contextAgent" (Required), agent (Agent
    Object, Required), relevantTypes ("A collection of 1 or more" Relevant Type IRIs)."""
    invalid(put(minimal(), "context", {"contextAgents": [item]}), path, "2.0.0")


@pytest.mark.parametrize(
    ("item", "path"),
    [
        (
            {
                "objectType": "Should fail",
                "group": {"objectType": "Group", "mbox": "mailto:t@x.com"},
            },
            "context.contextGroups[0].objectType",
        ),
        ({"objectType": "contextGroup"}, "context.contextGroups[0].group"),
        (
            {"objectType": "contextGroup", "group": {"key": "Should fail"}},
            "context.contextGroups[0].group.key",
        ),
        (
            {"objectType": "contextGroup", "group": {"mbox": "mailto:t@x.com"}},
            "context.contextGroups[0].group.objectType",
        ),
        (
            {
                "objectType": "contextGroup",
                "group": {"objectType": "Group", "mbox": "mailto:t@x.com"},
                "relevantTypes": [],
            },
            "context.contextGroups[0].relevantTypes",
        ),
        (
            {
                "objectType": "contextGroup",
                "group": {"objectType": "Group", "mbox": "mailto:t@x.com"},
                "relevantTypes": ["abc"],
            },
            "context.contextGroups[0].relevantTypes[0]",
        ),
        (
            {
                "objectType": "contextGroup",
                "group": {"objectType": "Group", "mbox": "mailto:t@x.com"},
                "member": [{"objectType": "Agent", "mbox": "mailto:p@x.com"}],
            },
            "context.contextGroups[0].member",
        ),
    ],
)
def test_invalid_context_groups(item: Json, path: str) -> None:
    """2.0 4.2.2.5 Context Group table: objectType "contextGroup" (Required), group (Group,
    Required), relevantTypes (1 or more Relevant Type IRIs)."""
    invalid(put(minimal(), "context", {"contextGroups": [item]}), path, "2.0.0")


def test_context_agents_in_substatement_2_0() -> None:
    """Conformance (2.0): contextAgents/contextGroups inside a SubStatement's context."""
    stmt = put(
        substatement(), "object.context.contextAgents", v2_statement()["context"]["contextAgents"]
    )
    valid(stmt, "2.0.0")
    invalid(stmt, "object.context.contextAgents", "1.0.3")


# --------------------------------------------------------------------------------------------
# Data 2.4.9 Authority
# --------------------------------------------------------------------------------------------

OAUTH_PAIR: list[Json] = [
    {
        "account": {
            "homePage": "http://example.com/xAPI/OAuth/Token",
            "name": "oauth_consumer_x75db",
        }
    },
    {"mbox": "mailto:bob@example.com"},
]


def test_authority_agent_or_oauth_group_valid() -> None:
    """Data 2.4.9.s3.b1: Authority MUST be an Agent, except in 3-legged OAuth, where it MUST
    be a Group with two Agents (Data 2.4.9.s8 example)."""
    valid(put(minimal(), "authority", {"objectType": "Agent", "mbox": "mailto:a@example.com"}))
    valid(put(minimal(), "authority", {"mbox": "mailto:a@example.com"}))
    valid(put(minimal(), "authority", {"objectType": "Group", "member": OAUTH_PAIR}))


@pytest.mark.parametrize(
    ("authority", "path"),
    [
        ({"objectType": "Group", "member": OAUTH_PAIR[:1]}, "authority.member"),
        (
            {"objectType": "Group", "member": [*OAUTH_PAIR, {"mbox": "mailto:j@example.com"}]},
            "authority.member",
        ),
        ({"objectType": "Group", "member": []}, "authority.member"),
        ({"objectType": "Group"}, "authority.member"),
        (
            {"objectType": "Group", "member": OAUTH_PAIR, "mbox": "mailto:bob@example.com"},
            "authority",
        ),
        ({"objectType": "Group", "openid": "http://openid.example.org/12345"}, "authority"),
        (
            {
                "objectType": "Group",
                "member": [OAUTH_PAIR[0], {"objectType": "Group", "member": []}],
            },
            "authority.member[1].objectType",
        ),
        ({"name": "no ifi"}, "authority"),
        ("admin", "authority"),
    ],
)
def test_authority_invalid(authority: Json, path: str) -> None:
    """Data 2.4.9.s3.b1 (conformance XAPI-00024, XAPI-00098): an Identified Group, or a Group
    with more or fewer than two Agents, is not a valid authority."""
    invalid(put(minimal(), "authority", authority), path)


# --------------------------------------------------------------------------------------------
# Data 2.4.11 Attachments, 2.6 Signed Statements
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"usageType": "should fail"}, "attachments[0].usageType"),
        ({"display": 12345}, "attachments[0].display"),
        ({"display": "should fail"}, "attachments[0].display"),
        ({"display": {"something": "x"}}, 'attachments[0].display["something"]'),
        ({"description": 12345}, "attachments[0].description"),
        (
            {"description": {"es-MX": "ok", "something": "x"}},
            'attachments[0].description["something"]',
        ),
        ({"contentType": 999}, "attachments[0].contentType"),
        ({"contentType": "text"}, "attachments[0].contentType"),
        ({"contentType": ""}, "attachments[0].contentType"),
        ({"length": "should fail"}, "attachments[0].length"),
        ({"length": -1}, "attachments[0].length"),
        ({"length": 1.5}, "attachments[0].length"),
        ({"sha2": 12345}, "attachments[0].sha2"),
        ({"sha2": "not a hash"}, "attachments[0].sha2"),
        ({"sha2": "495395e777cd98da"}, "attachments[0].sha2"),
        ({"fileUrl": "should fail"}, "attachments[0].fileUrl"),
        ({"fileURL": "http://over.there.com/file.txt"}, "attachments[0].fileURL"),
    ],
)
def test_invalid_attachment_properties(change: Json, path: str) -> None:
    """Data 2.4.11.s2: usageType IRI, display Language Map, description Language Map,
    contentType Internet Media Type, length Integer, sha2 String (SHA-2 hash), fileUrl IRL
    (conformance XAPI-00102..107)."""
    invalid(put(minimal(), "attachments", [{**ATTACHMENT, **change}]), path)


@pytest.mark.parametrize("key", ["usageType", "display", "contentType", "length", "sha2"])
def test_required_attachment_properties(key: str) -> None:
    """Data 2.4.11.s2: usageType, display, contentType, length and sha2 are Required ("sha2
    ... is always required, even if fileURL is also specified")."""
    attachment = {k: v for k, v in ATTACHMENT.items() if k != key}
    invalid(
        put(minimal(), "attachments", [attachment]), f"attachments[0].{key}", contains="required"
    )


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"fileUrl": None},
        {"description": None},
        {"length": 0},
        {"length": 27.0},
        {"contentType": 'multipart/form-data; boundary="a b"'},
        {"sha2": "672FA5FA658017F1B72D65036F13379C6AB05D4AB3B6664908D8ACF0B6A0C634"},
    ],
)
def test_valid_attachments(change: Json) -> None:
    """Data 2.4.11.s2: description and fileUrl are Optional."""
    attachment = {k: v for k, v in {**ATTACHMENT, **change}.items() if v is not None}
    valid(put(minimal(), "attachments", [attachment]))


def test_attachments_must_be_an_array() -> None:
    """Data 2.4.s1: attachments is an "Ordered array of Attachment Objects" (XAPI-00025)."""
    invalid(put(minimal(), "attachments", ATTACHMENT), "attachments")
    invalid(put(minimal(), "attachments", [12345]), "attachments[0]")
    invalid(put(minimal(), "attachments", ["should fail"]), "attachments[0]")
    valid(put(minimal(), "attachments", []))


def test_signature_attachment_content_type() -> None:
    """Data 2.6.s4.b1: a signature is an Attachment with usageType
    http://adlnet.gov/expapi/attachments/signature and a contentType of
    application/octet-stream; 2.6.s5.b1: malformed signatures are rejected."""
    signature = {
        "usageType": "http://adlnet.gov/expapi/attachments/signature",
        "display": {"en-US": "Signature"},
        "description": {"en-US": "A test signature"},
        "contentType": "application/octet-stream",
        "length": 4235,
        "sha2": "672fa5fa658017f1b72d65036f13379c6ab05d4ab3b6664908d8acf0b6a0c634",
    }
    valid(put(minimal(), "attachments", [signature]))
    wrong = {**signature, "contentType": "application/json"}
    invalid(put(minimal(), "attachments", [wrong]), "attachments[0].contentType")


# --------------------------------------------------------------------------------------------
# Data 2.3.2 Voiding
# --------------------------------------------------------------------------------------------


def voiding(obj: Json) -> dict[str, Json]:
    return {
        "actor": {
            "objectType": "Agent",
            "name": "Example Admin",
            "mbox": "mailto:admin@example.adlnet.gov",
        },
        "verb": {"id": VOIDED, "display": {"en-US": "voided"}},
        "object": obj,
    }


def test_voiding_statement_example_is_valid() -> None:
    """Data 2.3.2.s3: example voiding Statement."""
    valid(voiding({"objectType": "StatementRef", "id": UUID_2}))
    valid(voiding({"objectType": "StatementRef", "id": UUID_2}), "2.0.0")


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"id": "http://example.com/activity"}, "object"),
        ({"objectType": "Activity", "id": "http://example.com/activity"}, "object"),
        ({"objectType": "Agent", "mbox": "mailto:a@example.com"}, "object"),
        ({"objectType": "StatementRef"}, "object.id"),
        ({"objectType": "statementref", "id": UUID_2}, "object.objectType"),
        (NON_ACTIVITY_OBJECTS[3], "object"),
    ],
)
@pytest.mark.parametrize("version", ["1.0.3", "2.0.0"])
def test_voiding_statement_object_must_be_a_statement_ref(
    obj: Json, path: str, version: str
) -> None:
    """Data 2.3.2.s2.b1: the Object of a voiding Statement MUST have the "objectType" property
    set to StatementRef; b2: it MUST specify the id of the Statement-to-be-voided (2.0 4.2.5)."""
    invalid(voiding(obj), path, version)


def test_voiding_rule_applies_inside_substatements() -> None:
    """Data 2.4.4.3.s8.b2: a SubStatement MUST be validated as a Statement."""
    stmt = put(substatement(), "object.verb.id", VOIDED)
    invalid(stmt, "object.object", contains="StatementRef")


# --------------------------------------------------------------------------------------------
# Data 4.1 Extensions, 4.2 Language Maps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["object.definition.extensions", "result.extensions", "context.extensions"]
)
@pytest.mark.parametrize(
    "value", [None, 1, "s", [], {}, [1, {"a": None}], {"nested": {"deep": [True]}}, 10**100]
)
def test_extension_values_may_be_any_json(where: str, value: Json) -> None:
    """Data 4.1.s2: The values of an extension can be any JSON value or data structure;
    4.1.s3.b2: An LRS MUST NOT reject a Statement based on the values of the extensions map."""
    valid(put(full(), where, {"http://example.com/ext": value}))


@pytest.mark.parametrize("key", ["altitude", "", "example.com/ext", "http://example.com/a b"])
def test_extension_keys_must_be_iris(key: str) -> None:
    """Data 4.1.s3.b1: The keys of an extensions map MUST be IRIs."""
    invalid(put(full(), "result.extensions", {key: 1}), f"result.extensions[{json.dumps(key)}]")


def test_deeply_nested_extension_value_is_not_a_problem() -> None:
    """Extension values are not traversed, so depth cannot exhaust the stack."""
    deep: Json = []
    for _ in range(100_000):
        deep = [deep]
    valid(put(minimal(), "result", {"extensions": {"http://example.com/deep": deep}}))


@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("verb.display", "de"),
        ("object.definition.name", "de-DE"),
        ("object.definition.description", "zh-Hant"),
        ("verb.display", "sr-Cyrl"),
        ("object.definition.name", "zh-Hans-CN"),
        ("object.definition.description", "ase"),
        ("verb.display", "es-419"),
        ("verb.display", "x-private"),
        ("verb.display", "i-klingon"),
        ("verb.display", "en-US-x-twain"),
    ],
)
def test_language_map_keys_valid(path: str, tag: str) -> None:
    """Data 4.2: A language map is a dictionary where the key is a RFC 5646 Language Tag
    (conformance XAPI-00013 examples)."""
    valid(put(put(minimal(), "object.definition", {}), path, {tag: "text"}))


@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("verb.display", "something"),
        ("object.definition.name", "a12345"),
        ("object.definition.name", "zh-z-aaa-z-bbb-c-ccc"),
        ("object.definition.description", "en_US"),
        ("verb.display", ""),
        ("verb.display", "en-"),
        ("verb.display", "e"),
        ("verb.display", "en-US-"),
        ("verb.display", "de-DE-1901-1901"),
    ],
)
def test_language_map_keys_invalid(path: str, tag: str) -> None:
    """Data 2.2.s4.b2: The LRS MUST at least validate that the sequence of token lengths for
    language map keys matches the RFC 5646 standard."""
    stmt = put(put(minimal(), "object.definition", {}), path, {tag: "text"})
    invalid(stmt, f"{path}[{json.dumps(tag)}]")


@pytest.mark.parametrize("value", [1, None, ["a"], {"en": "a"}, True])
def test_language_map_values_must_be_strings(value: Json) -> None:
    """Data 4.2: "the value is a string in the language specified in the tag"."""
    invalid(put(minimal(), "verb.display", {"en-US": value}), 'verb.display["en-US"]')


# --------------------------------------------------------------------------------------------
# validate_agent (agent parameters, Data 2.2.s4.b4)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent",
    [
        {"mbox": "mailto:a@example.com"},
        {"objectType": "Agent", "account": {"homePage": "http://ex.com", "name": "n"}},
        {"objectType": "Group", "mbox": "mailto:team@example.com"},
        {"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]},
    ],
)
def test_validate_agent_valid(agent: Json) -> None:
    """Data 2.2.s4.b4: The LRS MUST validate parameter values to the same standards required
    for values of the same types in Statements."""
    validate_agent(agent)
    validate_agent(agent, version="2.0.0")


@pytest.mark.parametrize(
    ("agent", "path"),
    [
        ({}, "agent"),
        ({"mbox": "a@example.com"}, "agent.mbox"),
        ({"mbox": "mailto:a@example.com", "openid": "http://o.example.org/"}, "agent"),
        ({"objectType": "Group"}, "agent.member"),
        ({"objectType": "agent", "mbox": "mailto:a@example.com"}, "agent.objectType"),
        ({"mbox": "mailto:a@example.com", "extra": 1}, "agent.extra"),
        ({"mbox": None}, "agent.mbox"),
        ("mailto:a@example.com", "agent"),
        (None, "agent"),
    ],
)
def test_validate_agent_invalid(agent: Json, path: str) -> None:
    with pytest.raises(StatementValidationError) as info:
        validate_agent(agent)
    assert info.value.path == path


def test_validate_agent_custom_path() -> None:
    with pytest.raises(StatementValidationError) as info:
        validate_agent({"mbox": "x"}, path="")
    assert info.value.path == "mbox"


# --------------------------------------------------------------------------------------------
# Format predicates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "http://example.com",
        "http://example.com/xapi/verbs#defenestrated",
        "https://www.youtube.com/watch?v=xh4kIiH3Sm8",
        "http://example.com/فعل/خواندن",
        "urn:uuid:fd41c918-b88b-4b20-a0a5-a4c32391aaa0",
        "mailto:ann@example.com",
        "tag:example.com,2024:x",
        "http://[2001:db8::1]:8080/p",
        "http://user:pw@example.com:80/p?q=1&r=%20#f",
        "ftp://ftp.example.com/%E2%82%AC",
        "http://例え.テスト/パス",
        "x-custom+scheme.v1:path",
    ],
)
def test_is_iri_true(value: str) -> None:
    """Data 4.3 / RFC 3987: absolute IRIs, including non-ASCII characters."""
    assert is_iri(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "should fail",
        "example.com",
        "/relative/path",
        "#fragment",
        "//example.com/x",
        ":nothing",
        "1http://example.com",
        "http://example.com/a b",
        "http://example.com/<x>",
        'http://example.com/"q"',
        "http://example.com/%zz",
        "http://example.com/%4",
        "http://example.com/a#b#c",
        "http://[::1/x",
        "http://[not-ipv6]/x",
        "http://host:8o/x",
        "http://exa mple.com",
        "http://example.com/\x00",
        "http://example.com/\u0085",
        "http://example.com/\ud800",
        "c:\\windows\\path",
        None,
        1,
    ],
)
def test_is_iri_false(value: Json) -> None:
    """Data 2.2.s4.b1.b4/b8: reject non-format-following IRIs, including the empty string and
    IRIs without a scheme."""
    assert not is_iri(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fd41c918-b88b-4b20-a0a5-a4c32391aaa0", True),
        ("FD41C918-B88B-4B20-A0A5-A4C32391AAA0", True),
        ("fd41c918-b88b-4b20-a0a5-a4c32391aaa", False),
        ("fd41c918-b88b-4b20-a0a5-a4c32391aaa0\n", False),
        ("fd41c918_b88b_4b20_a0a5_a4c32391aaa0", False),
        ("fd41c918-b88b-4b20-a0a5-a4c32391aaag", False),
        ("\uff46d41c918-b88b-4b20-a0a5-a4c32391aaa0", False),
        (None, False),
    ],
)
def test_is_uuid(value: Json, expected: bool) -> None:
    """Data 4.4: UUIDs MUST be in the standard string form."""
    assert is_uuid(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("en", True),
        ("en-US", True),
        ("zh-Hant-TW", True),
        ("sr-Latn-RS", True),
        ("es-419", True),
        ("de-CH-1901", True),
        ("sl-rozaj-biske", True),
        ("zh-yue-HK", True),
        ("en-a-bbb-x-a-ccc", True),
        ("x-whatever", True),
        ("EN-us", True),
        ("zh-min-nan", True),
        ("sgn-BE-FR", True),
        ("tlh", True),
        ("something", False),
        ("a12345", False),
        ("en_US", False),
        ("en--US", False),
        ("en-US-", False),
        ("-en", False),
        ("abcdefghi", False),
        ("de-419-DE", False),
        ("zh-z-aaa-z-bbb-c-ccc", False),
        ("de-1901-1901", False),
        ("en-a", False),
        ("x", False),
        ("en-x-", False),
        ("en\u017f", False),
        ("en-US\n", False),
        ("", False),
        (None, False),
    ],
)
def test_is_language_tag(value: Json, expected: bool) -> None:
    """Data 2.2.s4.b2 / RFC 5646 section 2.1 ABNF, 2.2.5 (no repeated variants) and 2.2.6 (no
    repeated singletons)."""
    assert is_language_tag(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PT4H35M59.14S", True),
        ("P3Y1M29DT4H35M59.14S", True),
        ("P3Y", True),
        ("P4W", True),
        ("P0.5W", True),
        ("PT1H0M0.1S", True),
        ("PT0,5S", True),
        ("P1DT12H", True),
        ("PT36H", True),
        ("P1M", True),
        ("PT1M", True),
        ("P4W1D", False),
        ("P1DT", False),
        ("P", False),
        ("PT", False),
        ("PA1H0M0S", False),
        ("P1.5Y2M", False),
        ("PT1.5H30M", False),
        ("P16559.14S", False),
        ("P0003-01-29T04:35:59", False),
        ("-P1D", False),
        ("p1d", False),
        ("P1D\n", False),
        ("P\u0661D", False),
        ("P1H", False),
        ("T1H", False),
        ("", False),
        (12345, False),
    ],
)
def test_is_iso8601_duration(value: Json, expected: bool) -> None:
    """Data 4.6.s1.b1: A Duration MUST be expressed using the format for Duration in ISO
    8601:2004(E) section 4.4.3.2; the alternative format of section 4.4.3.3 MUST NOT be
    used; 4.6.s2: 'P4W1D' is not valid."""
    assert is_iso8601_duration(value) is expected


# --------------------------------------------------------------------------------------------
# Robustness: any input gives StatementValidationError or passes (never another exception)
# --------------------------------------------------------------------------------------------

_KEYS = sorted(
    {
        "id",
        "actor",
        "verb",
        "object",
        "result",
        "context",
        "timestamp",
        "stored",
        "authority",
        "version",
        "attachments",
        "objectType",
        "name",
        "mbox",
        "mbox_sha1sum",
        "openid",
        "account",
        "homePage",
        "member",
        "display",
        "definition",
        "description",
        "type",
        "moreInfo",
        "extensions",
        "interactionType",
        "correctResponsesPattern",
        "choices",
        "scale",
        "source",
        "target",
        "steps",
        "score",
        "scaled",
        "raw",
        "min",
        "max",
        "success",
        "completion",
        "response",
        "duration",
        "registration",
        "instructor",
        "team",
        "contextActivities",
        "parent",
        "grouping",
        "category",
        "other",
        "revision",
        "platform",
        "language",
        "statement",
        "contextAgents",
        "contextGroups",
        "agent",
        "group",
        "relevantTypes",
        "usageType",
        "contentType",
        "length",
        "sha2",
        "fileUrl",
        "Agent",
        "Group",
        "Activity",
        "SubStatement",
        "StatementRef",
        "contextAgent",
        "contextGroup",
        "en-US",
        "http://example.com/x",
    }
)
_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text()
    | st.sampled_from(_KEYS)
)
json_values = st.recursive(
    _leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(["1.0.3", "2.0.0"]))
def test_arbitrary_json_never_crashes(value: Json, version: str) -> None:
    """Any JSON value either validates or raises StatementValidationError."""
    for check in (
        lambda: validate_statement(value, version=version),
        lambda: validate_agent(value, version=version),
    ):
        error: StatementValidationError | None = None
        try:
            check()
        except StatementValidationError as exc:
            error = exc
        if error is not None:
            assert isinstance(error.path, str)
            assert isinstance(error.message, str)
            assert error.message


_MUTATION_PATHS = [(name, path) for name, base, _ in _bases() for path, _ in walk(base)]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MUTATION_PATHS), json_values, st.sampled_from(["1.0.3", "2.0.0"]))
def test_mutated_statements_never_crash(target: tuple[str, str], value: Json, version: str) -> None:
    """Replacing any part of a valid Statement with arbitrary JSON never raises anything but
    StatementValidationError, and an error path always points into the Statement."""
    name, path = target
    base = {n: b for n, b, _ in _bases()}[name]
    stmt = put(base, path, value)
    error: StatementValidationError | None = None
    try:
        validate_statement(stmt, version=version, path="statements[0]")
    except StatementValidationError as exc:
        error = exc
    if error is not None:
        assert error.path.startswith("statements[0]")


@settings(max_examples=200)
@given(st.text())
def test_predicates_never_crash(text: str) -> None:
    for predicate in (is_iri, is_uuid, is_language_tag, is_iso8601_duration):
        assert isinstance(predicate(text), bool)


def _outcome(stmt: Json, version: str, parsed_json: bool) -> tuple[str, str] | None:
    try:
        validate_statement(stmt, version=version, path="statements[0]", parsed_json=parsed_json)
    except StatementValidationError as exc:
        return (exc.path, exc.message)
    return None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MUTATION_PATHS), json_values, st.sampled_from(["1.0.3", "2.0.0"]))
def test_recognising_parts_seen_valid_changes_no_outcome(
    target: tuple[str, str], value: Json, version: str
) -> None:
    """With `parsed_json`, after every part of the base Statements was seen valid, a Statement
    with any one part replaced by arbitrary JSON is accepted or refused exactly as when every
    part is checked, with the same error."""
    name, path = target
    stmt = put({n: b for n, b, _ in _bases()}[name], path, value)
    _recognise_the_bases()
    assert _outcome(stmt, version, True) == _outcome(stmt, version, False)


# --------------------------------------------------------------------------------------------
# Parts seen valid before (parsed_json)
# --------------------------------------------------------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Record the path of every call of the validator's check `name`."""
    from lrs.xapi import validation

    calls: list[str] = []
    check = getattr(validation, name)

    def counted(value: object, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        return check(value, path, *args, **kwargs)

    monkeypatch.setattr(validation, name, counted)
    return calls


@pytest.mark.parametrize(
    ("check", "first_paths"),
    [
        ("_agent_or_group", ["actor"]),
        ("_verb", ["verb"]),
        ("_activity_definition", ["object.definition"]),
        ("_context_activities", ["context.contextActivities"]),
    ],
)
def test_a_part_seen_valid_is_not_checked_again(
    monkeypatch: pytest.MonkeyPatch, check: str, first_paths: list[str]
) -> None:
    """The actor, Verb, Activities and contextActivities of a Statement are checked the first
    time their JSON text is seen (parsed_json), not again; without parsed_json, every time."""
    from lrs.xapi.validation import forget_known_values

    forget_known_values()
    calls = _counting(monkeypatch, check)
    stmt = full()
    stmt["object"]["definition"]["name"] = {"en-US": "seen once: " + check}
    stmt["context"]["contextActivities"]["other"] = [{"id": "http://example.com/" + check}]

    def checked() -> list[str]:  # where the same check also runs uncached (the authority)
        return [path for path in calls if path in first_paths]

    validate_statement(copy.deepcopy(stmt), parsed_json=True)
    assert checked() == first_paths
    validate_statement(copy.deepcopy(stmt), parsed_json=True)
    assert checked() == first_paths
    validate_statement(copy.deepcopy(stmt))
    assert checked() == first_paths * 2
    forget_known_values()
    validate_statement(copy.deepcopy(stmt), parsed_json=True)
    assert checked() == first_paths * 3


def test_one_activity_seen_valid_is_recognised_wherever_it_appears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The object's Activity, seen valid, is not checked again in contextActivities."""
    from lrs.xapi.validation import forget_known_values

    forget_known_values()
    calls = _counting(monkeypatch, "_activity")
    activity = {"objectType": "Activity", "id": "http://example.com/anywhere"}
    stmt = minimal()
    stmt["object"] = copy.deepcopy(activity)
    validate_statement(copy.deepcopy(stmt), parsed_json=True)
    stmt["context"] = {"contextActivities": {"parent": [copy.deepcopy(activity)]}}
    validate_statement(stmt, parsed_json=True)
    assert calls == ["object"]


def test_an_invalid_part_is_reported_each_time_at_its_own_place() -> None:
    stmt = minimal()
    stmt["object"] = {"id": "not an IRI"}
    stmt["context"] = {"contextActivities": {"parent": [{"id": "not an IRI"}]}}
    for _ in range(2):
        with pytest.raises(StatementValidationError) as info:
            validate_statement(copy.deepcopy(stmt), parsed_json=True)
        assert info.value.path == "object.id"
    stmt["object"] = {"id": "http://example.com/fine"}
    with pytest.raises(StatementValidationError) as info:
        validate_statement(stmt, parsed_json=True)
    assert info.value.path == "context.contextActivities.parent[0].id"


def test_parts_the_json_writer_refuses_are_checked_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An integer beyond 64 bits (valid in an extension) has no JSON text orjson writes: such
    a part is checked every time, and still accepted."""
    calls = _counting(monkeypatch, "_activity_definition")
    stmt = minimal()
    stmt["object"]["definition"] = {"extensions": {"http://example.com/big": 2**70}}
    for _ in range(2):
        validate_statement(copy.deepcopy(stmt), parsed_json=True)
    assert calls == ["object.definition"] * 2


def test_the_set_of_values_seen_valid_is_bounded() -> None:
    from lrs.xapi.validation import _KnownValid

    checked: list[object] = []

    def check(value: object, path: str) -> None:
        checked.append(value)

    known = _KnownValid(limit=2)
    for value in ("a", "b", "a", "c", "a", "c"):
        known.check(check, value, "")
    # "c" found the set full ("a", "b"): it started again with "c" alone, so "a" was checked
    # again, and then both were known.
    assert checked == ["a", "b", "c", "a"]
