"""The `format` parameter of statement GETs: exact, ids, canonical."""

from __future__ import annotations

import copy
from typing import Any

from lrs.xapi.agents import IFI_PROPERTIES

FORMATS = ("exact", "ids", "canonical")
_LANGUAGE_MAP_KEYS = ("display", "name", "description")


def format_statement(statement: dict[str, Any], fmt: str, languages: list[str]) -> dict[str, Any]:
    statement = context_activities_as_arrays(statement)
    if fmt == "ids":
        return _ids(statement)
    if fmt == "canonical":
        return _canonical(copy.deepcopy(statement), languages)
    return statement


def context_activities_as_arrays(statement: dict[str, Any]) -> dict[str, Any]:
    """Data 2.4.6.2: every contextActivities value is returned as an array, even one that
    arrived as a single Activity object; in a SubStatement too. Returns the statement itself
    when nothing changes (the common case), else a copy of the parts that change."""
    context = _arrays_in_context(statement.get("context"))
    obj = statement.get("object")
    sub = obj
    if isinstance(obj, dict) and obj.get("objectType") == "SubStatement":
        sub_context = _arrays_in_context(obj.get("context"))
        if sub_context is not obj.get("context"):
            sub = {**obj, "context": sub_context}
    if context is statement.get("context") and sub is obj:
        return statement
    result = dict(statement)
    if context is not statement.get("context"):
        result["context"] = context
    if sub is not obj:
        result["object"] = sub
    return result


def _arrays_in_context(context: Any) -> Any:
    if not isinstance(context, dict):
        return context
    activities = context.get("contextActivities")
    if not isinstance(activities, dict) or not any(
        isinstance(value, dict) for value in activities.values()
    ):
        return context
    arrays = {
        kind: [value] if isinstance(value, dict) else value for kind, value in activities.items()
    }
    return {**context, "contextActivities": arrays}


def _agent_ids(agent: Any) -> Any:
    if not isinstance(agent, dict):
        return agent
    slim: dict[str, Any] = {"objectType": agent.get("objectType", "Agent")}
    for ifi in IFI_PROPERTIES:
        if ifi in agent:
            slim[ifi] = agent[ifi]
    anonymous = not any(ifi in agent for ifi in IFI_PROPERTIES)
    if agent.get("objectType") == "Group" and "member" in agent and anonymous:
        slim["member"] = [_agent_ids(member) for member in agent["member"]]
    return slim


def _object_ids(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("objectType", "Activity")
    if kind in ("Agent", "Group"):
        return _agent_ids(obj)
    if kind == "SubStatement":
        return _ids(obj)
    if kind == "Activity":
        # The minimum that identifies an Activity: its id (objectType defaults to Activity).
        return {"id": obj.get("id")}
    return {"objectType": kind, "id": obj.get("id")}


def _ids(statement: dict[str, Any]) -> dict[str, Any]:
    """Agents, activities and verbs reduced to their identifiers."""
    slim = dict(statement)
    if "actor" in slim:
        slim["actor"] = _agent_ids(slim["actor"])
    if "verb" in slim and isinstance(slim["verb"], dict):
        slim["verb"] = {"id": slim["verb"].get("id")}
    if "object" in slim:
        slim["object"] = _object_ids(slim["object"])
    if "authority" in slim:
        slim["authority"] = _agent_ids(slim["authority"])
    context = slim.get("context")
    if isinstance(context, dict):
        context = dict(context)
        for role in ("instructor", "team"):
            if role in context:
                context[role] = _agent_ids(context[role])
        activities = context.get("contextActivities")
        if isinstance(activities, dict):
            context["contextActivities"] = {
                kind: [_object_ids(a) for a in (value if isinstance(value, list) else [value])]
                for kind, value in activities.items()
            }
        slim["context"] = context
    return slim


def pick_language(language_map: dict[str, str], languages: list[str]) -> dict[str, str]:
    """One entry of a language map: the first requested language available (exact tag, then
    primary subtag), else `und`, else the first entry."""
    if not language_map:
        return language_map
    lowered = {tag.lower(): tag for tag in language_map}
    for wanted in languages:
        wanted = wanted.lower()
        if wanted == "*":
            break
        if wanted in lowered:
            tag = lowered[wanted]
            return {tag: language_map[tag]}
        for tag_lower, tag in lowered.items():
            if tag_lower.split("-")[0] == wanted.split("-")[0]:
                return {tag: language_map[tag]}
    if "und" in language_map:
        return {"und": language_map["und"]}
    first = next(iter(language_map))
    return {first: language_map[first]}


def _canonical(node: Any, languages: list[str]) -> Any:
    if isinstance(node, list):
        return [_canonical(item, languages) for item in node]
    if not isinstance(node, dict):
        return node
    for key, value in node.items():
        if key in _LANGUAGE_MAP_KEYS and isinstance(value, dict) and _is_language_map(value):
            node[key] = pick_language(value, languages)
        elif key != "extensions":
            node[key] = _canonical(value, languages)
    return node


def _is_language_map(value: dict[str, Any]) -> bool:
    return all(isinstance(v, str) for v in value.values())


def parse_accept_language(header: str | None) -> list[str]:
    """Language ranges from Accept-Language, best first."""
    if not header:
        return []
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranges.append((-quality, position, tag.strip()))
    return [tag for _, _, tag in sorted(ranges)]
