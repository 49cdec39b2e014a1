"""Which statements a destination wants.

Kinds of condition are combined with AND, the values of one kind with OR; an empty filter takes
every statement. A voiding statement has the verb "voided" and a StatementRef object, so it is
judged by the statement it voids: it is forwarded when the destination forwards voiding
statements and the voided statement matches the filter (with an empty filter, always).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StatementFilter:
    verbs: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()  # exact activity ids
    activity_prefixes: tuple[str, ...] = ()  # e.g. "https://example.com/courses/algebra/"
    # False: the statement's object only; True: also context activities (xAPI related_activities)
    related_activities: bool = False
    registration: str | None = None
    _lowered_registration: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        registration = self.registration.lower() if self.registration else None
        object.__setattr__(self, "_lowered_registration", registration)

    @property
    def is_empty(self) -> bool:
        return not (self.verbs or self.activities or self.activity_prefixes or self.registration)

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """`fields` are the statement's routing fields as stored: verb, activity,
        related_activities, registration (lowercase)."""
        if self.verbs and fields.get("verb") not in self.verbs:
            return False
        if self._lowered_registration and fields.get("registration") != self._lowered_registration:
            return False
        if self.activities or self.activity_prefixes:
            if self.related_activities:
                candidates = list(fields.get("related_activities") or [])
            else:
                candidates = [fields.get("activity")]
            if not any(self._activity_matches(a) for a in candidates if isinstance(a, str)):
                return False
        return True

    def _activity_matches(self, activity: str) -> bool:
        return activity in self.activities or activity.startswith(self.activity_prefixes)

    def to_doc(self) -> dict[str, Any]:
        return {
            "verbs": list(self.verbs),
            "activities": list(self.activities),
            "activity_prefixes": list(self.activity_prefixes),
            "related_activities": self.related_activities,
            "registration": self.registration,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> StatementFilter:
        doc = doc or {}
        return cls(
            verbs=tuple(doc.get("verbs") or ()),
            activities=tuple(doc.get("activities") or ()),
            activity_prefixes=tuple(doc.get("activity_prefixes") or ()),
            related_activities=bool(doc.get("related_activities")),
            registration=doc.get("registration"),
        )
