"""How a statement is kept: its storage document, built from the statement alone (pure).

Each statement is kept as its JSON text (`statement`, contextActivities as arrays, as every
format returns them) next to the fields the xAPI queries filter on. Keeping the text avoids
MongoDB's restrictions on field names (extension keys are IRIs with dots, and may start with
`$`), and a page of statements in the exact format is these texts as they are.

`voided` has three values: False (visible), True (voided: only `voidedStatementId` finds it)
and None: written but not committed yet (MongoDB's all-or-nothing protocol, see
`lrs.storage.statement_writes`); every reader asks for False or True, so it sees nothing of a
batch before it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrs.xapi.agents import (
    agent_key,
    object_activity,
    related_activities,
    related_agents,
    statement_agents,
)
from lrs.xapi.formats import context_activities_as_arrays
from lrs.xapi.jsontext import compact_json

VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
MAX_REFERENCE_DEPTH = 16

# The filterable values of a statement; a StatementRef also carries those of the statements it
# references (`ref_chain`), so "statements that reference a match" is one indexed query.
TERM_FIELDS = (
    "agents",
    "related_agents",
    "verb",
    "activity",
    "related_activities",
    "registration",
)
SUMMARY_FIELDS = ("ref_target", *TERM_FIELDS)


def is_voiding(statement: dict[str, Any]) -> bool:
    return (statement.get("verb") or {}).get("id") == VOIDED_VERB


def reference_target(statement: dict[str, Any]) -> str | None:
    """The id a StatementRef object points at (lower case), else None."""
    obj = statement.get("object")
    if isinstance(obj, dict) and obj.get("objectType") == "StatementRef":
        target = obj.get("id")
        return target.lower() if isinstance(target, str) else None
    return None


def learner_key(statement: dict[str, Any]) -> str | None:
    """The learner whose progress a statement counts for: an Agent actor only. An identified
    Group counts for none of its members, and an anonymous Group's members are not inferred."""
    actor = statement.get("actor")
    if isinstance(actor, dict) and actor.get("objectType", "Agent") == "Agent":
        return agent_key(actor)
    return None


def match_fields(statement: dict[str, Any]) -> dict[str, Any]:
    registration = (statement.get("context") or {}).get("registration")
    agents = statement_agents(statement)
    return {
        "agents": agents,
        "related_agents": related_agents(statement, agents),
        "verb": (statement.get("verb") or {}).get("id"),
        "activity": object_activity(statement),
        "related_activities": related_activities(statement),
        "registration": registration.lower() if isinstance(registration, str) else None,
        "learner": learner_key(statement),
    }


def term(field: str, value: str) -> str:
    return f"{field}:{value}"


# The fields whose values go into `terms`: `agents` and `activity` are left out, as every value
# of theirs is also one of `related_agents` and `related_activities`; a query on them narrows
# through the broader term and filters exactly on top (an index entry fewer per value).
INDEXED_TERMS = ("related_agents", "verb", "related_activities", "registration")


def narrowing_term(field: str, value: str) -> str:
    """The term an exact filter on `field` narrows its candidates through."""
    broader = {"agents": "related_agents", "activity": "related_activities"}
    return term(broader.get(field, field), value)


def terms(summaries: list[dict[str, Any]]) -> list[str]:
    """Every filterable value of a statement and of the statements it references, one string
    each, for the `terms` index."""
    found: set[str] = set()
    for summary in summaries:
        for field in INDEXED_TERMS:
            value = summary.get(field)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    found.add(term(field, item))
    return sorted(found)


def chain_link(doc: dict[str, Any]) -> dict[str, Any]:
    """What a referring statement keeps of a statement it references."""
    return {"id": doc["id"], **{k: doc.get(k) for k in SUMMARY_FIELDS}}


def statement_text(statement: dict[str, Any]) -> str:
    """The stored JSON text of a statement: compact, contextActivities as arrays (Data
    2.4.6.2), the form the exact format serves."""
    return compact_json(context_activities_as_arrays(statement))


@dataclass(frozen=True)
class DocumentDraft:
    """The part of a statement's storage document that does not depend on its batch's stored
    key: built before the batch takes the write lock (on the embedded store the lock is what
    limits writes, so work done before it is work other writers do not wait for)."""

    statement_id: str
    # The JSON text without `stored`, and without `timestamp` when the statement has none
    # (both are set from the stored key, `complete_document`).
    text: str
    has_timestamp: bool
    fields: dict[str, Any]  # match_fields
    authority_key: str | None
    target: str | None  # reference_target
    voiding: bool


def draft_document(statement: dict[str, Any]) -> DocumentDraft:
    """The draft of a complete statement's document (id and authority set)."""
    unstamped = {k: v for k, v in statement.items() if k != "stored"}
    return DocumentDraft(
        statement_id=statement["id"],
        text=statement_text(unstamped),
        # Where missing, set from the stored key (lrs.storage.statement_writes stamps it).
        has_timestamp="timestamp" in unstamped,
        fields=match_fields(statement),
        authority_key=agent_key(statement.get("authority")),
        target=reference_target(statement),
        voiding=is_voiding(statement),
    )


def complete_document(
    store: str,
    draft: DocumentDraft,
    stored: str,
    stored_key: int,
    voided: bool | None,
    chain: list[dict[str, Any]],
) -> dict[str, Any]:
    """The storage document of a drafted statement, stored at `stored` (`stored_key`)."""
    # `stored` (and `timestamp` where the statement had none) go last: JSON members have no
    # order, and a timestamp needs no escaping.
    tail = f',"stored":"{stored}"' + ("" if draft.has_timestamp else f',"timestamp":"{stored}"')
    doc = {
        "store": store,
        "id": draft.statement_id,
        # As every format returns it (contextActivities as arrays), so that a page in the
        # exact format is the stored texts as they are (lrs.api.statements).
        "statement": draft.text[:-1] + tail + "}",
        "stored_key": stored_key,
        "voided": voided,
        "terms": terms([draft.fields, *chain]),
        "authority_key": draft.authority_key,
        **draft.fields,
    }
    # Only a StatementRef has these: left out otherwise, so that the (partial) indexes over
    # them hold StatementRefs only and an ordinary statement costs them nothing. A query for
    # `voids: None` still matches it (null matches a missing field).
    if draft.target is not None:
        doc["ref_target"] = draft.target
        if draft.voiding:
            doc["voids"] = draft.target
    if chain:
        doc["ref_chain"] = chain
        doc["ref_chain_ids"] = [link["id"] for link in chain]
    return doc
