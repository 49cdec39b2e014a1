"""The course catalogue: course definitions (JSON), cmi5 course structures (XML), and the
normalised form the rules work on (design notes section 3).

A course holds modules; a module holds items (content or assessment). A module of an imported
cmi5 course is one of its outermost blocks (or the course itself for the AUs placed directly
under the course element); the blocks nested inside it are kept as `Module.blocks` and each
item says which of them holds it (`Item.block`), so that the satisfaction of nested blocks and
of the course can be computed (lrs.progress.cmi5) while records stay per outermost block.

Items and modules are plain, JSON-friendly data: stored with `dataclasses.asdict` and rebuilt
with `Item(**doc)` / `Module(**doc)`; lists read back from storage become tuples again."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lrs.xapi.validation import is_iri

MoveOn = Literal["Completed", "Passed", "CompletedAndPassed", "CompletedOrPassed", "NotApplicable"]
Role = Literal["content", "assessment"]
MODULE_RULES = ("CompletedAndPassed", "Completed", "Passed", "CompletedOrPassed", "NotApplicable")


@dataclass(frozen=True)
class Item:
    """Something inside a module the learner must satisfy: a content item or an assessment.

    `launch_ids`: for a cmi5 AU, the activity ids an LMS generated to launch it (cmi5 8.1: they
    never equal the AU id, and every cmi5 defined statement has one as its object); statements
    about one of them are about the AU. Changing them is a catalogue change (recompute).
    `block`: for a cmi5 AU inside a nested block, the id of the block that directly holds it
    (None: directly in the module).

    The role of a discovered item can change from content to assessment (never back; see
    lrs.progress.discovery). The facts the rules keep about an item do not depend on its role,
    so a role change only needs the module's records to be summarized again; the engine may
    also recompute them from the statements, which gives the same result."""

    id: str
    role: Role
    move_on: MoveOn
    mastery_score: float | None = None
    launch_ids: tuple[str, ...] = ()
    block: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.launch_ids, tuple):  # a list, read back from storage
            object.__setattr__(self, "launch_ids", tuple(self.launch_ids))


@dataclass(frozen=True)
class Block:
    """A cmi5 block nested inside a module (an outermost block): its id (the publisher id
    from cmi5.xml), title, and the id of the block that holds it (the module's id for a block
    directly inside the module)."""

    id: str
    title: str
    parent: str


@dataclass(frozen=True)
class Module:
    course_id: str
    id: str
    title: str
    items: tuple[Item, ...]
    rule: MoveOn = "CompletedAndPassed"
    profile: str = "generic"
    discovered: bool = False
    # A discovered module can hold many items: the engine may load only some of them (all its
    # assessments, and at least every item the learner has facts about); `item_total` is then
    # the number of items the module really has. None: `items` is complete.
    item_total: int | None = None
    blocks: tuple[Block, ...] = ()  # nested cmi5 blocks, outermost first

    def __post_init__(self) -> None:
        # Read back from storage: lists of dicts instead of tuples of dataclasses.
        items = tuple(i if isinstance(i, Item) else Item(**i) for i in self.items)
        blocks = tuple(b if isinstance(b, Block) else Block(**b) for b in self.blocks)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "blocks", blocks)

    @property
    def activity_ids(self) -> list[str]:
        """Every activity id whose statements may touch the module: the module, its nested
        blocks, its items and their launch ids (what the catalogue index lists)."""
        return [
            self.id,
            *(block.id for block in self.blocks),
            *(item.id for item in self.items),
            *(launch for item in self.items for launch in item.launch_ids),
        ]

    @cached_property
    def _activity_set(self) -> frozenset[str]:
        return frozenset(self.activity_ids)

    @cached_property
    def _by_id(self) -> dict[str, Item]:
        index: dict[str, Item] = {}
        for item in self.items:
            for launch in item.launch_ids:
                index.setdefault(launch, item)
        for item in self.items:  # an item's own id wins over another item's launch id
            index[item.id] = item
        return index

    def has_activity(self, activity_id: str) -> bool:
        return activity_id in self._activity_set

    def item(self, activity_id: str) -> Item | None:
        """The item with this id, or whose launch ids hold it."""
        return self._by_id.get(activity_id)


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    profile: str
    modules: tuple[Module, ...]
    discovered: bool = False
    source: str = "definition"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # Issue 11: store a cmi5 `satisfied` statement when a block or the course becomes
    # satisfied for a registration (lrs.progress.cmi5); on by default for imported cmi5.
    emit_satisfied: bool = False


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
    emit_satisfied: bool = False

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
        return Course(
            course_id,
            self.title,
            self.profile,
            tuple(modules),
            emit_satisfied=self.emit_satisfied,
        )


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
    """A cmi5.xml course structure (cmi5 section 13) as a course: each outermost block is a
    module, AUs are items with their moveOn and masteryScore; AUs directly under the course
    form one module named after the course. Blocks nested in an outermost block are kept in
    its `blocks`, each AU naming the block that directly holds it, so that nested blocks and
    the course can be judged satisfied (cmi5 9.3.9, 13.1.4 moveOn "Usage")."""
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
    seen = {course_id}

    modules: list[Module] = []
    loose: list[Item] = []
    for child in root:
        name = _local(child.tag)
        if name == "au":
            loose.append(_au_item(child, None, seen))
        elif name == "block":
            block_id = _unique(_attribute_iri(child, "id"), seen)
            items: list[Item] = []
            blocks: list[Block] = []
            _block_contents(child, block_id, None, items, blocks, seen)
            if not items:
                raise CourseStructureError(f"block {block_id} contains no AU")
            modules.append(
                Module(
                    course_id,
                    block_id,
                    _title(child),
                    tuple(items),
                    "CompletedAndPassed",
                    profile,
                    blocks=tuple(blocks),
                )
            )
    if loose:
        modules.insert(
            0,
            Module(course_id, course_id, course_title, tuple(loose), "CompletedAndPassed", profile),
        )
    if not modules:
        raise CourseStructureError("the course has no AU")
    return Course(
        course_id, course_title, profile, tuple(modules), source="cmi5", emit_satisfied=True
    )


def _unique(activity_id: str, seen: set[str]) -> str:
    # cmi5 13.1: course, block and AU ids identify them in statements: one id, one thing.
    if activity_id in seen:
        raise CourseStructureError(f"id {activity_id} is used twice in the course structure")
    seen.add(activity_id)
    return activity_id


def _block_contents(
    block: ET.Element,
    module_id: str,
    nested_id: str | None,
    items: list[Item],
    blocks: list[Block],
    seen: set[str],
) -> None:
    """Collect the AUs and nested blocks of `block` (the module itself when `nested_id` is
    None, else the nested block `nested_id`), in document order. Iterative: blocks nested
    thousands deep are just many blocks, not a recursion limit."""
    # Each level: the children still to walk, the block they belong to, and for a nested
    # block the number of AUs collected before it (it must add at least one).
    pending: list[tuple[Any, str | None, int]] = [(iter(block), nested_id, -1)]
    while pending:
        children, current, before = pending[-1]
        child = next(children, None)
        if child is None:
            pending.pop()
            if before >= 0 and len(items) == before:
                raise CourseStructureError(f"block {current} contains no AU")
            continue
        name = _local(child.tag)
        if name == "au":
            items.append(_au_item(child, current, seen))
        elif name == "block":
            child_id = _unique(_attribute_iri(child, "id"), seen)
            blocks.append(Block(child_id, _title(child), current or module_id))
            pending.append((iter(child), child_id, len(items)))


def _au_item(au: ET.Element, block: str | None, seen: set[str]) -> Item:
    au_id = _unique(_attribute_iri(au, "id"), seen)
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
    role: Role = "assessment" if "Passed" in move_on else "content"
    return Item(au_id, role, move_on, mastery, block=block)  # type: ignore[arg-type]


def _attribute_iri(element: ET.Element, name: str) -> str:
    value = element.get(name)
    if not value or not is_iri(value):
        raise CourseStructureError(
            f"{_local(element.tag)} element: attribute {name} must be an IRI, not {value!r}"
        )
    return value
