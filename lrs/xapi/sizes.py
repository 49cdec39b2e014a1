"""What a statement costs as a stored document, so that one too large for the back end is
refused (413) before anything of its batch is written.

MongoDB refuses BSON documents over 16 MiB, and the other back ends follow the same limit so
that a statement accepted by one is accepted by all. A stored statement is its JSON text plus
the values its queries filter on (agents, activities, verb, registration), each kept as a field
value and again as a `terms` entry; the estimate below counts those generously.
"""

from __future__ import annotations

import json
from typing import Any

from lrs.xapi.agents import object_activity, related_activities, related_agents, statement_agents

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# The stored fields the estimate does not count one by one (ids, times, flags, the summaries of
# referenced statements).
_FIXED_BYTES = 64 * 1024
# A BSON array element or field around a string: type, key, length, terminator; and the term's
# prefix (its field name).
_PER_VALUE_BYTES = 40
# No request body below this size can hold a statement whose document exceeds the limit: every
# value counted above is at least a few bytes of the body, and costs at most about 12 times
# that once stored. Only larger bodies pay for the estimate.
CHECK_ABOVE_BODY_BYTES = 1024 * 1024


def stored_bytes(statement: dict[str, Any]) -> int:
    """An upper estimate of the stored document's size, in bytes."""
    text = json.dumps(statement, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        values = [
            *statement_agents(statement),
            *related_agents(statement),
            *related_activities(statement),
            object_activity(statement),
            _verb(statement),
            _registration(statement),
        ]
    except (AttributeError, TypeError):
        # Not a valid statement (validation refuses it): its text is all there is to count.
        values = []
    counted = sum(len(v.encode("utf-8")) + _PER_VALUE_BYTES for v in values if isinstance(v, str))
    # Each value is stored as a field and again as a term.
    return len(text) + 2 * counted + _FIXED_BYTES


def too_large(statement: dict[str, Any]) -> int | None:
    """The estimated size when it exceeds MAX_DOCUMENT_BYTES, else None."""
    size = stored_bytes(statement)
    return size if size > MAX_DOCUMENT_BYTES else None


def _verb(statement: dict[str, Any]) -> Any:
    verb = statement.get("verb")
    return verb.get("id") if isinstance(verb, dict) else None


def _registration(statement: dict[str, Any]) -> Any:
    context = statement.get("context")
    return context.get("registration") if isinstance(context, dict) else None
