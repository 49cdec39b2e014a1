"""A Celery worker's round (Deriver.derive_owed): its own outbox entries and the store's oldest
other ones still owed, so that a worker that falls behind catches up in large rounds; a task
whose entries an earlier round took does nothing; other stores' entries are left alone."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lrs.services import build_services
from lrs.xapi.comparison import statements_equivalent
from tests.conftest import make_settings, statement

COURSE = "http://example.com/courses/owed"
MODULE = f"{COURSE}/m1"


def _viewed(learner: str, page: int) -> dict:
    return statement(
        id=str(uuid.uuid4()),
        actor={"mbox": f"mailto:{learner}@example.com"},
        object={"id": f"{MODULE}/page{page}"},
        context={"contextActivities": {"parent": [{"id": MODULE}], "grouping": [{"id": COURSE}]}},
        timestamp="2026-01-01T10:00:00Z",
    )


@pytest.mark.parametrize("backend", ["memory", "embedded"])
async def test_a_round_takes_the_stores_other_owed_entries_and_later_tasks_find_nothing(
    backend: str, tmp_path: Path
) -> None:
    services = build_services(make_settings(backend, tmp_path))
    await services.start(background=False)  # nobody derives but the test
    try:
        repository = services.statements
        batches = []
        for store, learner in (("s1", "ada"), ("s1", "bob"), ("s1", "cy"), ("s2", "dee")):
            committed = await repository.insert_batch(
                store, [_viewed(learner, 1)], statements_equivalent
            )
            batches.append((store, [s["id"] for s in committed.fresh], committed.token))
        entry = {token: f"{token}:derive" for _, _, token in batches}
        first_store, first_ids, first_token = batches[0]

        changed = await services.deriver.derive_owed(first_store, first_ids, [entry[first_token]])

        assert changed == 3  # ada's, bob's and cy's records: the whole owed backlog of s1
        learners = {r["learner"] for r in await services.progress.find("s1", course=COURSE)}
        assert learners == {f"mbox:mailto:{n}@example.com" for n in ("ada", "bob", "cy")}
        left = await repository.outbox.still_owed(list(entry.values()))
        assert left == [entry[batches[3][2]]]  # s2's entry: another store's work
        # bob's task arrives later: its entry was taken, nothing is read or written again.
        _, bob_ids, bob_token = batches[1]
        assert await services.deriver.derive_owed("s1", bob_ids, [entry[bob_token]]) == 0
        assert await services.progress.find("s2", course=COURSE) == []
    finally:
        await services.close()
