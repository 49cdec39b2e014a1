"""What the LRS has learnt from statements about Activities and Agents: the canonical Activity
definitions (Activities resource) and the names seen for each agent (Agents resource).

Both follow the `define` scope (xAPI Communication 4.2): a credential with it may (re)define,
one without it may only introduce an Activity or Agent the LRS has never seen, never change one.

Definitions are stored as JSON text, like statements, because extension keys are IRIs (dots,
possibly `$`) that MongoDB cannot take as field names. Updates are conditional on the revision
read, so two statement batches merging into the same definition never lose each other's keys.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.xapi.agents import agent_key
from lrs.xapi.timestamps import monotonic_now_micros

log = logging.getLogger("lrs.activities")

_LANGUAGE_MAPS = ("name", "description")
_COMPONENT_LISTS = ("choices", "scale", "source", "target", "steps")
# Data 2.4.4.1.s4.b5: no significant changes to a canonical definition, e.g. correct responses.
# Once known, these stay as first defined.
_FIXED = ("interactionType", "correctResponsesPattern")
_MAX_ATTEMPTS = 8


# --- pure merging ----------------------------------------------------------------------------


def merge_definition(canonical: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """The canonical definition updated with an incoming one.

    Language maps and extensions merge key by key (a new language adds to the map, a corrected
    one replaces its entry); interaction components merge by component id; `type` and
    `moreInfo` take the newer value; interactionType and correctResponsesPattern never change
    once set.
    """
    merged = copy.deepcopy(canonical)
    for key, value in incoming.items():
        old = merged.get(key)
        if key in _LANGUAGE_MAPS + ("extensions",) and isinstance(value, dict):
            merged[key] = {**old, **value} if isinstance(old, dict) else copy.deepcopy(value)
        elif key in _COMPONENT_LISTS and isinstance(value, list) and isinstance(old, list):
            merged[key] = _merge_components(old, value)
        elif key in _FIXED and key in merged:
            continue
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_components(old: list[Any], new: list[Any]) -> list[Any]:
    result = [copy.deepcopy(component) for component in old]
    by_id = {c.get("id"): c for c in result if isinstance(c, dict)}
    for component in new:
        if not isinstance(component, dict):
            continue
        existing = by_id.get(component.get("id"))
        if existing is None:
            result.append(copy.deepcopy(component))
            by_id[component.get("id")] = result[-1]
        elif isinstance(component.get("description"), dict):
            description = existing.get("description")
            base = description if isinstance(description, dict) else {}
            existing["description"] = {**base, **component["description"]}
    return result


def adds_nothing(canonical: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Whether `merge_definition(canonical, incoming) == canonical`, without copying."""
    for key, value in incoming.items():
        old = canonical.get(key)
        if key in _LANGUAGE_MAPS + ("extensions",) and isinstance(value, dict):
            if not isinstance(old, dict) or any(
                k not in old or old[k] != v for k, v in value.items()
            ):
                return False
        elif key in _COMPONENT_LISTS and isinstance(value, list) and isinstance(old, list):
            by_id = {c.get("id"): c for c in old if isinstance(c, dict)}
            # Descriptions as the merge would leave them (a component may come twice).
            merged: dict[Any, dict[str, Any]] = {}
            for component in value:
                if not isinstance(component, dict):
                    continue
                existing = by_id.get(component.get("id"))
                if existing is None:
                    return False  # the merge appends it
                description = component.get("description")
                if isinstance(description, dict):
                    known = existing.get("description")
                    current = merged.get(id(existing), known if isinstance(known, dict) else {})
                    merged[id(existing)] = {**current, **description}
            for component in by_id.values():
                if id(component) in merged and merged[id(component)] != component.get(
                    "description"
                ):
                    return False
        elif key in _FIXED and key in canonical:
            continue
        elif key not in canonical or old != value:
            return False
    return True


class _Recent:
    """What this process last knew (wrote or read) of some records, for a short while: lets a
    batch skip the database when it would change nothing there. Another process's change is
    seen once the entry is older than `seconds`."""

    def __init__(self, seconds: float = 10.0, size: int = 20_000) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        found = self._entries.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()  # rare: start afresh rather than track use
        self._entries[key] = (time.monotonic() + self.seconds, value)


