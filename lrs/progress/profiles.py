"""Profiles: declarative files in profiles/ that say which statements mean which signal
(design notes section 4). Loaded and validated at start-up; a bad file stops start-up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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
