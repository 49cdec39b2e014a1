"""Profiles (design notes 4): data, validated at start-up; a bad file stops start-up with a
clear message. Issue 11 adds declarative fields the rules need (cmi5 category, grouping,
mastery extension, module completion, assessment types)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lrs.progress.profiles import DEFAULT_PROFILE_DIR, ProfileError, load_profiles

CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"


def _write(directory: Path, **profiles: dict[str, Any]) -> Path:
    for name, profile in profiles.items():
        (directory / f"{name}.json").write_text(json.dumps({"name": name, **profile}))
    return directory


def _generic() -> dict[str, Any]:
    generic = json.loads((DEFAULT_PROFILE_DIR / "generic.json").read_text())
    generic.pop("name")
    return generic


def test_builtin_profiles_declare_what_the_rules_need() -> None:
    profiles = load_profiles()
    cmi5, generic = profiles.get("cmi5"), profiles.get("generic")
    assert cmi5.defined_category == CMI5_CATEGORY and cmi5.grouping_names_item
    assert cmi5.mastery_extension == "https://w3id.org/xapi/cmi5/context/extensions/masteryscore"
    assert "https://w3id.org/xapi/adl/verbs/satisfied" in cmi5.ignored_verbs
    assert generic.defined_category is None and not generic.grouping_names_item
    assert generic.assessment_types == ["http://adlnet.gov/expapi/activities/assessment"]
    assert generic.module_completed.verbs == ["http://adlnet.gov/expapi/verbs/completed"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("defined_category", "not an iri"),
        ("mastery_extension", "cmi5 mastery"),
        ("assessment_types", ["assessment"]),
        ("module_completed", {"verbs": ["completed"]}),
        ("grouping_names_item", "sometimes"),
        ("defined_categry", CMI5_CATEGORY),
    ],
)
def test_a_bad_profile_field_stops_start_up(tmp_path: Path, field: str, value: Any) -> None:
    _write(tmp_path, generic=_generic(), custom={**_generic(), field: value})
    with pytest.raises(ProfileError, match="custom.json"):
        load_profiles(tmp_path)


def test_defined_category_gates_signals() -> None:
    cmi5 = load_profiles().get("cmi5")
    statement: dict[str, Any] = {"verb": {"id": "http://adlnet.gov/expapi/verbs/completed"}}
    assert not cmi5.is_defined(statement)
    statement["context"] = {"contextActivities": {"category": [{"id": CMI5_CATEGORY}]}}
    assert cmi5.is_defined(statement)
    assert load_profiles().get("generic").is_defined({})


@pytest.mark.parametrize(
    ("given", "expected"), [(0.6, 0.6), (0, 0.0), (1.5, 0.8), ("0.6", 0.8), (True, 0.8)]
)
def test_the_mastery_score_a_statement_carries(given: Any, expected: float) -> None:
    cmi5 = load_profiles().get("cmi5")
    extension = {cmi5.mastery_extension: given}
    assert cmi5.mastery_of({"context": {"extensions": extension}}, 0.8) == expected
    assert cmi5.mastery_of({}, 0.8) == 0.8
    assert (
        load_profiles().get("generic").mastery_of({"context": {"extensions": extension}}, None)
        is None
    )
