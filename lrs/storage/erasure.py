"""Erasing a learner (the right to erasure): statements that mention them, their documents
(State, Agent Profile), their progress records and what the Agents resource knows of them."""

from __future__ import annotations

from typing import Any

from lrs.storage.database import Database
from lrs.storage.statement_docs import term


def _targets(store: str, learner: str) -> dict[str, dict[str, Any]]:
    """The documents to erase, per collection, as filters."""
    return {
        # related_agents covers actor, object, authority, instructor, team and SubStatements;
        # its term narrows through the terms index.
        "statements": {
            "store": store,
            "terms": term("related_agents", learner),
            "related_agents": learner,
        },
        "documents": {"store": store, "agent": learner},
        "progress": {"store": store, "learner": learner},
        "agents": {"store": store, "key": learner},
    }


async def erase_learner(
    database: Database, store: str, learner: str, *, dry_run: bool
) -> dict[str, int]:
    """Count (dry run) or delete everything of one learner in one store; returns the counts."""
    counts: dict[str, int] = {}
    for collection, filter in _targets(store, learner).items():
        if dry_run:
            counts[collection] = await database[collection].count(filter)
        else:
            counts[collection] = await database[collection].delete_many(filter)
    return counts
