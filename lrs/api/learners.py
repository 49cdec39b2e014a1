"""Learner identity in progress URLs and parameters: an xAPI agent JSON or a canonical learner
key (`mbox:mailto:...`, `mbox_sha1sum:...`, `openid:...`, `account:<homePage>|<name>`)."""

from __future__ import annotations

from typing import Any

from lrs.api.errors import bad_request
from lrs.xapi import jsontext
from lrs.xapi.agents import KEY_PREFIXES, agent_from_key, agent_key
from lrs.xapi.validation import StatementValidationError, validate_agent


def learner_agent(text: str) -> dict[str, Any]:
    """The Agent a learner parameter denotes; 400 if it denotes none."""
    text = text.strip()
    if text.startswith("{"):
        try:
            agent = jsontext.loads(text, "the learner (agent JSON)")
        except jsontext.JSONTextError as exc:
            raise bad_request(str(exc)) from exc
    else:
        agent = _agent_from_key(text)
    try:
        validate_agent(agent, path="learner")
    except StatementValidationError as exc:
        raise bad_request(str(exc)) from exc
    if agent.get("objectType") == "Group":
        raise bad_request("learner must be an Agent, not a Group")
    return agent


def learner_key_of(text: str) -> str:
    key = agent_key(learner_agent(text))
    assert key is not None  # validate_agent guarantees an identifier
    return key


def _agent_from_key(key: str) -> dict[str, Any]:
    agent = agent_from_key(key)
    if agent is None:
        raise bad_request(
            "learner must be agent JSON or a learner key starting with "
            + ", ".join(KEY_PREFIXES)
            + " (an account key is account:<homePage>|<name>)"
        )
    return agent
