"""Profiles: declarative files in profiles/ that say which statements mean which signal
(design notes section 4). Loaded and validated at start-up; a bad file stops start-up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lrs.xapi.validation import is_iri


def _builtin_profile_dir() -> Path:
    """The built-in profiles: inside the installed package (the build copies them there, see
    setup.py), else profiles/ at the top of the source checkout, their source of truth."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "profiles"
    return installed if installed.is_dir() else package.parent / "profiles"


DEFAULT_PROFILE_DIR = _builtin_profile_dir()


class ExtensionThreshold(BaseModel):
    """A numeric result extension at or above a threshold (e.g. video progress)."""

    model_config = ConfigDict(extra="forbid")
    iri: str
    threshold: float


class SignalRule(BaseModel):
    """A statement gives the signal when its verb is listed, or its result matches."""

    model_config = ConfigDict(extra="forbid")
    verbs: list[str] = Field(default_factory=list)
    result_completion: bool = False  # result.completion == true
    result_success: bool | None = None  # result.success equals this value
    any_result: bool = False  # any result at all
    extension: ExtensionThreshold | None = None

    def matches(self, statement: dict[str, Any]) -> bool:
        if (statement.get("verb") or {}).get("id") in self.verbs:
            return True
        result = statement.get("result")
        if not isinstance(result, dict):
            return False
        if self.any_result:
            return True
        if self.result_completion and result.get("completion") is True:
            return True
        if self.result_success is not None and result.get("success") is self.result_success:
            return True
        if self.extension is not None:
            value = (result.get("extensions") or {}).get(self.extension.iri)
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if is_number and value >= self.extension.threshold:
                return True
        return False


class Profile(BaseModel):
    """Which statements mean which signal for one kind of content (design notes 4).

    Besides the signals: `defined_category` (cmi5 7.1.3, 9.6.2.1): when set, only statements
    whose context category holds this activity give signals; the others ("cmi5 allowed")
    count as an access only. `grouping_names_item` (cmi5 9.6.2.3): a statement whose object is
    not an item is about the item its context grouping names (the AU's publisher id).
    `mastery_extension` (cmi5 9.6.3.2, 10): the context extension in which a judging
    statement carries the mastery score the LMS gave the AU for the registration; it replaces
    the catalogue's. `module_completed`: a statement on a discovered module's own activity
    that means its content is done (design notes 3.3). `assessment_types`: activity definition
    types that make a discovered item the module's assessment."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    # Statements with these verbs give no signal at all (e.g. cmi5 `satisfied`, which the LMS
    # sends as a consequence of other statements: counting it would count twice).
    ignored_verbs: list[str] = Field(default_factory=list)
    viewed: SignalRule
    attempted: SignalRule
    passed: SignalRule
    failed: SignalRule
    waived: SignalRule
    reset: SignalRule = Field(default_factory=lambda: SignalRule(verbs=[RESET_VERB]))
    module_completed: SignalRule = Field(default_factory=SignalRule)
    defined_category: str | None = None
    grouping_names_item: bool = False
    mastery_extension: str | None = None
    assessment_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _iris(self) -> Profile:
        rules = (self.viewed, self.attempted, self.passed, self.failed, self.waived)
        iris = [*self.ignored_verbs, *self.assessment_types]
        for rule in (*rules, self.reset, self.module_completed):
            iris += rule.verbs
            if rule.extension is not None:
                iris.append(rule.extension.iri)
        iris += [v for v in (self.defined_category, self.mastery_extension) if v is not None]
        for value in iris:
            if not is_iri(value):
                raise ValueError(f"{value!r} is not an IRI")
        return self

    def is_defined(self, statement: dict[str, Any]) -> bool:
        """Does the statement give signals (not only an access)? Always, unless the profile
        names a defined category the statement's context lacks."""
        if self.defined_category is None:
            return True
        activities = (statement.get("context") or {}).get("contextActivities") or {}
        category = activities.get("category") or []
        listed = category if isinstance(category, list) else [category]
        return any(isinstance(a, dict) and a.get("id") == self.defined_category for a in listed)

    def mastery_of(self, statement: dict[str, Any], catalogue: float | None) -> float | None:
        """The mastery score a judging statement is held to: the one the statement carries in
        `mastery_extension` (a number from 0 to 1), else the catalogue's."""
        if self.mastery_extension is None:
            return catalogue
        extensions = (statement.get("context") or {}).get("extensions") or {}
        value = extensions.get(self.mastery_extension) if isinstance(extensions, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        return catalogue

    def judges(self, statement: dict[str, Any]) -> bool:
        """Does the statement judge its object (pass or fail it)?"""
        result = statement.get("result")
        said = isinstance(result, dict) and isinstance(result.get("success"), bool)
        return said or self.passed.matches(statement) or self.failed.matches(statement)


# The verb the progress API records when an instructor resets a learner's module.
RESET_VERB = "urn:x-lrs:verbs:reset"
WAIVED_VERB = "https://w3id.org/xapi/adl/verbs/waived"


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profiles:
    by_name: dict[str, Profile]

    def get(self, name: str) -> Profile:
        return self.by_name.get(name) or self.by_name["generic"]


def load_profiles(directory: Path = DEFAULT_PROFILE_DIR) -> Profiles:
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            profile = Profile.model_validate(json.loads(path.read_text()))
        except (ValueError, ValidationError) as exc:
            raise ProfileError(f"invalid profile {path}: {exc}") from exc
        if profile.name != path.stem:
            raise ProfileError(f"{path}: name {profile.name!r} must match the file name")
        profiles[profile.name] = profile
    if "generic" not in profiles:
        raise ProfileError(f"{directory} has no generic.json, the default profile")
    return Profiles(profiles)
