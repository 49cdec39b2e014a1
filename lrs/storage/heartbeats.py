"""Heartbeats of the processes that derive (Celery workers, the derivation process): each
records the moment it was last alive under its name, and `GET /ready` reads the recent ones."""

from __future__ import annotations

import time
from typing import Any

from lrs.storage.database import Database

COLLECTION = "heartbeats"


async def record(database: Database, name: str) -> None:
    """`name` is alive now."""
    await database[COLLECTION].update_one(
        {"_id": name}, {"$set": {"name": name, "at": time.time()}}, upsert=True
    )


async def latest(database: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent heartbeats, newest first."""
    return await database[COLLECTION].find({}, sort=[("at", -1)], limit=limit)
