"""The embedded store shared by several processes (a CLI next to a running server, or an API and
a worker on one data directory): SQLite's locking must keep read-modify-write updates whole."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from lrs.storage.embedded import EmbeddedStore

ROUNDS = 150


def _bump_versions(path: str, rounds: int) -> int:
    """Optimistic version-checked increments, retried on conflict, as the progress deriver
    does; returns how many succeeded."""
    store = EmbeddedStore(path)
    records = store.collection("records")
    done = 0
    while done < rounds:
        current = records.find_one({"_id": "r"})
        assert current is not None
        matched, _ = records.update(
            {"_id": "r", "version": current["version"]},
            {"$set": {"version": current["version"] + 1}},
        )
        done += matched
    store.close()
    return done


def test_version_checked_updates_from_two_processes_are_never_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    store = EmbeddedStore(path)
    records = store.collection("records")
    records.create_index([("version", 1)], False, None)
    assert records.insert_many([{"_id": "r", "version": 0}]) == []

    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_bump_versions, [(path, ROUNDS), (path, ROUNDS)])

    assert results == [ROUNDS, ROUNDS]
    # Written by the other processes: visible here, through the index too.
    assert records.find_one({"_id": "r"}) == {"_id": "r", "version": 2 * ROUNDS}
    assert records.count({"version": 2 * ROUNDS}) == 1
    store.close()


def _insert_tagged(path: str, tag: str, count: int) -> None:
    store = EmbeddedStore(path)
    items = store.collection("items")
    for start in range(0, count, 10):
        items.insert_many([{"tag": tag, "n": n} for n in range(start, start + 10)])
    store.close()


def test_concurrent_inserts_from_two_processes_all_land_in_the_indexes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    store = EmbeddedStore(path)
    items = store.collection("items")
    items.create_index([("tag", 1), ("n", 1)], False, None)

    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.starmap(_insert_tagged, [(path, "a", 200), (path, "b", 200)])

    for tag in ("a", "b"):
        found = items.find({"tag": tag, "n": {"$gte": 0}}, None, [("n", 1)], 0)
        assert [doc["n"] for doc in found] == list(range(200))
    assert items.count({}) == 400
    store.close()
