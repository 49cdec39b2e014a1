"""Statement comparison (xAPI 1.0.3 Data 2.3.1 "Statement Comparison Requirements";
IEEE 9274.1.1 4.2 "Statement Immutability")."""

import copy

from lrs.xapi.comparison import statements_equivalent

V1 = "1.0.3"
V2 = "2.0.0"


def base() -> dict:
    return {
        "id": "3A0B5D1E-2B4C-4D6E-8F10-1A2B3C4D5E6F",
        "actor": {"mbox": "mailto:Learner@Example.COM", "name": "Learner"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en-US": "done"}},
        "object": {
            "id": "http://example.com/activities/1",
            "definition": {"name": {"en-US": "Course"}},
        },
        "result": {"score": {"scaled": 0.95}, "success": True, "duration": "PT1M30.25S"},
        "context": {
            "registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
            "contextActivities": {"parent": {"id": "http://example.com/activities/parent"}},
            "extensions": {"http://example.com/ext": {"level": 3}},
        },
        "timestamp": "2024-05-01T12:00:00.123Z",
    }


def both(a: dict, b: dict, version: str) -> bool:
    """The comparison is symmetric: check it both ways."""
    forward = statements_equivalent(a, b, xapi_version=version)
    backward = statements_equivalent(b, a, xapi_version=version)
    assert forward == backward
    return forward


def test_identical_statements_are_equivalent():
    for version in (V1, V2):
        assert both(base(), base(), version)


def test_inputs_are_not_modified():
    a, b = base(), base()
    b["actor"]["objectType"] = "Agent"
    snapshot_a, snapshot_b = copy.deepcopy(a), copy.deepcopy(b)
    statements_equivalent(a, b)
    assert a == snapshot_a and b == snapshot_b


def test_lrs_assigned_properties_are_ignored():
    """Data 2.3.1.b1: authority, stored and version are assigned during LRS processing."""
    stored = base()
    stored["authority"] = {"account": {"homePage": "http://lrs.example", "name": "client"}}
    stored["stored"] = "2024-05-01T12:00:01.000Z"
    stored["version"] = "1.0.0"
    for version in (V1, V2):
        assert both(base(), stored, version)


def test_missing_id_or_timestamp_on_one_side_is_ignored():
    """Data 2.3.1.b1: the LRS assigns an id and a timestamp when they are missing."""
    sent = base()
    del sent["id"]
    del sent["timestamp"]
    for version in (V1, V2):
        assert both(sent, base(), version)


def test_different_ids_differ_in_1_0_but_not_in_2_0():
    """1.0.3: the LRS never changes a given id. IEEE 4.2: "Id" is not considered."""
    other = base()
    other["id"] = "00000000-0000-4000-8000-000000000000"
    assert not both(base(), other, V1)
    assert both(base(), other, V2)


def test_uuid_case_is_ignored():
    """Data 2.3.1.b7: case-insensitive values; UUIDs are hex (RFC 4122)."""
    other = base()
    other["id"] = other["id"].lower()
    other["context"]["registration"] = other["context"]["registration"].upper()
    assert both(base(), other, V1)


def test_timestamp_serialization_is_ignored():
    """Data 2.3.1.b4: a timestamp may be returned in another time zone or notation."""
    other = base()
    other["timestamp"] = "2024-05-01T14:00:00.123000+02:00"
    for version in (V1, V2):
        assert both(base(), other, version)


def test_timestamp_precision_beyond_milliseconds_is_ignored():
    """Data 4.5.s1.b7: the LRS may truncate or round timestamps to milliseconds."""
    sent, truncated, rounded = base(), base(), base()
    sent["timestamp"] = "2024-05-01T12:00:00.1236Z"
    truncated["timestamp"] = "2024-05-01T12:00:00.123Z"
    rounded["timestamp"] = "2024-05-01T12:00:00.124Z"
    assert both(sent, truncated, V1)
    assert both(sent, rounded, V1)


def test_different_instants_differ_in_1_0_but_not_in_2_0():
    """1.0.3: only the serialization of a timestamp is an exception, not its instant.
    IEEE 4.2: "Timestamp" is not considered for equivalence."""
    other = base()
    other["timestamp"] = "2024-05-01T12:00:05.123Z"
    assert not both(base(), other, V1)
    assert both(base(), other, V2)
    far = base()
    far["timestamp"] = "2024-05-01T12:00:00.125Z"  # 2 ms away: no truncation/rounding gives it
    assert not both(base(), far, V1)


def test_substatement_timestamps_follow_the_same_rules():
    sub = base()
    sub["object"] = {
        "objectType": "SubStatement",
        "actor": {"mbox": "mailto:a@example.com"},
        "verb": {"id": "http://example.com/verbs/will"},
        "object": {"id": "http://example.com/activities/2"},
        "timestamp": "2024-05-01T12:00:00Z",
    }
    other = copy.deepcopy(sub)
    other["object"]["timestamp"] = "2024-05-01T13:00:00+01:00"
    assert both(sub, other, V1)
    other["object"]["timestamp"] = "2024-05-02T12:00:00Z"
    assert not both(sub, other, V1)
    assert both(sub, other, V2)


def test_group_member_order_is_ignored():
    """Data 2.3.1.b5: the members of a Group are an unordered list."""
    a, b = base(), base()
    members = [{"mbox": "mailto:a@example.com"}, {"mbox": "mailto:b@example.com"}]
    a["actor"] = {"objectType": "Group", "member": members}
    b["actor"] = {"objectType": "Group", "member": list(reversed(members))}
    for version in (V1, V2):
        assert both(a, b, version)


def test_group_members_are_still_compared():
    a, b = base(), base()
    a["actor"] = {"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]}
    b["actor"] = {"objectType": "Group", "member": [{"mbox": "mailto:c@example.com"}]}
    for version in (V1, V2):
        assert not both(a, b, version)


def test_activity_definitions_are_ignored():
    """Data 2.3.1.b2 / IEEE 4.2: referenced Activity Definitions are not part of the Statement."""
    other = base()
    other["object"]["definition"] = {"name": {"en-US": "Renamed"}, "type": "http://x.org/t"}
    del other["context"]["contextActivities"]["parent"]  # replaced below with a definition
    other["context"]["contextActivities"]["parent"] = [
        {"id": "http://example.com/activities/parent", "definition": {"name": {"fr": "Parent"}}}
    ]
    for version in (V1, V2):
        assert both(base(), other, version)


def test_verb_display_is_ignored_but_verb_id_is_not():
    """Data 2.3.1.b3 / IEEE 4.2: Verb except display."""
    other = base()
    other["verb"]["display"] = {"fr-FR": "terminé"}
    for version in (V1, V2):
        assert both(base(), other, version)
    other["verb"]["id"] = "http://adlnet.gov/expapi/verbs/attempted"
    for version in (V1, V2):
        assert not both(base(), other, version)


def test_attachments_are_ignored():
    """Data 2.3.1.b6 / IEEE 4.2 "Any attachments"."""
    other = base()
    other["attachments"] = [
        {
            "usageType": "http://example.com/usage",
            "display": {"en-US": "x"},
            "contentType": "text/plain",
            "length": 1,
            "sha2": "ab" * 32,
        }
    ]
    for version in (V1, V2):
        assert both(base(), other, version)


def test_default_object_types():
    """An omitted objectType means Agent for an actor, Activity for an object or a context
    activity; filling it in is not a different Statement."""
    explicit = base()
    explicit["actor"]["objectType"] = "Agent"
    explicit["object"]["objectType"] = "Activity"
    explicit["context"]["contextActivities"]["parent"]["objectType"] = "Activity"
    for version in (V1, V2):
        assert both(base(), explicit, version)


def test_single_context_activity_equals_array_of_one():
    """IEEE 4.2.4.2: the LRS returns every contextActivities value as an array."""
    other = base()
    parent = other["context"]["contextActivities"]["parent"]
    other["context"]["contextActivities"]["parent"] = [parent]
    for version in (V1, V2):
        assert both(base(), other, version)


def test_email_domain_case_is_ignored_but_local_part_is_not_in_1_0():
    """Data 2.3.1.b7: "the domain portion an e-mail address is case insensitive"."""
    other = base()
    other["actor"]["mbox"] = "MAILTO:Learner@example.com"
    assert both(base(), other, V1)
    other["actor"]["mbox"] = "mailto:learner@example.com"
    assert not both(base(), other, V1)
    assert both(base(), other, V2)  # IEEE 4.2: case (upper vs. lower) is not considered


def test_iri_scheme_and_host_case_is_ignored():
    """Data 2.3.1.b7 and 3.1.s2.b1: RFC 3987 syntax-based (case) normalization."""
    other = base()
    other["object"]["id"] = "HTTP://EXAMPLE.com/activities/1"
    assert both(base(), other, V1)
    other["object"]["id"] = "http://example.com/Activities/1"
    assert not both(base(), other, V1)
    assert both(base(), other, V2)


def test_other_value_case_counts_in_1_0_only():
    other = base()
    other["actor"]["name"] = "LEARNER"
    assert not both(base(), other, V1)
    assert both(base(), other, V2)


def test_duration_is_a_string_beyond_hundredths():
    """Data 2.3.1.b8: duration is compared as a string; Data 4.6.s1.b5: precision beyond
    0.01 s is not compared."""
    finer = base()
    finer["result"]["duration"] = "PT1M30.2599S"
    for version in (V1, V2):
        assert both(base(), finer, version)
    converted = base()
    converted["result"]["duration"] = "PT90.25S"  # same time, other units: not the same string
    for version in (V1, V2):
        assert not both(base(), converted, version)
    coarser = base()
    coarser["result"]["duration"] = "PT1M30.2S"
    for version in (V1, V2):
        assert not both(base(), coarser, version)


def test_numbers_compare_at_single_precision_and_never_equal_booleans():
    """Data 2.2.s4.b3: numbers are stored with at least IEEE 754 32-bit precision."""
    stored = base()
    stored["result"]["score"]["scaled"] = 0.949999988079071  # 0.95 as a float32
    for version in (V1, V2):
        assert both(base(), stored, version)
    other = base()
    other["result"]["score"]["scaled"] = 0.9
    assert not both(base(), other, V1)
    as_number = base()
    as_number["result"]["success"] = 1
    for version in (V1, V2):
        assert not both(base(), as_number, version)


def test_result_and_context_differences_count():
    """Data 2.3.1.s9.b2: differences in any property that is not an exception count."""
    for change in (
        lambda s: s["result"].update(success=False),
        lambda s: s["context"]["extensions"]["http://example.com/ext"].update(level=4),
        lambda s: s["context"].update(platform="web"),
        lambda s: s.pop("result"),
        lambda s: s["context"]["contextActivities"].update(
            grouping=[{"id": "http://example.com/g"}]
        ),
    ):
        other = base()
        change(other)
        for version in (V1, V2):
            assert not both(base(), other, version)


def test_statement_ref_object_and_agent_object():
    a, b = base(), base()
    a["object"] = {"objectType": "StatementRef", "id": "E05AA883-ACAF-40AD-BF54-02C8CE485FB0"}
    b["object"] = {"objectType": "StatementRef", "id": "e05aa883-acaf-40ad-bf54-02c8ce485fb0"}
    assert both(a, b, V1)
    b["object"]["id"] = "e05aa883-acaf-40ad-bf54-02c8ce485fb1"
    assert not both(a, b, V1)
    c, d = base(), base()
    c["object"] = {"objectType": "Agent", "mbox": "mailto:x@example.com"}
    d["object"] = {"objectType": "Group", "mbox": "mailto:x@example.com"}
    assert not both(c, d, V1)


def test_substatement_contents_are_compared_with_the_same_exceptions():
    a, b = base(), base()
    a["object"] = {
        "objectType": "SubStatement",
        "actor": {"mbox": "mailto:a@example.com"},
        "verb": {"id": "http://example.com/verbs/will", "display": {"en": "will"}},
        "object": {"id": "http://example.com/activities/2"},
    }
    b["object"] = copy.deepcopy(a["object"])
    b["object"]["verb"]["display"] = {"en": "shall"}
    b["object"]["actor"]["objectType"] = "Agent"
    assert both(a, b, V1)
    b["object"]["object"]["id"] = "http://example.com/activities/3"
    assert not both(a, b, V1)


def test_context_agents_and_groups():
    """IEEE 4.2.2.5 contextAgents / contextGroups: members unordered, objectType defaults."""
    a, b = base(), base()
    a["context"]["contextAgents"] = [
        {
            "objectType": "contextAgent",
            "agent": {"mbox": "mailto:i@example.com"},
            "relevantTypes": ["http://example.com/types/instructor"],
        }
    ]
    a["context"]["contextGroups"] = [
        {
            "objectType": "contextGroup",
            "group": {
                "objectType": "Group",
                "member": [{"mbox": "mailto:p@example.com"}, {"mbox": "mailto:q@example.com"}],
            },
        }
    ]
    b["context"]["contextAgents"] = copy.deepcopy(a["context"]["contextAgents"])
    b["context"]["contextAgents"][0]["agent"]["objectType"] = "Agent"
    b["context"]["contextGroups"] = copy.deepcopy(a["context"]["contextGroups"])
    b["context"]["contextGroups"][0]["group"]["member"].reverse()
    assert both(a, b, V2)
    b["context"]["contextAgents"][0]["relevantTypes"] = ["http://example.com/types/observer"]
    assert not both(a, b, V2)


def test_non_dict_inputs_fall_back_to_equality():
    assert statements_equivalent([], [])  # type: ignore[arg-type]
    assert not statements_equivalent({}, [])  # type: ignore[arg-type]
