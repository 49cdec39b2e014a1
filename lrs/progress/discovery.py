"""Discovery (design notes 3.3; issue 11), pure: what a statement adds to the catalogue when no
definition covers it.

A statement whose context names a module (its first `parent`; for a statement that is not a
cmi5 one, else its first `grouping`) puts its object into that module, in the course its
first other grouping names (else in a course named after the module). Never:

- when any activity the statement names (object, parents, groupings: `linked_ids`) is an item,
  nested block, module or course of a DEFINED course: a defined course is never discovered
  again, nor extended (issue 11 finding 2);
- from the grouping of a cmi5 statement (cmi5 category, or the cmi5 session id extension of
  the context template): it holds the AU's publisher id (cmi5 9.6.2.3), not a module;
- when the object is the module itself, or already a discovered module or course: such a
  statement is about the module (lrs.progress.rules: `completed` on it means its content is
  done, a pass on it means its assessment is passed), not a new item;
- an activity already known as a discovered item is not taken as a module or a course (it is
  content inside that item).

The discovered item's role: the module's **assessment** when its activity definition's type is
one of the profile's `assessment_types` (`http://adlnet.gov/expapi/activities/assessment`),
or when the statement judges it (the profile's passed or failed signals, or any
`result.success`); otherwise **content** to view. Roles only ever go from content to
assessment (`grow`): once judged, an item stays the assessment. Discovery is monotone like
that as a whole: a voided statement leaves what it discovered in place.

A role change changes no learner's facts (they do not depend on roles, see
lrs.progress.rules): the engine re-summarizes the module's records from their stored facts,
as when the module gains an item (or recomputes them from the statements: the same result).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from lrs.progress.catalogue import Item, Module, Role
from lrs.progress.cmi5 import CMI5_CATEGORY, SESSION_EXTENSION
from lrs.progress.linking import context_ids, linked_ids, object_id
from lrs.progress.profiles import Profile

# What the engine knows of an activity id: part of a defined course (item, nested block,
# module, course or launch id), or a discovered course, module or item.
Known = Literal["defined", "course", "module", "item"]


@dataclass(frozen=True)
class Discovery:
    """The item a statement discovers (or whose role it raises)."""

    course_id: str
    module_id: str
    item_id: str
    role: Role


def is_cmi5_statement(statement: dict[str, Any]) -> bool:
    """A cmi5 defined statement (the cmi5 category) or one built on the cmi5 context template
    (the session id extension), as cmi5 allowed statements are."""
    if CMI5_CATEGORY in context_ids(statement, "category"):
        return True
    extensions = (statement.get("context") or {}).get("extensions")
    return isinstance(extensions, dict) and SESSION_EXTENSION in extensions


def role_of(profile: Profile, statement: dict[str, Any]) -> Role:
    """The role a statement gives its object (see the module docstring)."""
    obj = statement.get("object") or {}
    definition = obj.get("definition") if isinstance(obj, dict) else None
    kind = definition.get("type") if isinstance(definition, dict) else None
    if kind in profile.assessment_types or profile.judges(statement):
        return "assessment"
    return "content"


def discovery(
    statement: dict[str, Any], profile: Profile, known: Mapping[str, Known]
) -> Discovery | None:
    """What the statement discovers, if anything. `known` says what the engine's catalogue
    knows of each of the statement's `linked_ids` (ids it lacks are unknown)."""
    target = object_id(statement)
    if target is None:
        return None
    if any(known.get(activity) == "defined" for activity in linked_ids(statement)):
        return None
    if known.get(target) in ("module", "course"):
        return None
    cmi5 = is_cmi5_statement(statement)
    parents = context_ids(statement, "parent")
    groupings = [] if cmi5 else context_ids(statement, "grouping")

    def usable(activity: str) -> bool:
        return activity != target and known.get(activity) != "item"

    module_id = next((a for a in [*parents, *groupings] if usable(a)), None)
    if module_id is None:
        return None
    course_id = next(
        (g for g in groupings if g != module_id and usable(g) and known.get(g) != "module"),
        module_id,
    )
    return Discovery(course_id, module_id, target, role_of(profile, statement))


def discovered_item(found: Discovery) -> Item:
    if found.role == "assessment":
        return Item(found.item_id, "assessment", "Passed")
    return Item(found.item_id, "content", "Completed")


def grow(module: Module | None, found: Discovery) -> Module | None:
    """The discovered module with the discovery applied (created when `module` is None), or
    None when it changes nothing: the item is there already with that role, or a higher one."""
    item = discovered_item(found)
    if module is None:
        return Module(
            found.course_id, found.module_id, "", (item,), "CompletedAndPassed", "generic", True
        )
    existing = module.item(found.item_id)
    if existing is None:
        # A partly loaded module (`item_total` set) must hold the item if it has it.
        total = None if module.item_total is None else module.item_total + 1
        return replace(module, items=(*module.items, item), item_total=total)
    if existing.role == "assessment" or found.role == "content":
        return None
    items = tuple(item if i.id == found.item_id else i for i in module.items)
    return replace(module, items=items)
