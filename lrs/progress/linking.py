"""Which catalogue entries a statement is about (design notes 3; cmi5 8.1, 9.4, 9.6.2.3), pure.

A statement names activities in three places that matter for progress: its object, its
context `parent` activities and its context `grouping` activities. Category activities
(e.g. the cmi5 category shared by every cmi5 statement) and `other` activities never link a
statement to anything.

- `linked_ids(statement)`: every activity id whose catalogue entry the statement may touch.
  The engine looks these up in the catalogue to find the candidate modules (and, for
  discovery, whether any of them belongs to a defined course).
- `touches(module, statement)`: the statement is about the module at all (an access at least):
  one of its linked ids is the module, one of its nested blocks, one of its items, or a launch
  activity id registered for one of its items.
- `item_for(module, profile, statement)`: the item the statement is about: the item whose id,
  or one of whose launch activity ids, is the object; else, when the profile says the grouping
  names the item (cmi5: the AU's publisher id, 9.6.2.3, while the object is the launch
  activity id the LMS generated, 8.1), the first item named in the grouping.
"""

from __future__ import annotations

from typing import Any

from lrs.progress.catalogue import Item, Module
from lrs.progress.profiles import Profile


def object_id(statement: dict[str, Any]) -> str | None:
    """The object's id when the object is an Activity."""
    obj = statement.get("object") or {}
    if not isinstance(obj, dict) or obj.get("objectType", "Activity") != "Activity":
        return None
    value = obj.get("id")
    return value if isinstance(value, str) else None


def context_ids(statement: dict[str, Any], kind: str) -> list[str]:
    """The ids of one list of context activities (`parent`, `grouping`, `category`, ...); a
    single object instead of a list (xAPI 1.0.x allowed it) counts as a list of one."""
    context = statement.get("context") or {}
    activities = context.get("contextActivities") if isinstance(context, dict) else None
    value = (activities or {}).get(kind) or []
    listed = value if isinstance(value, list) else [value]
    return [a["id"] for a in listed if isinstance(a, dict) and isinstance(a.get("id"), str)]


def linked_ids(statement: dict[str, Any]) -> list[str]:
    """Object, parents, groupings: each id once, in that order."""
    ids: list[str] = []
    target = object_id(statement)
    for candidate in [
        *([target] if target else []),
        *context_ids(statement, "parent"),
        *context_ids(statement, "grouping"),
    ]:
        if candidate not in ids:
            ids.append(candidate)
    return ids


def touches(module: Module, statement: dict[str, Any]) -> bool:
    """Is the statement about the module at all (see the module docstring)?"""
    return any(module.has_activity(activity) for activity in linked_ids(statement))


def item_for(module: Module, profile: Profile, statement: dict[str, Any]) -> Item | None:
    """The item of the module the statement is about, if any (see the module docstring)."""
    target = object_id(statement)
    if target is not None and (item := module.item(target)) is not None:
        return item
    if profile.grouping_names_item and target != module.id:
        for activity in context_ids(statement, "grouping"):
            if (item := module.item(activity)) is not None:
                return item
    return None
