"""A round of derivation adds the new content items of discovered modules in bulk
(lrs.progress.deriver: `_RoundCatalogue.discover_content`), where one statement at a time each
item cost about ten reads and two writes. Bulk or not, the catalogue and the records must end
as if every statement had been derived on its own, in order: random rounds that mix new
items with judged items, new modules, items named as modules and the modules' own
activities, on the in-memory double and on the embedded store."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lrs.api.statements import store_statements
from lrs.config import Settings
from lrs.progress import deriver
from lrs.services import build_services
from lrs.storage.credentials import Credential
from lrs.storage.progress import CatalogueRepository

STORE = "default"
BASE = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
COURSE = "http://example.com/discovery-rounds/course"
MODULES = [f"{COURSE}/m{j}" for j in range(3)]  # m2 appears only in the random round
LEARNERS = [{"mbox": f"mailto:r{i}@example.com"} for i in range(4)]
VIEWED = "http://adlnet.gov/expapi/verbs/experienced"
PASSED = "http://adlnet.gov/expapi/verbs/passed"
VOLATILE = ("version", "updated_at", "updated_key", "seq", "_id", "store")
CREDENTIAL = Credential(
    key="rounds",
    store=STORE,
    scopes=frozenset({"all"}),
    name="rounds",
    authority={"objectType": "Agent", "account": {"homePage": "http://lrs.test", "name": "r"}},
)


def _statement(n: int, learner: int, obj: str, parent: str | None, grouping: bool) -> dict:
    context: dict[str, Any] = {}
    if parent is not None:
        context["parent"] = [{"id": parent}]
    if grouping:
        context["grouping"] = [{"id": COURSE}]
    return {
        "id": str(uuid.UUID(int=n + 1)),
        "actor": LEARNERS[learner],
        "verb": {"id": VIEWED},
        "object": {"objectType": "Activity", "id": obj},
        "context": {"contextActivities": context},
        "timestamp": (BASE + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _history(seed: int) -> tuple[list[dict], list[dict]]:
    """A first round that discovers m0 and m1, then a random round."""
    rng = random.Random(seed)
    first = [_statement(n, n % 4, f"{MODULES[n % 2]}/page0", MODULES[n % 2], True) for n in (0, 1)]
    used = [f"{MODULES[0]}/page0", f"{MODULES[1]}/page0"]
    rest = []
    for n in range(2, 90):
        learner = rng.randrange(len(LEARNERS))
        module = MODULES[rng.randrange(2)]
        kind = rng.random()
        if kind < 0.5:  # a new content item of a module that exists
            obj = f"{module}/page{n}"
            statement = _statement(n, learner, obj, module, True)
        elif kind < 0.62:  # an item seen before
            obj = rng.choice(used)
            statement = _statement(n, learner, obj, obj.rsplit("/", 1)[0], True)
        elif kind < 0.72:  # judged: the module's assessment from then on
            obj = rng.choice([*used, f"{module}/quiz{n % 3}"])
            statement = _statement(n, learner, obj, obj.rsplit("/", 1)[0], True)
            statement["verb"] = {"id": PASSED}
            statement["result"] = {"success": True, "score": {"scaled": rng.random()}}
        elif kind < 0.8:  # a module no earlier round had
            obj = f"{MODULES[2]}/page{n}"
            statement = _statement(n, learner, obj, MODULES[2], True)
        elif kind < 0.86:  # about the module itself
            obj = module
            statement = _statement(n, learner, obj, None, True)
        elif kind < 0.93:  # an item named as the parent: not taken as a module
            obj = f"{module}/deep{n}"
            statement = _statement(n, learner, obj, rng.choice(used), True)
        else:  # no grouping: a course named after the module
            obj = f"{module}/alone{n}"
            statement = _statement(n, learner, obj, f"{COURSE}/solo{n % 2}", False)
        used.append(obj)
        rest.append(statement)
    return first, rest


async def _derived(
    first: list[dict], rest: list[dict], one_round: bool, settings: Settings
) -> tuple[dict, dict, dict]:
    services = build_services(settings)
    ids: list[str] = []
    services.after_store[:] = [lambda store, new, token: ids.extend(new)]
    await services.start(background=False)
    try:
        await store_statements(services, CREDENTIAL, first, version="1.0.3")
        await services.deriver.derive_statements(STORE, list(ids))
        ids.clear()
        for start in range(0, len(rest), 10):
            await store_statements(services, CREDENTIAL, rest[start : start + 10], version="1.0.3")
        if one_round:
            await services.deriver.derive_statements(STORE, list(ids))
        else:
            for statement_id in ids:
                await services.deriver.derive_statements(STORE, [statement_id])
        records = await services.progress.find(STORE, limit=1000, include_not_started=True)
        before = _comparable(records)
        # A grown module owes its other learners' records a re-summary (their item counts):
        # the state every way must reach.
        for course_id, module_id in sorted({(r["course"], r["module"]) for r in records}):
            await services.deriver.resummarize(STORE, course_id, module_id)
        catalogue = {}
        for course in await services.catalogue.list(STORE):
            catalogue[course.id] = sorted(
                (module.id, sorted((item.id, item.role) for item in module.items))
                for module in course.modules
            )
        records = await services.progress.find(STORE, limit=1000, include_not_started=True)
        return catalogue, before, _comparable(records)
    finally:
        await services.close()


def _comparable(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (r["learner"], r["course"], r["module"]): {k: v for k, v in r.items() if k not in VOLATILE}
        for r in records
    }


@pytest.mark.parametrize("storage", ["memory", "embedded"])
@pytest.mark.parametrize("seed", range(6))
def test_a_round_discovers_what_its_statements_one_by_one_would(
    storage: str, seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk: list[int] = []
    add = CatalogueRepository.add_content_items_work

    def counted(self: CatalogueRepository, *args: Any, **kwargs: Any) -> Any:
        bulk.append(len(args[3]))
        return add(self, *args, **kwargs)

    monkeypatch.setattr(CatalogueRepository, "add_content_items_work", counted)
    first, rest = _history(seed)

    def settings(name: str) -> Settings:
        return Settings(
            storage=storage, data_dir=tmp_path / name, redis_url=None, derivation="inprocess"
        )

    together = asyncio.run(_derived(first, rest, True, settings("together")))
    added_in_bulk = sum(bulk)
    # The same round with every discovery written in its turn, one at a time, as before bulk.
    joins = deriver._RoundCatalogue._joins_discovered_module

    def never(self: Any, found: Any, known: Any) -> Any:
        yield from joins(self, found, known)
        return False

    with monkeypatch.context() as patch:
        patch.setattr(deriver._RoundCatalogue, "_joins_discovered_module", never)
        in_turn = asyncio.run(_derived(first, rest, True, settings("in-turn")))
    added_in_turn = sum(bulk) - added_in_bulk
    one_by_one = asyncio.run(_derived(first, rest, False, settings("one-by-one")))

    assert added_in_bulk > 10  # the round did take most new items in bulk
    assert added_in_turn == 0  # and the round it is compared with none
    assert together == in_turn  # catalogue, records as derived, records re-summarized
    assert together[0] == one_by_one[0]  # the same modules, items and roles
    assert together[2] == one_by_one[2]  # the same records, item counts included
    discovered = {k: r for k, r in together[2].items() if r["module"] in MODULES[:2]}
    assert discovered and all(r["discovered"] for r in discovered.values())


def test_items_added_in_bulk_are_never_stored_without_their_count(tmp_path: Path) -> None:
    """The derivation process (brief writes: its reads are no transaction) writes a round's
    bulk items and their module's count in one transaction of their own on the embedded store:
    a failure between the two, as a crash would leave them, keeps neither, and the statements,
    still owed, count every item when derived again."""
    settings = Settings(
        storage="embedded", data_dir=tmp_path / "data", redis_url=None, derivation="inprocess"
    )
    first = [_statement(0, 0, f"{MODULES[0]}/page0", MODULES[0], True)]
    later = [_statement(n, n % 4, f"{MODULES[0]}/page{n}", MODULES[0], True) for n in range(1, 9)]

    async def scenario() -> tuple[int, int, int, int]:
        services = build_services(settings)
        ids: list[str] = []
        services.after_store[:] = [lambda store, new, token: ids.extend(new)]
        await services.start(background=False)
        services.deriver.brief_writes = True  # as lrs.derivation_process sets it
        add = CatalogueRepository.add_content_items_work

        def crashing(self: CatalogueRepository, *args: Any) -> Any:
            work = add(self, *args)
            op = next(work)
            while True:
                if op.method == "find_one_and_update":  # the rows are written: now the count
                    raise RuntimeError("crash between the rows and the count")
                op = work.send((yield op))

        async def rows_and_count() -> tuple[int, int]:
            rows = await services.catalogue.activities.count(
                {"store": STORE, "course": COURSE, "module": MODULES[0]}
            )
            counter = await services.catalogue.counts.find_one({})
            return rows - 1, counter["n"] if counter else 0  # the module's own row aside

        try:
            await store_statements(services, CREDENTIAL, first, version="1.0.3")
            await services.deriver.derive_statements(STORE, list(ids))
            ids.clear()
            await store_statements(services, CREDENTIAL, later, version="1.0.3")
            CatalogueRepository.add_content_items_work = crashing  # type: ignore[method-assign]
            try:
                with contextlib.suppress(RuntimeError):
                    await services.deriver.derive_statements(STORE, list(ids))
            finally:
                CatalogueRepository.add_content_items_work = add  # type: ignore[method-assign]
            after_crash = await rows_and_count()
            await services.deriver.derive_statements(STORE, list(ids))
            return (*after_crash, *(await rows_and_count()))
        finally:
            await services.close()

    rows_after_crash, count_after_crash, rows, count = asyncio.run(scenario())
    assert rows_after_crash == count_after_crash == 1  # only the first round's item
    assert rows == count == 9