def _activities_in(statement: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Activity objects of a statement: its object, context activities, and the same inside a
    SubStatement."""
    for source in (statement, statement.get("object")):
        if not isinstance(source, dict):
            continue
        if source is not statement and source.get("objectType") != "SubStatement":
            continue
        obj = source.get("object")
        if isinstance(obj, dict) and obj.get("objectType", "Activity") == "Activity":
            yield obj
        context = source.get("context")
        activities = context.get("contextActivities") if isinstance(context, dict) else None
        if isinstance(activities, dict):
            for value in activities.values():
                for activity in value if isinstance(value, list) else [value]:
                    if isinstance(activity, dict):
                        yield activity


def _agents_in(statement: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Agents (with Group members) a statement names: actor, Agent/Group object, instructor,
    team, xAPI 2.0 contextAgents/contextGroups, and the same inside a SubStatement. The
    authority is the LRS's own doing and is left out."""
    for source in (statement, statement.get("object")):
        if not isinstance(source, dict):
            continue
        if source is not statement and source.get("objectType") != "SubStatement":
            continue
        candidates = [source.get("actor")]
        obj = source.get("object")
        if isinstance(obj, dict) and obj.get("objectType") in ("Agent", "Group"):
            candidates.append(obj)
        context = source.get("context")
        if isinstance(context, dict):
            candidates += [context.get("instructor"), context.get("team")]
            for entry in (context.get("contextAgents") or []) + (
                context.get("contextGroups") or []
            ):
                if isinstance(entry, dict):
                    candidates.append(entry.get("agent") or entry.get("group"))
        for candidate in candidates:
            if not isinstance(candidate, dict):
                continue
            if candidate.get("objectType") == "Group":
                yield from (m for m in candidate.get("member") or [] if isinstance(m, dict))
            else:
                yield candidate


# --- Agents (Person objects) -----------------------------------------------------------------


class PersonRepository:
    """Names seen for each agent identifier. The LRS has no directory that links one person's
    several identifiers, so a Person holds exactly one identifier: the requested agent's."""

    def __init__(self, database: Database) -> None:
        self.agents: Collection = database["agents"]
        self._known = _Recent()  # (store, key) -> names known to be recorded

    async def ensure_indexes(self) -> None:
        await self.agents.create_index([("store", 1), ("key", 1)], unique=True, name="agent_key")

    async def record_from_statements(
        self, store: str, statements: list[dict[str, Any]], can_define: bool
    ) -> None:
        names: dict[str, list[str]] = {}
        for statement in statements:
            for agent in _agents_in(statement):
                key = agent_key(agent)
                name = agent.get("name")
                if key and isinstance(name, str) and name:
                    seen = names.setdefault(key, [])
                    if name not in seen:
                        seen.append(name)
        names = {
            key: found
            for key, found in names.items()
            if (known := self._known.get((store, key))) is None
            or (can_define and not set(found) <= known)
        }
        if not names:
            return
        try:
            # One read spares the writes for agents already known (the common case).
            known = {
                doc["key"]: doc.get("names", [])
                for doc in await self.agents.find({"store": store, "key": {"$in": list(names)}})
            }
        except Exception:
            log.exception("could not read the known agents")
            return
        # Agents never seen before, all in one write (a store round trip, and on the embedded
        # store a commit, each, would hold up the request); one created meanwhile by another
        # request is refused, and merged below like any known one.
        created, existing = await self._insert_new(
            store, {k: v for k, v in names.items() if k not in known}
        )
        for key, found in names.items():
            if key in created:
                self._known.put((store, key), set(found))
                continue
            if key in existing and not can_define:
                continue  # created meanwhile: names are only added with `define`
            if key in known and (not can_define or set(found) <= set(known[key])):
                self._known.put((store, key), set(known[key]))
                continue
            if can_define:
                update: dict[str, Any] = {"$addToSet": {"names": {"$each": found}}}
            else:
                update = {"$setOnInsert": {"names": found}}
            try:
                await self.agents.update_one({"store": store, "key": key}, update, upsert=True)
                self._known.put((store, key), set(found) | set(known.get(key, [])))
            except Exception:
                # Best effort: the statements are stored already; a lost name is not worth
                # failing the request over.
                log.exception("could not record the names of agent %s", key)

    async def _insert_new(
        self, store: str, names: dict[str, list[str]]
    ) -> tuple[set[str], set[str]]:
        """Insert these agents, none of which was found: those inserted, and those refused
        because another request created them meanwhile."""
        return await _insert_all(
            self.agents,
            "agents",
            list(names),
            lambda key: {"store": store, "key": key, "names": names[key]},
        )

    async def person(self, store: str, agent: dict[str, Any]) -> dict[str, Any]:
        """The Person object for an Agent (Communication 2.4): what is known of its names and
        its one identifier; the request's own name counts too (2.4.s3.b3)."""
        names: list[str] = []
        if isinstance(agent.get("name"), str):
            names.append(agent["name"])
        key = agent_key(agent)
        doc = await self.agents.find_one({"store": store, "key": key}) if key else None
        for name in (doc or {}).get("names", []):
            if name not in names:
                names.append(name)
        person: dict[str, Any] = {"objectType": "Person"}
        if names:
            person["name"] = names
        for ifi in ("mbox", "mbox_sha1sum", "openid", "account"):
            if ifi in agent:
                person[ifi] = [agent[ifi]]
        return person


# --- Activities ------------------------------------------------------------------------------


class ActivityRepository:
    def __init__(self, database: Database, people: PersonRepository | None = None) -> None:
        self.activities: Collection = database["activities"]
        self.people = people or PersonRepository(database)
        self._canonical = _Recent()  # (store, activity id) -> canonical definition

    async def ensure_indexes(self) -> None:
        await self.activities.create_index(
            [("store", 1), ("id", 1)], unique=True, name="activity_id"
        )
        await self.people.ensure_indexes()

    async def get(self, store: str, activity_id: str) -> dict[str, Any] | None:
        """The canonical Activity object, or None if no statement has defined it."""
        doc = await self.activities.find_one({"store": store, "id": activity_id})
        if doc is None:
            return None
        activity: dict[str, Any] = {"objectType": "Activity", "id": activity_id}
        definition = json.loads(doc["definition"])
        if definition:
            activity["definition"] = definition
        return activity

    async def updated(self, store: str, activity_id: str) -> int | None:
        doc = await self.activities.find_one(
            {"store": store, "id": activity_id}, projection={"updated": 1}
        )
        return doc["updated"] if doc else None

    async def record_from_statements(
        self, store: str, statements: list[dict[str, Any]], can_define: bool
    ) -> None:
        """Merge the Activity definitions of newly stored statements into the canonical ones
        (and the agents' names into their Person records).

        With `can_define` False an Activity the LRS has never seen is created, an existing one
        is left alone (Communication 4.2, scope `define`). Never raises: the statements are
        stored already, and their canonical data is a by-product.
        """
        incoming: dict[str, dict[str, Any]] = {}
        for statement in statements:
            for activity in _activities_in(statement):
                activity_id = activity.get("id")
                definition = activity.get("definition")
                # An Activity without a definition teaches nothing; recording it empty would
                # stop a later definer without `define` from creating it.
                if not isinstance(activity_id, str) or not isinstance(definition, dict):
                    continue
                if not definition:
                    continue
                earlier = incoming.get(activity_id)
                if earlier is None:
                    # Most statements repeat what a recent batch made canonical: no copy. (Not
                    # once the batch has its own value for the Activity: a later statement
                    # may set back what an earlier one changed.)
                    canonical = self._canonical.get((store, activity_id))
                    if canonical is not None and (
                        not can_define or adds_nothing(canonical, definition)
                    ):
                        continue
                elif earlier == definition:
                    continue  # merging it again changes nothing
                incoming[activity_id] = merge_definition(earlier or {}, definition)
        # What a recent batch already made canonical needs no database round trip.
        incoming = {
            activity_id: definition
            for activity_id, definition in incoming.items()
            if (canonical := self._canonical.get((store, activity_id))) is None
            or (can_define and not adds_nothing(canonical, definition))
        }
        if incoming:
            await self._merge_all(store, incoming, can_define)
        await self.people.record_from_statements(store, statements, can_define)

    async def _merge_all(
        self, store: str, incoming: dict[str, dict[str, Any]], can_define: bool
    ) -> None:
        try:
            # One read for the batch; an Activity is read again only when a write races.
            found = await self.activities.find({"store": store, "id": {"$in": list(incoming)}})
        except Exception:
            log.exception("could not read the canonical activities")
            return
        known = {doc["id"]: doc for doc in found}
        # Activities never seen before, all in one write (one round trip, and on the embedded
        # store one commit, each made a batch naming 100 new activities wait for 100 commits);
        # one created meanwhile by another request is refused, and merged below.
        created, existing = await self._insert_new(
            store, {a: d for a, d in incoming.items() if a not in known}
        )
        if existing:
            try:  # one read for all of them, instead of a refused insert and a read each
                query = {"store": store, "id": {"$in": sorted(existing)}}
                for doc in await self.activities.find(query):
                    known[doc["id"]] = doc
            except Exception:
                log.exception("could not read the activities created meanwhile")
        for activity_id, definition in incoming.items():
            if activity_id in created:
                self._canonical.put((store, activity_id), definition)
                continue
            try:
                await self._merge_one(
                    store, activity_id, definition, can_define, known.get(activity_id)
                )
            except Exception:
                log.exception("could not record the definition of activity %s", activity_id)

    async def _insert_new(
        self, store: str, definitions: dict[str, dict[str, Any]]
    ) -> tuple[set[str], set[str]]:
        """Insert these Activities, none of which was found: those inserted, and those refused
        because another request created them meanwhile."""
        updated = monotonic_now_micros()
        return await _insert_all(
            self.activities,
            "activities",
            list(definitions),
            lambda activity_id: {
                "store": store,
                "id": activity_id,
                "definition": _dump(definitions[activity_id]),
                "revision": 1,
                "updated": updated,
            },
        )

    async def _merge_one(
        self,
        store: str,
        activity_id: str,
        definition: dict[str, Any],
        can_define: bool,
        doc: dict[str, Any] | None,
    ) -> None:
        for attempt in range(_MAX_ATTEMPTS):
            if attempt:
                doc = await self.activities.find_one({"store": store, "id": activity_id})
            key = (store, activity_id)
            if doc is None:
                try:
                    await self.activities.insert_one(
                        {
                            "store": store,
                            "id": activity_id,
                            "definition": _dump(definition),
                            "revision": 1,
                            "updated": monotonic_now_micros(),
                        }
                    )
                    self._canonical.put(key, definition)
                    return
                except DuplicateKeys:
                    continue  # created meanwhile: merge into that one (if allowed)
            canonical = json.loads(doc["definition"])
            if not can_define:
                self._canonical.put(key, canonical)
                return
            merged = merge_definition(canonical, definition)
            if merged == canonical:
                self._canonical.put(key, canonical)
                return
            matched = await self.activities.update_one(
                {"_id": doc["_id"], "revision": doc["revision"]},
                {
                    "$set": {
                        "definition": _dump(merged),
                        "revision": doc["revision"] + 1,
                        "updated": monotonic_now_micros(),
                    }
                },
            )
            if matched:
                self._canonical.put(key, merged)
                return
        log.warning(
            "activity %s kept changing; this batch's definition was not merged", activity_id
        )


async def _insert_all(
    collection: Collection, what: str, keys: list[str], document: Callable[[str], dict[str, Any]]
) -> tuple[set[str], set[str]]:
    """Insert one document per key in one write: (the keys inserted, the keys refused by the
    unique index). On any other failure neither is known, and both are empty: the caller
    then records each one on its own, as if none had been inserted."""
    if not keys:
        return set(), set()
    try:
        await collection.insert_many([document(key) for key in keys])
    except DuplicateKeys as exc:
        refused = {keys[position] for position in exc.indexes}
        return set(keys) - refused, refused
    except Exception:
        log.exception("could not record new %s in one write; trying one at a time", what)
        return set(), set()
    return set(keys), set()


def _dump(definition: dict[str, Any]) -> str:
    return json.dumps(definition, separators=(",", ":"), ensure_ascii=False)
