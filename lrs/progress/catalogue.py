"""The course catalogue: course definitions (JSON), cmi5 course structures (XML), and the
normalised form the rules work on (design notes section 3)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lrs.xapi.validation import is_iri

MoveOn = Literal["Completed", "Passed", "CompletedAndPassed", "CompletedOrPassed", "NotApplicable"]
MODULE_RULES = ("CompletedAndPassed", "Completed", "Passed", "CompletedOrPassed", "NotApplicable")


@dataclass(frozen=True)
class Item:
    """Something inside a module the learner must satisfy: a content item or an assessment."""

    id: str
    role: Literal["content", "assessment"]
    move_on: MoveOn
    mastery_score: float | None = None


@dataclass(frozen=True)
class Module:
    course_id: str
    id: str
    title: str
    items: tuple[Item, ...]
    rule: MoveOn = "CompletedAndPassed"
    profile: str = "generic"
    discovered: bool = False

    @property
    def activity_ids(self) -> list[str]:
        return [self.id, *(item.id for item in self.items)]

    def item(self, activity_id: str) -> Item | None:
        return next((item for item in self.items if item.id == activity_id), None)


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    profile: str
    modules: tuple[Module, ...]
    discovered: bool = False
    source: str = "definition"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _iri(value: str, what: str) -> str:
    if not is_iri(value):
        raise ValueError(f"{what} must be an IRI, not {value!r}")
    return value


class ModuleDefinition(BaseModel):
    """One module of a JSON course definition."""

    model_config = ConfigDict(extra="forbid")

    id: str
    title: str = ""
    content: list[str] = Field(default_factory=list, description="required content activity ids")
    assessment: str | None = None
    completion_rule: Literal[
        "default", "CompletedAndPassed", "Completed", "Passed", "CompletedOrPassed", "NotApplicable"
    ] = "default"
    mastery_score: float | None = Field(default=None, ge=0, le=1)
    profile: str | None = None

    @field_validator("id", "assessment")
    @classmethod
    def _check_iri(cls, value: str | None) -> str | None:
        return None if value is None else _iri(value, "module and assessment ids")

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: list[str]) -> list[str]:
        for activity in value:
            _iri(activity, "content activity ids")
        if len(set(value)) != len(value):
            raise ValueError("content activity ids must be unique")
        return value


class CourseDefinition(BaseModel):
    """`PUT /courses/{courseId}` body."""

    model_config = ConfigDict(extra="forbid")

    title: str = ""
    profile: str = "generic"
    modules: list[ModuleDefinition] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_activities(self) -> CourseDefinition:
        seen: set[str] = set()
        for module in self.modules:
            for activity in [module.id, *module.content, module.assessment]:
                if activity is None:
                    continue
                if activity in seen:
                    raise ValueError(f"activity {activity} appears twice in the course")
                seen.add(activity)
        return self

    def to_course(self, course_id: str) -> Course:
        modules = []
        for definition in self.modules:
            items = [Item(activity, "content", "Completed") for activity in definition.content]
            if definition.assessment:
                items.append(
                    Item(definition.assessment, "assessment", "Passed", definition.mastery_score)
                )
            rule = definition.completion_rule
            modules.append(
                Module(
                    course_id=course_id,
                    id=definition.id,
                    title=definition.title,
                    items=tuple(items),
                    rule="CompletedAndPassed" if rule == "default" else rule,
                    profile=definition.profile or self.profile,
                )
            )
        return Course(course_id, self.title, self.profile, tuple(modules))


# --- cmi5 course structure (cmi5 spec section 13) ---------------------------------------------

CMI5_NAMESPACE = "https://w3id.org/xapi/profiles/cmi5/v1/CourseStructure.xsd"
_MOVE_ON = ("Passed", "Completed", "CompletedAndPassed", "CompletedOrPassed", "NotApplicable")


class CourseStructureError(ValueError):
    """An invalid cmi5.xml; the message gives the line and the reason."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _title(element: ET.Element) -> str:
    for title in _children(element, "title"):
        for langstring in _children(title, "langstring"):
            return (langstring.text or "").strip()
    return ""


def parse_cmi5_course(xml: bytes, profile: str = "cmi5") -> Course:
    """A cmi5.xml course structure as a course: each block is a module (nested blocks are
    flattened into the outermost one), AUs are items with their moveOn and masteryScore; AUs
    directly under the course form one module named after the course."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        line, column = exc.position
        raise CourseStructureError(f"line {line}, column {column}: {exc.msg}") from exc
    if _local(root.tag) != "courseStructure":
        raise CourseStructureError("line 1: the root element must be courseStructure")
    courses = _children(root, "course")
    if len(courses) != 1:
        raise CourseStructureError("courseStructure must contain exactly one course element")
    course_element = courses[0]
    course_id = _attribute_iri(course_element, "id")
    course_title = _title(course_element)

    modules: list[Module] = []
    loose: list[Item] = []
    for child in root:
        name = _local(child.tag)
        if name == "au":
            loose.append(_au_item(child))
        elif name == "block":
            items = _block_items(child)
            modules.append(
                Module(
                    course_id,
                    _attribute_iri(child, "id"),
                    _title(child),
                    tuple(items),
                    "CompletedAndPassed",
                    profile,
                )
            )
    if loose:
        modules.insert(
            0,
            Module(course_id, course_id, course_title, tuple(loose), "CompletedAndPassed", profile),
        )
    if not modules:
        raise CourseStructureError("the course has no AU")
    return Course(course_id, course_title, profile, tuple(modules), source="cmi5")


def _block_items(block: ET.Element) -> list[Item]:
    """The AUs of a block and of the blocks nested in it, in document order. Iterative: blocks
    nested thousands deep are just many blocks, not a recursion limit."""
    items: list[Item] = []
    pending = [iter(block)]
    while pending:
        child = next(pending[-1], None)
        if child is None:
            pending.pop()
            continue
        name = _local(child.tag)
        if name == "au":
            items.append(_au_item(child))
        elif name == "block":
            pending.append(iter(child))
    return items


def _au_item(au: ET.Element) -> Item:
    au_id = _attribute_iri(au, "id")
    move_on = au.get("moveOn", "NotApplicable")
    if move_on not in _MOVE_ON:
        raise CourseStructureError(f"AU {au_id}: moveOn {move_on!r} is not one of {_MOVE_ON}")
    mastery_text = au.get("masteryScore")
    mastery = None
    if mastery_text is not None:
        try:
            mastery = float(mastery_text)
        except ValueError as exc:
            raise CourseStructureError(f"AU {au_id}: masteryScore is not a number") from exc
        if not 0 <= mastery <= 1:
            raise CourseStructureError(f"AU {au_id}: masteryScore must be between 0 and 1")
    role: Literal["content", "assessment"] = "assessment" if "Passed" in move_on else "content"
    return Item(au_id, role, move_on, mastery)  # type: ignore[arg-type]


def _attribute_iri(element: ET.Element, name: str) -> str:
    value = element.get(name)
    if not value or not is_iri(value):
        raise CourseStructureError(
            f"{_local(element.tag)} element: attribute {name} must be an IRI, not {value!r}"
        )
    return value
