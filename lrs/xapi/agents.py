"""Agent identity: canonical keys from inverse functional identifiers, and the agents and
activities a statement relates to (for the `agent`, `related_agents` and `related_activities`
filters and for progress)."""

from __future__ import annotations

from typing import Any

IFI_PROPERTIES = ("mbox", "mbox_sha1sum", "openid", "account")


def agent_key(agent: Any) -> str | None:
    """The canonical key of an Agent or identified Group, or None for an anonymous Group.

    `mbox:mailto:a@b.c`, `mbox_sha1sum:<hex>`, `openid:<uri>`, `account:<homePage>|<name>`.
    """
    if not isinstance(agent, dict):
        return None
    if "mbox" in agent:
        return f"mbox:{agent['mbox']}"
    if "mbox_sha1sum" in agent:
        return f"mbox_sha1sum:{str(agent['mbox_sha1sum']).lower()}"
    if "openid" in agent:
        return f"openid:{agent['openid']}"
    account = agent.get("account")
    if isinstance(account, dict):
        return f"account:{account.get('homePage')}|{account.get('name')}"
    return None


def agent_keys(agent: Any) -> list[str]:
    """The agent's own key and those of its members (a statement by a group concerns them)."""
    if not isinstance(agent, dict):
        return []
    members = agent.get("member")
    if not members:  # an Agent (every statement's actor, most often): its key alone
        key = agent_key(agent)
        return [key] if key else []
    keys = dict.fromkeys([agent_key(agent), *map(agent_key, members)])
    return [key for key in keys if key]


def is_agent_object(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("objectType") in ("Agent", "Group")


def _context_activity_ids(context: Any) -> list[str]:
    ids: list[str] = []
    if not isinstance(context, dict):
        return ids
    activities = context.get("contextActivities") or {}
    for value in activities.values():
        for activity in value if isinstance(value, list) else [value]:
            if isinstance(activity, dict) and "id" in activity:
                ids.append(activity["id"])
    return ids


def _context_agents(context: Any) -> list[Any]:
    if not isinstance(context, dict):
        return []
    agents = [context.get("instructor"), context.get("team")]
    # xAPI 2.0 contextAgents / contextGroups
    for entry in (context.get("contextAgents") or []) + (context.get("contextGroups") or []):
        if isinstance(entry, dict):
            agents.append(entry.get("agent") or entry.get("group"))
    return [agent for agent in agents if agent]


def statement_agents(statement: dict[str, Any]) -> list[str]:
    """Keys for the plain `agent` filter: the actor, or the object when it is an Agent/Group."""
    keys = agent_keys(statement.get("actor"))
    obj = statement.get("object")
    if is_agent_object(obj):
        keys += [key for key in agent_keys(obj) if key not in keys]
    return keys


def related_agents(statement: dict[str, Any], agents: list[str] | None = None) -> list[str]:
    """Keys for `related_agents=true`: actor, object, authority, instructor, team, and the same
    inside a SubStatement. `agents`: the statement's `statement_agents`, where known."""
    keys = statement_agents(statement) if agents is None else agents
    candidates = [statement.get("authority"), *_context_agents(statement.get("context"))]
    obj = statement.get("object")
    if isinstance(obj, dict) and obj.get("objectType") == "SubStatement":
        candidates += [obj.get("actor"), *_context_agents(obj.get("context"))]
        if is_agent_object(obj.get("object")):
            candidates.append(obj.get("object"))
    # First seen first, each once (a dict keeps order; a list search would be quadratic in a
    # large team).
    found = dict.fromkeys(keys)
    for agent in candidates:
        found.update(dict.fromkeys(agent_keys(agent)))
    return list(found)


def object_activity(statement: dict[str, Any]) -> str | None:
    obj = statement.get("object")
    if isinstance(obj, dict) and obj.get("objectType", "Activity") == "Activity":
        return obj.get("id")
    return None


def related_activities(statement: dict[str, Any]) -> list[str]:
    """Ids for `related_activities=true`: the object, context activities, and the same inside a
    SubStatement."""
    ids: dict[str, None] = {}  # ordered, each once, in linear time however many there are
    for source in (statement, statement.get("object")):
        if not isinstance(source, dict):
            continue
        if source is not statement and source.get("objectType") != "SubStatement":
            continue
        activity = object_activity(source)
        if activity:
            ids[activity] = None
        ids.update(dict.fromkeys(_context_activity_ids(source.get("context"))))
    return list(ids)


KEY_PREFIXES = ("mbox:", "mbox_sha1sum:", "openid:", "account:")


def agent_from_key(key: str) -> dict[str, Any] | None:
    """The Agent a canonical key (`agent_key`) names, or None when it is not one."""
    if not key.startswith(KEY_PREFIXES):
        return None
    kind, _, value = key.partition(":")
    if kind == "account":
        home_page, sep, name = value.rpartition("|")
        if not sep:
            return None
        return {"objectType": "Agent", "account": {"homePage": home_page, "name": name}}
    return {"objectType": "Agent", kind: value}
