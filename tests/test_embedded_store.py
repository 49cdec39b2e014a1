"""Properties of the embedded document store (`lrs.storage.embedded`).

The store answers queries through a planner (index entry tables, multikey for arrays, "exact"
plans that skip the post-filter, ordered plans that stream and stop at the limit). Whatever plan it
picks, the answer must be the one a full scan gives, and the full scan (`matches`) must follow
MongoDB's rules. So:

1. planner vs brute force: random documents, random declared indexes and random filters; `find`,
   `count` and `find` with sort + limit equal brute force over `matches` (section 1);
2. `matches` vs an independent reference, mongomock, where mongomock follows MongoDB (section 2);
3. random update/upsert/delete sequences applied to the store and to mongomock end in the same
   documents, and indexed queries still agree with brute force after each step (section 3);
4. unique indexes: refused positions, rolled-back updates, failed index builds (section 4);
5. persistence, and two stores (or processes) on one file, as the CLI next to a running server
   (section 5);

plus targeted tests where MongoDB's answer is certain and a random search is unlikely to look
(projections, ranges on booleans and null, $all [], null on dotted paths, upsert seeds).

A failing property can spend up to about a minute shrinking its example before it reports.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mongomock
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pymongo.errors import DuplicateKeyError, OperationFailure

from lrs.storage.embedded import EmbeddedCollection, EmbeddedStore, matcher, matches

Doc = dict[str, Any]
Filter = dict[str, Any]

# Hypothesis reuses the function-scoped tmp_path across examples: every example opens its own
# uniquely named file in it, so sharing the directory is harmless.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# The central property (the planner never loses a document) gets more examples: they are cheap.
CENTRAL = settings(PROPERTY, max_examples=300)


def new_collection(tmp_path: Path, name: str = "c") -> tuple[EmbeddedStore, EmbeddedCollection]:
    store = EmbeddedStore(str(tmp_path / f"{uuid.uuid4().hex}.sqlite3"))
    return store, store.collection(name)


def ids(docs: list[Doc]) -> list[Any]:
    return sorted(doc["_id"] for doc in docs)


# --- values, documents and filters --------------------------------------------------------------

FIELDS = ["a", "b", "c", "s", "s.x", "s.y", "k", "m", "_id"]
RANGE_OPS = ["$gt", "$gte", "$lt", "$lte"]
ABSENT = object()  # a field left out of a document
STRINGS = st.sampled_from(["", "a", "ab", "b", "Z", "é", "😀"])


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


class Model:
    """Strategies for documents and filters over one pool of numbers.

    Few distinct values, so that equalities, ranges and unique keys collide often. The strings
    include non-ASCII code points (UTF-8 byte order must agree with code point order)."""

    def __init__(
        self,
        numbers: st.SearchStrategy[Any],
        array_ints: st.SearchStrategy[int],
        picks: bool = False,
    ) -> None:
        scalars = st.one_of(numbers, STRINGS, st.booleans(), st.none())
        subdocs = st.fixed_dictionaries({}, optional={"x": scalars, "y": scalars})
        array_values = st.one_of(
            scalars,
            st.lists(scalars, max_size=3),
            st.lists(array_ints, min_size=2, max_size=3),  # spread out: multikey ranges
        )
        nested_values = st.one_of(scalars, subdocs, st.lists(subdocs, max_size=3))

        def usually(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
            return st.one_of(values, values, values, st.just(ABSENT))

        self.docs = st.lists(
            st.fixed_dictionaries(
                {
                    "a": usually(array_values),
                    "b": usually(array_values),
                    "c": usually(array_values),
                    "s": usually(nested_values),
                    # k and m hold scalars only: the fields sorts are compared on.
                    "k": usually(scalars),
                    "m": usually(scalars),
                }
            ).map(lambda doc: {key: value for key, value in doc.items() if value is not ABSENT}),
            min_size=2,
            max_size=12,
        )
        self.numbers = numbers
        self.scalars = scalars
        if picks:
            # Operands often stand for a value of the stored documents (see `resolve`), so
            # that filters match something.
            self.scalars = st.one_of(st.builds(Pick, st.integers(0, 99)), scalars)
            self.numbers = st.one_of(st.builds(PickNumber, st.integers(0, 99)), numbers)
        self.array_ints = array_ints
        self.filters = st.recursive(self._leaves(), self._logical, max_leaves=5)

    def ranges(self) -> st.SearchStrategy[dict[str, Any]]:
        """One or two bounds; usually of one type bracket, sometimes of two (then, on an array,
        MongoDB lets different elements satisfy each)."""

        @st.composite
        def draw_range(draw: st.DrawFn) -> dict[str, Any]:
            ops = draw(st.lists(st.sampled_from(RANGE_OPS), min_size=1, max_size=2, unique=True))
            kind = draw(st.sampled_from([self.numbers, self.numbers, self.array_ints, STRINGS]))
            mixed = draw(st.integers(0, 5)) == 0
            return {op: draw(st.one_of(self.numbers, STRINGS) if mixed else kind) for op in ops}

        return draw_range()

    def _leaves(self) -> st.SearchStrategy[Filter]:
        scalars = self.scalars
        basic = st.one_of(
            st.builds(lambda v: {"$eq": v}, scalars),
            st.builds(lambda v: {"$ne": v}, scalars),
            st.builds(lambda vs: {"$in": vs}, st.lists(scalars, max_size=3)),
            st.builds(lambda vs: {"$nin": vs}, st.lists(scalars, max_size=3)),
            self.ranges(),
            self.ranges(),
            st.builds(lambda b: {"$exists": b}, st.booleans()),
            # $all with an empty list has its own test (MongoDB matches nothing).
            st.builds(lambda vs: {"$all": vs}, st.lists(scalars, min_size=1, max_size=2)),
            st.builds(lambda n: {"$size": n}, st.integers(0, 3)),
            st.builds(lambda r: {"$elemMatch": r}, self.ranges()),
            st.builds(
                lambda q: {"$elemMatch": q},
                st.dictionaries(
                    st.sampled_from(["x", "y"]),
                    st.one_of(scalars, self.ranges()),
                    min_size=1,
                    max_size=2,
                ),
            ),
        )
        operators = st.one_of(
            basic,
            basic,
            # Several operators on one field: each must hold (on an array, maybe by different
            # elements).
            st.builds(_merge, st.lists(basic, min_size=2, max_size=3)),
            st.builds(lambda c: {"$not": c}, basic),
        )
        conditions = st.one_of(
            self.plannable(),
            self.plannable(),
            self.plannable(),
            st.lists(scalars, max_size=2),  # whole-array equality
            operators,
            operators,
        )
        # Weighted towards the fields the declared indexes start with.
        fields = st.sampled_from(FIELDS + ["a", "b", "s.x", "k", "m"])
        return st.dictionaries(fields, conditions, min_size=1, max_size=2)

    def plannable(self) -> st.SearchStrategy[Any]:
        """Conditions an index can serve (the planner is what is under test)."""
        return st.one_of(
            self.scalars,  # implicit equality: array contains; None matches missing and null
            st.builds(lambda v: {"$eq": v}, self.scalars),
            st.builds(lambda vs: {"$in": vs}, st.lists(self.scalars, max_size=3)),
            self.ranges(),
            self.ranges(),
        )

    def conjunctions(self) -> st.SearchStrategy[Filter]:
        """Index-served conditions on one to three fields, sometimes one of them refined by a
        condition the index cannot serve (so the plan is not exact), sometimes under $and."""
        refinement = st.one_of(
            st.builds(lambda v: {"$ne": v}, self.scalars),
            st.builds(lambda b: {"$exists": b}, st.booleans()),
            st.builds(lambda n: {"$size": n}, st.integers(0, 3)),
        )

        def refine(conditions: dict[str, Any], extra: tuple[str, Any] | None) -> Filter:
            if extra is None:
                return conditions
            name, condition = extra
            current = conditions.get(name)
            if isinstance(current, dict) and _is_operator_dict(current):
                conditions[name] = {**current, **condition}
            else:
                conditions[name] = condition
            return conditions

        flat = st.builds(
            refine,
            st.dictionaries(st.sampled_from(FIELDS), self.plannable(), min_size=1, max_size=3),
            st.one_of(st.none(), st.tuples(st.sampled_from(FIELDS), refinement)),
        )
        return st.one_of(flat, flat, st.builds(lambda f: {"$and": [f]}, flat))

    def _logical(self, children: st.SearchStrategy[Filter]) -> st.SearchStrategy[Filter]:
        return st.builds(
            lambda op, subs, base: {**base, op: subs},
            st.sampled_from(["$and", "$or", "$nor"]),
            st.lists(children, min_size=1, max_size=3),
            st.one_of(st.just({}), self._leaves()),
        )


# 1.0 equals 1 and -0.0 equals 0 in MongoDB; True/1 and False/0 must never be confused.
MODEL = Model(
    st.one_of(st.integers(-3, 3), st.sampled_from([-2.5, -0.0, 0.5, 1.0, 2.5, 1e300])),
    st.integers(0, 10),
)
# For the comparison with mongomock, which compares with Python's == (True == 1, False == 0):
# numbers that no boolean equals.
REFERENCE_MODEL = Model(
    st.sampled_from([-3, -2, 2, 3, 7, -2.5, 0.5, 2.5, 3.0, 1e300]),
    st.integers(2, 10),
)
DOCS = MODEL.docs


def scalars_in(value: Any) -> list[Any]:
    """Every scalar inside a value (document, array, subdocument)."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in scalars_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in scalars_in(item)]
    return [value]


class Pick(int):
    """In a drawn filter: the n-th (modulo) scalar present in the stored documents."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class PickNumber(Pick):
    """In a drawn filter: the n-th (modulo) number present in the stored documents."""


def path_values(doc: Any, path: str) -> list[Any]:
    """The values a dotted path reaches (through arrays, as MongoDB does), arrays flattened."""
    head, _, rest = path.partition(".")
    if isinstance(doc, list):
        return [value for element in doc for value in path_values(element, path)]
    if not isinstance(doc, dict) or head not in doc:
        return []
    if rest:
        return path_values(doc[head], rest)
    value = doc[head]
    return list(value) if isinstance(value, list) else [value]


def resolve(filter: Any, docs: list[Doc]) -> Any:
    """The filter with its picks replaced by values the stored documents hold at the path the
    condition is on (any of their values if none)."""
    everything = [v for doc in docs for v in scalars_in(doc)]

    def pick(item: Pick, path: str) -> Any:
        here = [v for doc in docs for v in path_values(doc, path) if not isinstance(v, dict | list)]
        pool = here or everything
        if isinstance(item, PickNumber):
            pool = [v for v in pool if isinstance(v, int | float) and not isinstance(v, bool)]
            return pool[item % len(pool)] if pool else int(item) % 4
        return pool[item % len(pool)] if pool else None

    def condition(item: Any, path: str) -> Any:
        if isinstance(item, Pick):
            return pick(item, path)
        if isinstance(item, list):
            return [condition(sub, path) for sub in item]
        if isinstance(item, dict):
            if "$elemMatch" in item and not _is_operator_dict(item["$elemMatch"]):
                return {**item, "$elemMatch": query(item["$elemMatch"], path + ".")}
            return {key: condition(sub, path) for key, sub in item.items()}
        return item

    def query(item: Filter, prefix: str) -> Filter:
        resolved: Filter = {}
        for key, value in item.items():
            if key in ("$and", "$or", "$nor"):
                resolved[key] = [query(sub, prefix) for sub in value]
            else:
                resolved[key] = condition(value, prefix + key)
        return resolved

    if isinstance(filter, list):
        return [query(item, "") for item in filter]
    return query(filter, "")


def _is_operator_dict(condition: Any) -> bool:
    return isinstance(condition, dict) and bool(condition) and next(iter(condition)).startswith("$")


PICKING_MODEL = Model(MODEL.numbers, st.integers(0, 10), picks=True)
PICKING_FILTERS = st.one_of(
    PICKING_MODEL.filters, PICKING_MODEL.conjunctions(), PICKING_MODEL.conjunctions()
)
REFERENCE_PICKING_MODEL = Model(REFERENCE_MODEL.numbers, st.integers(2, 10), picks=True)
REFERENCE_FILTERS = st.one_of(
    REFERENCE_PICKING_MODEL.filters,
    REFERENCE_PICKING_MODEL.conjunctions(),
    REFERENCE_PICKING_MODEL.conjunctions(),
)


# Single and compound indexes over array, scalar and dotted fields.
INDEX_FIELDS = [
    ("a",),
    ("b",),
    ("c",),
    ("s.x",),
    ("k",),
    ("m",),
    ("a", "b"),
    ("b", "a"),
    ("s.x", "s.y"),
    ("k", "m"),
    ("m", "k"),
    ("a", "k"),
    ("k", "a"),
    ("_id", "k"),
]
INDEXES = st.lists(
    st.tuples(st.sampled_from(INDEX_FIELDS), st.sampled_from([1, -1])),
    min_size=2,
    max_size=6,
    unique_by=lambda spec: spec[0],
)


def populate(
    collection: EmbeddedCollection,
    docs: list[Doc],
    indexes: list[tuple[tuple[str, ...], int]],
    index_first: bool,
) -> list[Doc]:
    """Store `docs` (with _id 0..n-1) and declare `indexes`, before or after (backfill) the
    inserts; returns the stored documents."""
    stored = [{"_id": number, **doc} for number, doc in enumerate(docs)]

    def declare() -> None:
        for fields, direction in indexes:
            collection.create_index([(name, direction) for name in fields], False, None)

    if index_first:
        declare()
    if stored:
        assert collection.insert_many([dict(doc) for doc in stored]) == []
    if not index_first:
        declare()
    return stored


# --- MongoDB's sort order on scalars (an independent reimplementation) ---------------------------


def mongo_rank(value: Any) -> tuple[int, Any]:
    """MongoDB's order between scalar values: null/missing < numbers < strings < booleans."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        # MongoDB compares strings by UTF-8 bytes.
        return (2, value.encode())
    raise AssertionError(f"not a scalar sort value: {value!r}")


def sort_key(doc: Doc, sort: list[tuple[str, int]]) -> tuple[tuple[int, Any], ...]:
    return tuple(mongo_rank(doc.get(name)) for name, _ in sort)


def brute_sorted(docs: list[Doc], sort: list[tuple[str, int]]) -> list[Doc]:
    def compare(x: Doc, y: Doc) -> int:
        for name, direction in sort:
            a, b = mongo_rank(x.get(name)), mongo_rank(y.get(name))
            if a != b:
                return direction if a > b else -direction
        return 0

    return sorted(docs, key=functools.cmp_to_key(compare))


# --- 1. the planner never loses (or invents) a document -----------------------------------------


@CENTRAL
@given(
    docs=DOCS,
    indexes=INDEXES,
    index_first=st.booleans(),
    drawn=st.lists(PICKING_FILTERS, min_size=4, max_size=12),
)
def test_find_and_count_equal_brute_force(
    tmp_path: Path,
    docs: list[Doc],
    indexes: list[tuple[tuple[str, ...], int]],
    index_first: bool,
    drawn: list[Filter],
) -> None:
    store, collection = new_collection(tmp_path)
    try:
        stored = populate(collection, docs, indexes, index_first)
        filters = resolve(drawn, stored)
        assert collection.find({}) == stored  # a full scan returns the documents as stored
        for filter in filters:
            expected = [doc["_id"] for doc in stored if matches(doc, filter)]
            found = collection.find(filter)
            assert ids(found) == sorted(expected), filter
            assert len({doc["_id"] for doc in found}) == len(found), "a document twice"
            assert collection.count(filter) == len(expected), filter
            one = collection.find_one(filter)
            assert (one is None) == (not expected)
            assert one is None or one["_id"] in expected
        for key, filter in zip(("a", "s.x", "k"), [{}, *filters], strict=False):
            # distinct: each value once (1 and 1.0 are one value), array elements one by one.
            found = [distinct_form(v) for v in collection.distinct(key, filter)]
            wanted = {
                distinct_form(value)
                for doc in stored
                if matches(doc, filter)
                for value in path_values(doc, key)
            }
            assert sorted(found) == sorted(wanted), (key, filter)
    finally:
        store.close()


def distinct_form(value: Any) -> str:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    # -0.0 + 0.0 is 0.0: MongoDB's -0.0 equals 0.
    return repr((type(value).__name__, value) if not is_number else ("number", float(value) + 0.0))


SORTS = st.lists(
    st.tuples(st.sampled_from(["k", "m", "_id"]), st.sampled_from([1, -1])),
    min_size=1,
    max_size=2,
    unique_by=lambda term: term[0],
)


@CENTRAL
@given(
    docs=DOCS,
    indexes=INDEXES,
    index_first=st.booleans(),
    sort=SORTS,
    limit=st.integers(0, 5),
    drawn=PICKING_FILTERS,
)
def test_sorted_limited_find_equals_brute_force(
    tmp_path: Path,
    docs: list[Doc],
    indexes: list[tuple[tuple[str, ...], int]],
    index_first: bool,
    sort: list[tuple[str, int]],
    limit: int,
    drawn: Filter,
) -> None:
    store, collection = new_collection(tmp_path)
    try:
        stored = populate(collection, docs, indexes, index_first)
        filter = resolve(drawn, stored)
        expected = brute_sorted([doc for doc in stored if matches(doc, filter)], sort)
        if limit:
            expected = expected[:limit]
        found = collection.find(filter, sort=sort, limit=limit)
        # Order among ties is undefined: compare the sequence of sort keys, and check that every
        # document returned matches (and appears once).
        assert [sort_key(doc, sort) for doc in found] == [sort_key(doc, sort) for doc in expected]
        assert all(matches(doc, filter) for doc in found)
        assert len({doc["_id"] for doc in found}) == len(found)
    finally:
        store.close()


def test_multikey_range_bounds_may_be_met_by_different_elements(tmp_path: Path) -> None:
    # MongoDB: {a: {$gt: 5, $lt: 8}} matches a: [1, 10] (10 > 5, 1 < 8), but not a: [1, 2].
    store, collection = new_collection(tmp_path)
    collection.create_index([("a", 1)], False, None)
    collection.create_index([("s.x", 1), ("k", 1)], False, None)
    collection.insert_many(
        [
            {"_id": 1, "a": [1, 10], "s": [{"x": 1}, {"x": 10}], "k": 0},
            {"_id": 2, "a": [1, 2], "s": [{"x": 1}, {"x": 2}], "k": 0},
            {"_id": 3, "a": 6, "s": {"x": 6}, "k": 0},
        ]
    )
    for filter in (
        {"a": {"$gt": 5, "$lt": 8}},
        {"s.x": {"$gt": 5, "$lt": 8}},
        {"s.x": {"$gt": 5, "$lt": 8}, "k": 0},
        {"$and": [{"a": {"$gt": 5}}, {"a": {"$lt": 8}}]},
    ):
        assert ids(collection.find(filter)) == [1, 3], filter
        assert collection.count(filter) == 2, filter
    # ... whereas $elemMatch needs one element to satisfy both bounds.
    assert ids(collection.find({"a": {"$elemMatch": {"$gt": 5, "$lt": 8}}})) == []
    assert ids(collection.find({"s": {"$elemMatch": {"x": {"$gt": 5, "$lt": 8}}}})) == []
    store.close()


def test_multikey_document_is_returned_once(tmp_path: Path) -> None:
    # Several entries of one document (one per array element) can satisfy the index constraint;
    # the document is still one match: found once, counted once, updated and deleted once.
    store, collection = new_collection(tmp_path)
    collection.create_index([("a", 1)], False, None)
    collection.insert_many([{"_id": 1, "a": [1, 2]}, {"_id": 2, "a": 7}])
    for filter in ({"a": {"$lte": 2}}, {"a": {"$in": [1, 2]}}, {"a": {"$gt": 0, "$lt": 3}}):
        assert ids(collection.find(filter)) == [1], filter
        assert collection.count(filter) == 1, filter
    # update_many must not apply the update twice (the second pass would re-insert entries).
    assert collection.update({"a": {"$gte": 0, "$lte": 2}}, {"$set": {"a": [3]}}, many=True)[0] == 1
    assert ids(collection.find({"a": 3})) == [1]
    collection.update({"_id": 1}, {"$set": {"a": [4, 5]}})
    assert collection.delete_many({"a": {"$gte": 4, "$lte": 6}}) == 1
    assert ids(collection.find({})) == [2]
    store.close()


@pytest.mark.parametrize("indexed", [False, True])
def test_two_bounds_on_the_same_side(tmp_path: Path, indexed: bool) -> None:
    # Both bounds hold: {$gt: 0, $gte: 0} is "> 0", {$gt: 5, $gte: 0} is "> 5", and so on.
    store, collection = new_collection(tmp_path)
    if indexed:
        collection.create_index([("a", 1)], False, None)
    collection.insert_many([{"_id": n, "a": n} for n in range(8)])
    assert ids(collection.find({"a": {"$gt": 0, "$gte": 0}})) == [1, 2, 3, 4, 5, 6, 7]
    assert ids(collection.find({"a": {"$gt": 5, "$gte": 0}})) == [6, 7]
    assert ids(collection.find({"a": {"$gte": 5, "$gt": 6}})) == [7]
    assert ids(collection.find({"a": {"$lt": 3, "$lte": 5}})) == [0, 1, 2]
    assert ids(collection.find({"a": {"$lte": 1, "$lt": 5}})) == [0, 1]
    assert collection.count({"a": {"$gt": 5, "$gte": 0}}) == 2
    store.close()


def test_ordered_streaming_plan_with_many_entries(tmp_path: Path) -> None:
    # Past the planner's probe cap (2000 entries per plan) it streams an ordered plan and stops at
    # the limit; the post-filter must still apply and the order must be the requested one.
    store, collection = new_collection(tmp_path)
    collection.create_index([("k", 1)], False, None)
    collection.create_index([("m", 1), ("k", 1)], False, None)
    docs = [{"_id": n, "k": (n * 7919) % 2503, "m": n % 3, "odd": n % 2} for n in range(2600)]
    collection.insert_many([dict(doc) for doc in docs])
    for filter, sort in (
        ({"k": {"$gte": 0}, "m": {"$gte": 0}, "odd": 1}, [("k", 1)]),
        ({"k": {"$gte": 0}, "m": {"$gte": 0}, "odd": 0}, [("k", -1)]),
        ({"m": {"$gte": 1}, "k": {"$gte": 0}, "odd": 1}, [("m", -1), ("k", 1)]),
    ):
        expected = brute_sorted([doc for doc in docs if matches(doc, filter)], sort)[:7]
        found = collection.find(filter, sort=sort, limit=7)
        assert [sort_key(d, sort) for d in found] == [sort_key(d, sort) for d in expected]
        assert all(matches(doc, filter) for doc in found)
    store.close()


def test_many_entries_everywhere_the_plan_seeks_on_a_value_not_a_boolean(tmp_path: Path) -> None:
    # Both indexes give the requested order and both match more entries than the planner
    # counts; the one that seeks on `voided: false` would walk every document, the one that
    # seeks on the term only those that have it. (Which plan serves the query is what this
    # checks; the answer is the same either way, and is checked too.)
    store, collection = new_collection(tmp_path)
    collection.create_index([("voided", 1), ("key", -1)], False, None)
    collection.create_index([("terms", 1), ("key", -1)], False, None)
    docs = [
        {"_id": n, "voided": False, "key": n, "terms": ["common", f"rare{n % 1000}"]}
        for n in range(2500)
    ]
    collection.insert_many([dict(doc) for doc in docs])
    filter = {"voided": False, "terms": "common"}
    sort = [("key", -1)]
    plan = collection._choose(filter, sort, 5)
    assert plan is not None and plan.index.fields == ["terms", "key"]
    assert [doc["_id"] for doc in collection.find(filter, sort=sort, limit=5)] == list(
        range(2499, 2494, -1)
    )
    store.close()


def test_a_sorted_limited_query_with_an_exact_plan_in_its_order_counts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shape of a `since` GET: the (store, voided, key) index seeks on all three conditions
    # and gives the order; the (store, terms, key) index gives the order too but seeks on the
    # store alone, and counting it walks every entry of the store to find the few newer ones.
    # The exact plan in order reads `limit` entries: it is chosen without counting anything.
    store, collection = new_collection(tmp_path)
    collection.create_index([("store", 1), ("voided", 1), ("key", -1)], False, None)
    collection.create_index([("store", 1), ("terms", 1), ("key", -1)], False, None)
    docs = [
        {"_id": n, "store": "s", "voided": n % 5 == 0, "key": n, "terms": [f"t{n % 7}", "all"]}
        for n in range(3000)
    ]
    collection.insert_many([dict(doc) for doc in docs])

    def no_counting(plan: object, cap: int) -> int:
        raise AssertionError("counted")

    monkeypatch.setattr(collection, "_count", no_counting)
    sort = [("key", -1)]
    for since in (2990, 1500, -1):
        filter = {"$and": [{"store": "s", "voided": False}, {"key": {"$gt": since}}]}
        plan = collection._choose(filter, sort, 5)
        assert plan is not None and plan.index.fields == ["store", "voided", "key"]
        expected = [d["_id"] for d in docs if not d["voided"] and d["key"] > since][::-1][:5]
        assert [doc["_id"] for doc in collection.find(filter, sort=sort, limit=5)] == expected
    store.close()


def test_ids_looked_up_through_a_unique_index_still_meet_the_other_conditions(
    tmp_path: Path,
) -> None:
    # A list of ids on a unique index is chosen without counting, and only the conditions that
    # seek does not guarantee are checked on the candidates: the `voided` and `kind` conditions
    # must still exclude documents, and the `id` list must not be re-checked wrongly.
    store, collection = new_collection(tmp_path)
    collection.create_index([("store", 1), ("id", 1)], True, None)
    collection.create_index([("store", 1), ("voided", 1)], False, None)
    docs = [
        {"_id": n, "store": "s", "id": f"i{n}", "voided": n % 3 == 0, "kind": n % 2}
        for n in range(3000)
    ]
    collection.insert_many([dict(doc) for doc in docs])
    wanted = [f"i{n}" for n in range(0, 60)] + ["missing"]
    filter = {"store": "s", "id": {"$in": wanted}, "voided": {"$in": [False]}, "kind": 1}
    plan = collection._choose(filter, None, 0)
    assert plan is not None and plan.index.fields == ["store", "id"]
    assert plan.residual == {"$and": [{"voided": {"$in": [False]}}, {"kind": 1}]}
    expected = sorted(doc["_id"] for doc in docs if matches(doc, filter))
    assert expected and sorted(doc["_id"] for doc in collection.find(filter)) == expected
    assert collection.count(filter) == len(expected)
    store.close()


# The shape of the LRS's statement queries: equality on store (and voided), a range on
# stored_key, a multikey activity list, sorted on (stored_key, id) in either direction with a
# limit, through compound indexes that give that order.
STATEMENT_DOCS = st.lists(
    st.fixed_dictionaries(
        {
            "store": st.sampled_from(["s1", "s2"]),
            "voided": st.booleans(),
            "stored_key": st.integers(0, 15),
            "id": st.sampled_from(["a", "b", "c", "d"]),
        },
        optional={"activities": st.lists(st.sampled_from(["x", "y", "z"]), max_size=3)},
    ),
    min_size=1,
    max_size=40,
)


@PROPERTY
@given(
    docs=STATEMENT_DOCS,
    voided=st.sampled_from([None, False, True]),
    bound=st.one_of(
        st.none(), st.tuples(st.sampled_from(RANGE_OPS), st.integers(0, 15)).map(lambda t: [t])
    ),
    activity=st.sampled_from([None, "x", "y"]),
    direction=st.sampled_from([1, -1]),
    limit=st.integers(0, 6),
)
def test_statement_shaped_queries(
    tmp_path: Path,
    docs: list[Doc],
    voided: bool | None,
    bound: list[tuple[str, int]] | None,
    activity: str | None,
    direction: int,
    limit: int,
) -> None:
    store, collection = new_collection(tmp_path)
    try:
        collection.create_index(
            [("store", 1), ("voided", 1), ("stored_key", -1), ("id", -1)], False, None
        )
        collection.create_index([("store", 1), ("activities", 1)], False, None)
        collection.create_index([("store", 1), ("stored_key", 1)], False, None)
        stored = [{"_id": number, **doc} for number, doc in enumerate(docs)]
        collection.insert_many([dict(doc) for doc in stored])
        filter: Filter = {"store": "s1"}
        if voided is not None:
            filter["voided"] = voided
        if bound:
            filter["stored_key"] = dict(bound)
        if activity:
            filter["activities"] = activity
        sort = [("stored_key", direction), ("id", direction)]
        expected = brute_sorted([doc for doc in stored if matches(doc, filter)], sort)
        expected = expected[:limit] if limit else expected
        found = collection.find(filter, sort=sort, limit=limit)
        assert [sort_key(d, sort) for d in found] == [sort_key(d, sort) for d in expected], filter
        assert all(matches(doc, filter) for doc in found)
        assert collection.count(filter) == len([d for d in stored if matches(d, filter)])
    finally:
        store.close()


# --- 2. matches() against an independent reference ----------------------------------------------


def mongomock_collection(docs: list[Doc]) -> Any:
    collection = mongomock.MongoClient().db.c
    if docs:
        collection.insert_many([dict(doc) for doc in docs])
    return collection


# Cases where mongomock 4.3 itself departs from MongoDB; the embedded store must follow MongoDB,
# so these conditions are not compared with mongomock. They stay covered by the brute force
# property (planner consistency) and, where MongoDB's answer is certain, by targeted tests.
def _mongomock_diverges_on(field: str, condition: Any) -> bool:
    dotted = "." in field
    if not _is_operator_dict(condition):
        # mongomock never matches null on a dotted path whose parent is not a subdocument
        # (MongoDB does: {"s.x": null} matches {s: 5}, the path is missing there).
        return dotted and (condition is None or (isinstance(condition, list) and None in condition))
    for op, operand in condition.items():
        if op == "$size":
            return True  # mongomock: {$size: 1} matches any non-array value
        if op == "$all" and None in operand:
            return True  # mongomock: {$all: [null]} does not match a missing field
        if dotted and op in ("$exists", "$not"):
            # mongomock: {"s.x": {$exists: false}} matches s: [{x: 1}, {}], and $not on a path
            # through a scalar does not match (MongoDB: the path is missing, so $not holds).
            return True
        if dotted and op in ("$eq", "$ne") and operand is None:
            return True
        if dotted and op in ("$in", "$nin", "$all") and None in operand:
            return True
        if op == "$not" and _mongomock_diverges_on(field, operand):
            return True
    return False


def mongomock_diverges(filter: Filter) -> bool:
    for key, condition in filter.items():
        if key in ("$and", "$or", "$nor"):
            if any(mongomock_diverges(sub) for sub in condition):
                return True
        elif _mongomock_diverges_on(key, condition):
            return True
    return False


@PROPERTY
@given(docs=REFERENCE_MODEL.docs, drawn=st.lists(REFERENCE_FILTERS, min_size=2, max_size=8))
def test_matches_agrees_with_mongomock(docs: list[Doc], drawn: list[Filter]) -> None:
    # _id from 2: no _id equals a boolean for mongomock either.
    stored = [{"_id": number + 2, **doc} for number, doc in enumerate(docs)]
    reference = mongomock_collection(stored)
    for filter in resolve(drawn, stored):
        if mongomock_diverges(filter):
            continue
        expected = sorted(doc["_id"] for doc in reference.find(filter))
        assert sorted(doc["_id"] for doc in stored if matches(doc, filter)) == expected, filter


@PROPERTY
@given(docs=REFERENCE_MODEL.docs, drawn=st.lists(REFERENCE_FILTERS, min_size=2, max_size=8))
def test_a_filter_taken_apart_once_matches_as_the_filter(
    docs: list[Doc], drawn: list[Filter]
) -> None:
    """`matcher(filter)`, built once per query, decides every document as `matches` does."""
    stored = [{"_id": number + 2, **doc} for number, doc in enumerate(docs)]
    for filter in resolve(drawn, stored):
        check = matcher(filter)
        assert [check(doc) for doc in stored] == [matches(doc, filter) for doc in stored], filter


@pytest.mark.parametrize(
    ("value", "condition", "expected"),
    [
        (1.0, 1, True),  # numbers equal by value across types
        ([2, 1.0], 1, True),
        (True, 1, False),  # a boolean is never a number
        ([True], 1, False),
        (0, False, False),
        ([0, False], False, True),
        ("x", "x", True),
        (["y", "x"], "x", True),
        ([["x"]], "x", False),  # an element that is itself an array is not compared inside
        ({"b": "x"}, "x", False),
        (None, "x", False),
    ],
)
def test_plain_equalities_follow_mongodb(value: Any, condition: Any, expected: bool) -> None:
    """The shortcut for `{field: str | bool | int}` (the residual filters of GETs and of the
    derivation's reads) keeps MongoDB's equality: what `{field: {$eq: ...}}` decides."""
    assert matches({"a": value}, {"a": condition}) is expected
    assert matches({"a": value}, {"a": {"$eq": condition}}) is expected
    assert matches({}, {"a": condition}) is False


_PLAIN = st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from(["x", "y", ""]))
_VALUES = st.recursive(
    st.one_of(_PLAIN, st.floats(-3, 3), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.just("b"), inner)),
    max_leaves=6,
)


@PROPERTY
@given(value=_VALUES, condition=_PLAIN)
def test_plain_equality_shortcut_agrees_with_eq(value: Any, condition: Any) -> None:
    assert matches({"a": value}, {"a": condition}) == matches(
        {"a": value}, {"a": {"$eq": condition}}
    )


# --- 3. updates, upserts and deletes against mongomock; indexes stay in step --------------------

SCALAR_UPDATES = REFERENCE_MODEL.scalars
SET_VALUES = st.one_of(SCALAR_UPDATES, st.lists(SCALAR_UPDATES, max_size=3))
ITEMS = st.one_of(
    SCALAR_UPDATES,
    st.builds(
        lambda each: {"$each": each},
        # Distinct items: mongomock's $addToSet adds a repeated $each item twice (MongoDB once).
        st.lists(SCALAR_UPDATES, max_size=3, unique_by=lambda v: repr(strict(equal_form(v)))),
    ),
)


def equal_form(value: Any) -> Any:
    """Numbers as floats: MongoDB's equality between 3 and 3.0."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) + 0.0 if is_number else value


def _update_document(draw: st.DrawFn) -> dict[str, Any]:
    """Update operators on disjoint paths (MongoDB refuses conflicting paths)."""
    update: dict[str, Any] = {}
    if draw(st.booleans()):
        update["$set"] = draw(
            st.dictionaries(st.sampled_from(["a", "b", "t.x"]), SET_VALUES, min_size=1)
        )
    if draw(st.booleans()):
        update["$unset"] = draw(
            st.dictionaries(st.sampled_from(["c", "k", "s"]), st.just(""), min_size=1)
        )
    if draw(st.booleans()):
        update["$inc"] = {"n": draw(st.sampled_from([1, -2, 0.5]))}
    if draw(st.booleans()):
        update[draw(st.sampled_from(["$push", "$addToSet"]))] = {"tags": draw(ITEMS)}
    if draw(st.booleans()):
        update["$setOnInsert"] = {"m": draw(SCALAR_UPDATES)}
    return update or {"$set": {"a": draw(SCALAR_UPDATES)}}


# Upsert filters: equality on an _id (so both stores insert the same _id) plus conditions the
# seed takes (equality, $eq) or leaves out (ranges, $in with several values).
UPSERT_CONDITIONS = st.dictionaries(
    st.sampled_from(["a", "b", "k"]),
    st.one_of(
        SCALAR_UPDATES,
        st.builds(lambda v: {"$eq": v}, SCALAR_UPDATES),
        st.builds(lambda v: {"$gte": v}, REFERENCE_MODEL.numbers),
        st.builds(lambda v: {"$in": [v, "zz"]}, SCALAR_UPDATES),
    ),
    max_size=2,
)


@st.composite
def operations(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["update", "update", "upsert", "replace", "delete"]))
    if kind == "update":
        return ("update", draw(REFERENCE_FILTERS), _update_document(draw), draw(st.booleans()))
    if kind == "upsert":
        # (Not under $and: mongomock does not seed from it; the seed test below covers it.)
        filter = {"_id": draw(st.integers(20, 25)), **draw(UPSERT_CONDITIONS)}
        return ("upsert", filter, _update_document(draw))
    if kind == "replace":
        replacement = draw(REFERENCE_MODEL.docs.map(lambda docs: docs[0]))
        return ("replace", draw(REFERENCE_FILTERS), replacement)
    return ("delete", draw(REFERENCE_FILTERS))


def strict(value: Any) -> Any:
    """A comparable form that tells 1 from 1.0 and True (MongoDB keeps int/double apart)."""
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict(item) for item in value]
    return (type(value).__name__, value)


UPDATE_INDEXES = st.lists(
    st.sampled_from(
        [("a",), ("b",), ("k",), ("tags",), ("n",), ("t.x",), ("a", "tags"), ("n", "k"), ("s.x",)]
    ),
    max_size=4,
    unique=True,
)


def check_index_consistency(
    collection: EmbeddedCollection, probes: dict[str, list[Any]], filters: list[Filter]
) -> None:
    """Every value ever stored in a probed field, looked up by equality (exact index plans) and
    by range (multikey bounds), and random filters: the same as brute force over a full scan."""
    everything = collection.find({})
    queries: list[Filter] = list(filters)
    for name, values in probes.items():
        distinct = {repr((type(v), v)): v for v in values if not isinstance(v, dict | list)}
        for value in distinct.values():
            queries.append({name: value})
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            queries.append({name: {"$gte": min(numbers), "$lte": min(numbers) + 3}})
    for filter in queries:
        expected = ids([doc for doc in everything if matches(doc, filter)])
        assert ids(collection.find(filter)) == expected, filter
        assert collection.count(filter) == len(expected), filter


def apply_step(collection: EmbeddedCollection, reference: Any, step: tuple[Any, ...]) -> Any:
    """Apply one operation to the store and to mongomock, compare the counts they report, and
    return the document the store's update() returned (None for a delete)."""
    kind, filter, *rest = step
    if kind == "update":
        update, many = rest
        matched, after = collection.update(filter, update, many=many)
        expected = (reference.update_many if many else reference.update_one)(filter, update)
        assert matched == expected.matched_count, step
        event(f"update matched {min(matched, 2)}")
        return after
    if kind == "upsert":
        (update,) = rest
        try:
            expected = reference.update_one(filter, update, upsert=True)
        except DuplicateKeyError:
            # The filter misses the document that has its _id: the insert is refused.
            with pytest.raises(DuplicateKeyError):
                collection.update(filter, update, upsert=True)
            event("upsert refused")
            return None
        matched, after = collection.update(filter, update, upsert=True)
        assert matched == expected.matched_count, step
        assert after is not None
        if expected.upserted_id is not None:
            assert after["_id"] == expected.upserted_id
        event(f"upsert matched {matched}")
        return after
    if kind == "replace":
        (replacement,) = rest
        matched, after = collection.update(filter, dict(replacement))
        assert matched == reference.replace_one(filter, replacement).matched_count, step
        event(f"replace matched {matched}")
        return after
    deleted = collection.delete_many(filter)
    assert deleted == reference.delete_many(filter).deleted_count, step
    event(f"delete removed {min(deleted, 2)}")
    return None


@PROPERTY
@given(
    docs=REFERENCE_MODEL.docs,
    indexes=UPDATE_INDEXES,
    steps=st.lists(operations(), min_size=1, max_size=8),
    queries=st.lists(REFERENCE_FILTERS, max_size=2),
)
def test_update_sequences_agree_with_mongomock(
    tmp_path: Path,
    docs: list[Doc],
    indexes: list[tuple[str, ...]],
    steps: list[tuple[Any, ...]],
    queries: list[Filter],
) -> None:
    store, collection = new_collection(tmp_path)
    stored = [{"_id": number + 2, **doc} for number, doc in enumerate(docs)]
    reference = mongomock_collection(stored)
    try:
        for fields in indexes:
            collection.create_index([(name, 1) for name in fields], False, None)
        if stored:
            collection.insert_many([dict(doc) for doc in stored])
        # Values ever stored in an indexed field: an index entry left behind by an update or a
        # delete would show in an exact (index-only) plan for one of them.
        probed = sorted({name for fields in indexes for name in fields})
        probes: dict[str, list[Any]] = {name: [] for name in probed}
        state = stored
        for drawn in steps:
            # Picks stand for values of the documents as they are now (so that filters match).
            step = (drawn[0], resolve(drawn[1], state), *drawn[2:])
            if mongomock_diverges(step[1]) or (step[0] == "replace" and "_id" in step[1]):
                continue  # (mongomock copies an _id condition into a replacement, and fails)
            after = apply_step(collection, reference, step)
            state = sorted(collection.find({}), key=lambda doc: doc["_id"])
            assert strict(state) == strict(sorted(reference.find(), key=lambda doc: doc["_id"]))
            if after is not None:
                # The document update() returns is the one stored now.
                assert strict(after) == strict(next(d for d in state if d["_id"] == after["_id"]))
            for doc in state:
                for name in probed:
                    probes[name].extend(path_values(doc, name))
            check_index_consistency(collection, probes, resolve(queries, state))
    finally:
        store.close()


def test_upsert_seeds_the_new_document_from_equality_conditions(tmp_path: Path) -> None:
    store, collection = new_collection(tmp_path)
    matched, new = collection.update(
        {
            "_id": 7,
            "a": 1,
            "t.x": "deep",
            "b": {"$eq": "eq"},
            "$and": [{"c": 3}],
            "k": {"$gt": 1},  # a range seeds nothing
            "$or": [{"m": 1}, {"m": 2}],  # neither does an $or of several clauses
        },
        {"$set": {"n": 1}, "$setOnInsert": {"created": True}},
        upsert=True,
    )
    expected = {"_id": 7, "a": 1, "t": {"x": "deep"}, "b": "eq", "c": 3, "n": 1, "created": True}
    assert matched == 0 and new == expected
    assert collection.find({}) == [expected]
    # An update that matches does not apply $setOnInsert.
    matched, after = collection.update({"_id": 7}, {"$setOnInsert": {"x": 1}, "$inc": {"n": 2}})
    assert matched == 1 and after is not None and after["n"] == 3 and "x" not in after
    store.close()


@pytest.mark.parametrize("replacement", [{"v": 1}, {"_id": "X", "v": 1}])
def test_replacement_upsert_takes_id_from_filter(tmp_path: Path, replacement: Doc) -> None:
    # MongoDB: replace_one({_id: "X"}, doc, upsert=True) inserts a document with _id "X" (from
    # the replacement when it has one, else from the filter's equality). The LRS relies on it for
    # dead letters: lrs/storage/federation.py replaces {"_id": letter["_id"]} with the letter.
    store, collection = new_collection(tmp_path)
    matched, new = collection.update({"_id": "X"}, dict(replacement), upsert=True)
    assert matched == 0 and new is not None
    assert new["_id"] == "X"
    assert collection.find({}) == [{"_id": "X", "v": 1}]
    # A second upsert with the same filter replaces that document instead of adding another.
    collection.update({"_id": "X"}, {**replacement, "v": 2}, upsert=True)
    assert collection.find({}) == [{"_id": "X", "v": 2}]
    store.close()


# --- 4. unique indexes ---------------------------------------------------------------------------


def unique_keys(doc: Doc, fields: tuple[str, ...]) -> set[tuple[Any, ...]]:
    """The keys a document has in a unique index, modelled on MongoDB: missing and null are one
    key, numbers compare by value, booleans are their own type, each array element is a key (an
    empty array one key of its own)."""

    def normal(value: Any) -> tuple[Any, ...]:
        if value is None:
            return ("null",)
        if isinstance(value, bool):
            return ("bool", value)
        if isinstance(value, int | float):
            return ("number", float(value))
        return ("string", value)

    per_field: list[set[tuple[Any, ...]]] = []
    for name in fields:
        value = doc.get(name)
        if isinstance(value, list):
            per_field.append({normal(v) for v in value} if value else {("empty array",)})
        else:
            per_field.append({normal(value)})
    keys: set[tuple[Any, ...]] = {()}
    for options in per_field:
        keys = {key + (option,) for key in keys for option in options}
    return keys


UNIQUE_VALUES = st.one_of(
    st.sampled_from([0, 1, 1.0, 2, "1", True, None]),
    st.lists(st.sampled_from([0, 1, 2, "1"]), max_size=2),
)
UNIQUE_DOCS = st.lists(
    st.fixed_dictionaries(
        {"_id": st.integers(0, 6)}, optional={"u": UNIQUE_VALUES, "v": st.sampled_from([0, 1])}
    ),
    max_size=8,
)


@PROPERTY
@given(
    existing=UNIQUE_DOCS,
    batch=UNIQUE_DOCS,
    fields=st.sampled_from([("u",), ("u", "v")]),
    index_first=st.booleans(),
)
def test_insert_many_refuses_duplicates_by_position(
    tmp_path: Path,
    existing: list[Doc],
    batch: list[Doc],
    fields: tuple[str, ...],
    index_first: bool,
) -> None:
    store, collection = new_collection(tmp_path)
    try:
        # What a unique index accepts, one document at a time (_id is always unique).
        taken: dict[tuple[str, ...], set[tuple[Any, ...]]] = {("_id",): set(), fields: set()}

        def accepted(doc: Doc) -> bool:
            keys = {index: unique_keys(doc, index) for index in taken}
            if any(keys[index] & taken[index] for index in taken):
                return False
            for index in taken:
                taken[index] |= keys[index]
            return True

        kept = [doc for doc in existing if accepted(doc)]
        if index_first:
            collection.create_index([(name, 1) for name in fields], True, "unique")
        collection.insert_many([dict(doc) for doc in kept])
        if not index_first:
            collection.create_index([(name, 1) for name in fields], True, "unique")

        expected_refused = [position for position, doc in enumerate(batch) if not accepted(doc)]
        assert collection.insert_many([dict(doc) for doc in batch]) == expected_refused
        refused = set(expected_refused)
        stored = kept + [doc for position, doc in enumerate(batch) if position not in refused]
        assert sorted(collection.find({}), key=lambda d: d["_id"]) == sorted(
            stored, key=lambda d: d["_id"]
        )
        # The refused documents left no index entries behind.
        probes = {
            name: [v for doc in existing + batch for v in path_values(doc, name)] for name in fields
        }
        check_index_consistency(collection, probes, [])
    finally:
        store.close()


def _unique_collection(tmp_path: Path) -> tuple[EmbeddedStore, EmbeddedCollection]:
    store, collection = new_collection(tmp_path)
    collection.create_index([("a", 1)], False, None)
    collection.create_index([("u", 1)], True, "u_unique")
    collection.insert_many(
        [
            {"_id": 1, "u": 1, "g": 1, "a": 1},
            {"_id": 2, "u": 2, "g": 1, "a": 2},
            {"_id": 3, "u": [3, 4], "g": 1, "a": 3},
        ]
    )
    return store, collection


@pytest.mark.parametrize(
    ("filter", "update", "options"),
    [
        ({"_id": 2}, {"$set": {"u": 1}}, {}),
        ({"_id": 2}, {"$set": {"u": 1.0, "a": [7, 8]}}, {}),  # 1.0 equals 1
        ({"_id": 1}, {"$set": {"u": [9, 4]}}, {}),  # an array element collides
        ({"_id": 2}, {"u": 4, "a": 9}, {}),  # a replacement
        # The 2nd document collides. (MongoDB's updateMany would keep the 1st one's change; this
        # store runs the whole update in one transaction, and promises that nothing changes.)
        ({"g": 1}, {"$set": {"u": 5, "a": [5, 6]}}, {"many": True}),
        ({"_id": 9}, {"$set": {"u": 2, "a": [1, 10]}}, {"upsert": True}),
        ({"_id": 9}, {"u": 3}, {"upsert": True}),
    ],
)
def test_update_creating_duplicate_raises_and_changes_nothing(
    tmp_path: Path, filter: Filter, update: dict[str, Any], options: dict[str, Any]
) -> None:
    store, collection = _unique_collection(tmp_path)
    before = collection.find({})
    with pytest.raises(DuplicateKeyError):
        collection.update(filter, update, **options)
    assert collection.find({}) == before
    # The index entries are those of the unchanged documents.
    probes = {"u": [1, 1.0, 2, 3, 4, 5, 9], "a": [1, 2, 3, 5, 6, 7, 8, 9, 10]}
    check_index_consistency(collection, probes, [{"a": {"$gt": 4, "$lt": 6}}])
    # ... and the collection still takes writes.
    assert collection.insert_many([{"_id": 4, "u": 5}, {"_id": 5, "u": 5}]) == [1]
    store.close()


def test_missing_unique_field_counts_as_null(tmp_path: Path) -> None:
    # A (non-sparse) unique index holds null for a missing field: one such document only.
    store, collection = new_collection(tmp_path)
    collection.create_index([("u", 1)], True, None)
    assert collection.insert_many([{"_id": 1}, {"_id": 2, "u": None}, {"_id": 3, "u": 0}]) == [1]
    # Within one document an array may repeat a value.
    assert collection.insert_many([{"_id": 4, "u": [5, 5]}, {"_id": 5, "u": [6, 5]}]) == [1]
    assert ids(collection.find({"u": None})) == [1]
    store.close()


def test_failed_unique_index_creation_leaves_collection_usable(tmp_path: Path) -> None:
    # MongoDB: createIndex(unique) over duplicate data fails and the collection is unaffected.
    store, collection = new_collection(tmp_path)
    collection.insert_many([{"_id": 1, "a": 1}, {"_id": 2, "a": 1}])
    with pytest.raises(DuplicateKeyError):
        collection.create_index([("a", 1)], True, None)
    assert ids(collection.find({"a": 1})) == [1, 2]
    assert collection.insert_many([{"_id": 3, "a": 1}]) == []
    assert collection.count({"a": 1}) == 3
    store.close()


# --- 5. persistence, and two stores on one file --------------------------------------------------


def test_data_and_indexes_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "lrs.sqlite3")
    store = EmbeddedStore(path)
    collection = store.collection("c")
    collection.create_index([("u", 1)], True, None)
    collection.create_index([("a", 1), ("k", 1)], False, None)
    collection.insert_many([{"_id": n, "u": n, "a": n, "k": n % 2} for n in range(5)])
    collection.update({"_id": 1}, {"$set": {"a": [1, 10]}})
    collection.delete_many({"_id": 4})
    store.collection("other").insert_many([{"_id": "x"}])
    store.close()

    store = EmbeddedStore(path)
    collection = store.collection("c")
    assert ids(collection.find({})) == [0, 1, 2, 3]
    assert store.collection("other").find({}) == [{"_id": "x"}]
    assert collection.insert_many([{"_id": 9, "u": 2}, {"_id": 0}]) == [0, 1]  # unique kept
    assert ids(collection.find({"a": {"$gt": 5, "$lt": 8}})) == [1]  # multikey kept
    assert ids(collection.find({"a": 10, "k": 1})) == [1]
    store.close()


def test_index_created_through_another_store_is_maintained(tmp_path: Path) -> None:
    path = str(tmp_path / "lrs.sqlite3")
    server, cli = EmbeddedStore(path), EmbeddedStore(path)
    served = server.collection("c")
    served.insert_many([{"_id": 1, "a": 1}])
    assert ids(served.find({"a": 1})) == [1]  # the server has loaded its metadata
    cli.collection("c").create_index([("a", 1)], False, None)
    cli.collection("c").create_index([("u", 1)], True, None)
    # The server's writes go to the new indexes too ...
    assert served.insert_many([{"_id": 2, "a": 5, "u": 1}, {"_id": 3, "u": 1}]) == [1]
    served.update({"_id": 1}, {"$set": {"a": 7}})
    # ... so that queries through them, from either side, find the documents.
    for collection in (served, cli.collection("c")):
        assert ids(collection.find({"a": 5})) == [2]
        assert ids(collection.find({"a": 7})) == [1]
        assert collection.count({"a": {"$gte": 5}}) == 2
        assert ids(collection.find({"u": 1})) == [2]
    server.close()
    cli.close()


def test_multikey_marked_through_another_store_is_seen(tmp_path: Path) -> None:
    path = str(tmp_path / "lrs.sqlite3")
    server, cli = EmbeddedStore(path), EmbeddedStore(path)
    served = server.collection("c")
    served.create_index([("a", 1)], False, None)
    served.insert_many([{"_id": 1, "a": 6}, {"_id": 2, "a": 20}])
    assert ids(served.find({"a": {"$gt": 5, "$lt": 8}})) == [1]  # planned as not multikey
    cli.collection("c").insert_many([{"_id": 3, "a": [1, 10]}])
    assert ids(served.find({"a": {"$gt": 5, "$lt": 8}})) == [1, 3]
    assert served.count({"a": {"$gt": 5, "$lt": 8}}) == 2
    found = served.find({"a": {"$gte": 0}}, sort=[("a", 1)], limit=1)
    assert ids(found) == [3]  # sorts by its smallest element, 1
    server.close()
    cli.close()


def test_another_stores_data_commits_keep_the_metadata_and_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process writing all the time (the derivation process, `--workers`) moves SQLite's
    data_version at every commit: only a change of the collections or indexes makes this store
    load its metadata again (which also forgets its remembered plans)."""
    path = str(tmp_path / "lrs.sqlite3")
    server, other = EmbeddedStore(path), EmbeddedStore(path)
    served = server.collection("c")
    served.create_index([("a", 1)], False, None)
    served.insert_many([{"_id": 1, "a": 1}])
    other.collection("c").insert_many([{"_id": 0, "a": 0}])
    # The server looks once after its own index change (it knows no newer count than before).
    assert ids(served.find({"a": 0})) == [0]
    loads: list[str] = []
    original = EmbeddedCollection.load_metadata

    def counting(self: EmbeddedCollection) -> None:
        if self._store is server:
            loads.append(self.name)
        original(self)

    monkeypatch.setattr(EmbeddedCollection, "load_metadata", counting)
    for n in range(2, 5):
        other.collection("c").insert_many([{"_id": n, "a": n}])
        assert ids(served.find({"a": n})) == [n]  # the other's writes are seen ...
    assert loads == []  # ... without reloading anything
    other.collection("c").create_index([("b", 1)], False, None)
    assert ids(served.find({"a": 2})) == [2]
    assert "c" in loads
    assert [i.name for i in served.indexes] == ["_id_", "a_1", "b_1"]
    server.close()
    other.close()


def _in_another_process(path: str, code: str) -> str:
    """Run `code` (with `collection`, the collection "c" of the store on `path`) in a separate
    Python process, as the CLI runs next to a server; returns what it prints."""
    script = (
        "import sys\n"
        "from lrs.storage.embedded import EmbeddedStore\n"
        "store = EmbeddedStore(sys.argv[1])\n"
        "collection = store.collection('c')\n" + code + "\nstore.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, path],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_changes_made_by_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "lrs.sqlite3")
    server = EmbeddedStore(path)
    served = server.collection("c")
    served.insert_many([{"_id": 1, "a": 6}])
    assert ids(served.find({"a": {"$gt": 5, "$lt": 8}})) == [1]  # metadata loaded, no index yet
    _in_another_process(
        path,
        "collection.create_index([('a', 1)], False, None)\n"
        "collection.insert_many([{'_id': 2, 'a': [1, 10]}])",
    )
    # The server writes entries to the index the other process created ...
    served.insert_many([{"_id": 3, "a": 7}])
    # ... and plans with the multikey flag the other process set.
    assert ids(served.find({"a": {"$gt": 5, "$lt": 8}})) == [1, 2, 3]
    assert served.count({"a": {"$gt": 5, "$lt": 8}}) == 3
    printed = _in_another_process(
        path, "print(sorted(d['_id'] for d in collection.find({'a': {'$gt': 5, '$lt': 8}})))"
    )
    assert printed.strip() == "[1, 2, 3]"
    server.close()


def test_multikey_flag_survives_a_rolled_back_write(tmp_path: Path) -> None:
    # A refused insert marked index "a" multikey and was rolled back; the next array written
    # through the same store must still record the flag in the file, or another store (or the
    # same file reopened) plans {a: {$gt: 5, $lt: 8}} as one range over [1, 10] and misses it.
    path = str(tmp_path / "lrs.sqlite3")
    store = EmbeddedStore(path)
    collection = store.collection("c")
    collection.create_index([("a", 1)], False, None)
    collection.create_index([("u", 1)], True, None)
    assert collection.insert_many([{"_id": 1, "u": 1}, {"_id": 2, "u": 1, "a": [0, 0.5]}]) == [1]
    assert collection.insert_many([{"_id": 3, "u": 3, "a": [1, 10]}]) == []
    assert ids(collection.find({"a": {"$gt": 5, "$lt": 8}})) == [3]
    other = EmbeddedStore(path)
    assert ids(other.collection("c").find({"a": {"$gt": 5, "$lt": 8}})) == [3]
    assert other.collection("c").count({"a": {"$gt": 5, "$lt": 8}}) == 1
    other.close()
    store.close()


def test_index_created_just_before_a_write_gets_its_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process may create an index between this store's last look at the metadata and
    # its write transaction (the CLI's create_index next to a server's insert). The write must
    # still add entries to that index. The interleaving is forced: the first time the server
    # checks the metadata outside a transaction, the other store creates the index right after.
    # (A store that only checks under its write lock has no such window: nothing is injected.)
    path = str(tmp_path / "lrs.sqlite3")
    server, cli = EmbeddedStore(path), EmbeddedStore(path)
    served = server.collection("c")
    served.insert_many([{"_id": 1, "a": 1}])
    assert ids(served.find({"a": 1})) == [1]
    refresh: Callable[[], None] = server.refresh_if_changed

    def refresh_then_other_process_creates_index() -> None:
        refresh()
        if not server._db.in_transaction:
            monkeypatch.setattr(server, "refresh_if_changed", refresh)
            cli.collection("c").create_index([("a", 1)], False, None)

    monkeypatch.setattr(server, "refresh_if_changed", refresh_then_other_process_creates_index)
    served.insert_many([{"_id": 2, "a": 5}])
    monkeypatch.setattr(server, "refresh_if_changed", refresh)
    cli.collection("c").create_index([("a", 1)], False, None)  # (a no-op if it exists)
    assert ids(served.find({})) == [1, 2]
    assert ids(served.find({"a": 5})) == [2]
    assert ids(cli.collection("c").find({"a": 5})) == [2]
    server.close()
    cli.close()


def test_failed_first_insert_leaves_collection_usable(tmp_path: Path) -> None:
    # The first insert creates the collection's table; if it fails (here bson refuses an integer
    # beyond 64 bits, as an xAPI extension could carry) the transaction rolls back, and the
    # collection must not keep pointing at the table that no longer exists.
    store, collection = new_collection(tmp_path)
    with pytest.raises(OverflowError):
        collection.insert_many([{"_id": 1, "a": 2**70}])
    assert collection.find({}) == []
    assert collection.insert_many([{"_id": 1, "a": 1}]) == []
    assert collection.find({"a": 1}) == [{"_id": 1, "a": 1}]
    store.close()


# --- targeted semantics: where MongoDB's answer is certain ---------------------------------------


@pytest.mark.parametrize(
    "projection",
    [
        {"a": 1},
        {"a": True, "k": 1},
        {"a": 1, "_id": 0},
        {"a": 0},
        {"a": 0, "_id": 0},
        {"_id": 0},
        {"_id": 1},
        {"missing": 1},
    ],
)
def test_projection_matches_mongomock(tmp_path: Path, projection: dict[str, Any]) -> None:
    docs = [{"_id": 1, "a": [1, 2], "k": "x", "s": {"x": 1}}, {"_id": 2, "k": None}]
    store, collection = new_collection(tmp_path)
    collection.insert_many([dict(doc) for doc in docs])
    expected = list(mongomock_collection(docs).find({}, projection))
    assert collection.find({}, projection) == expected
    assert collection.find_one({"_id": 1}, projection) == expected[0]
    store.close()


@pytest.mark.parametrize("indexed", [False, True])
def test_range_on_booleans(tmp_path: Path, indexed: bool) -> None:
    # Booleans are their own type bracket and compare false < true ({a: {$gt: false}} matches
    # true), with or without an index, and whether or not the index plan is exact.
    store, collection = new_collection(tmp_path)
    if indexed:
        collection.create_index([("a", 1)], False, None)
    collection.insert_many([{"_id": 1, "a": True}, {"_id": 2, "a": False}, {"_id": 3, "a": 1}])
    assert ids(collection.find({"a": {"$gt": False}})) == [1]
    assert ids(collection.find({"a": {"$gt": False}, "b": {"$exists": False}})) == [1]
    assert ids(collection.find({"a": {"$lte": True}})) == [1, 2]
    assert collection.count({"a": {"$gte": False}}) == 2
    store.close()


@pytest.mark.parametrize("indexed", [False, True])
def test_range_bounds_on_null(tmp_path: Path, indexed: bool) -> None:
    # $gte/$lte null match what equality with null matches (null and missing); $gt/$lt null
    # match nothing (nothing sorts above or below null within its type bracket).
    store, collection = new_collection(tmp_path)
    if indexed:
        collection.create_index([("a", 1)], False, None)
    collection.insert_many([{"_id": 1, "a": None}, {"_id": 2}, {"_id": 3, "a": 0}])
    assert ids(collection.find({"a": {"$gte": None}})) == [1, 2]
    assert ids(collection.find({"a": {"$lte": None}})) == [1, 2]
    assert ids(collection.find({"a": {"$gt": None}})) == []
    assert ids(collection.find({"a": {"$lt": None}})) == []
    store.close()


def test_all_with_an_empty_list_matches_nothing(tmp_path: Path) -> None:
    # MongoDB: "$all" with an empty array matches no documents (mongomock matches every one).
    store, collection = new_collection(tmp_path)
    collection.insert_many([{"_id": 1, "a": [1]}, {"_id": 2, "a": []}, {"_id": 3}])
    assert collection.find({"a": {"$all": []}}) == []
    store.close()


@pytest.mark.parametrize("indexed", [False, True])
def test_null_and_exists_on_dotted_paths(tmp_path: Path, indexed: bool) -> None:
    store, collection = new_collection(tmp_path)
    if indexed:
        collection.create_index([("s.x", 1)], False, None)
    collection.insert_many(
        [
            {"_id": 1, "s": 5},  # s.x is missing under a scalar
            {"_id": 2},
            {"_id": 3, "s": {}},
            {"_id": 4, "s": {"x": None}},
            {"_id": 5, "s": [{"y": 1}, {"x": 2}]},  # one element lacks x
            {"_id": 6, "s": {"x": 1}},
            {"_id": 7, "s": [{"x": 1}, {"x": 2}]},
            {"_id": 8, "s": {"x": [1, 2]}},
        ]
    )
    assert ids(collection.find({"s.x": None})) == [1, 2, 3, 4, 5]
    assert ids(collection.find({"s.x": {"$ne": None}})) == [6, 7, 8]
    assert ids(collection.find({"s.x": {"$in": [None, 2]}})) == [1, 2, 3, 4, 5, 7, 8]
    assert ids(collection.find({"s.x": {"$exists": False}})) == [1, 2, 3]
    assert ids(collection.find({"s.x": {"$exists": True}})) == [4, 5, 6, 7, 8]
    assert ids(collection.find({"s.x": {"$not": {"$gt": 1}}})) == [1, 2, 3, 4, 6]
    # $size applies to an array at the path, not to the values gathered through an array.
    assert ids(collection.find({"s.x": {"$size": 2}})) == [8]
    assert ids(collection.find({"s": {"$size": 2}})) == [5, 7]
    assert ids(collection.find({"s.x": {"$size": 1}})) == []
    store.close()


def test_distinct_equals_brute_force(tmp_path: Path) -> None:
    store, collection = new_collection(tmp_path)
    collection.create_index([("a", 1)], False, None)
    collection.insert_many(
        [
            {"_id": 1, "a": [1, 2, 2.0], "s": [{"x": "p"}, {"x": "q"}]},
            {"_id": 2, "a": 1.0, "s": {"x": None}},
            {"_id": 3, "a": True, "s": 3},
            {"_id": 4, "a": [], "g": 1},
            {"_id": 5, "g": 1},
        ]
    )

    def normal(values: list[Any]) -> list[Any]:
        return sorted(repr(strict(float(v) if type(v) is int else v)) for v in values)

    assert normal(collection.distinct("a", {})) == normal([1, 2, True])  # 1 and 1.0 are one
    assert normal(collection.distinct("s.x", {})) == normal(["p", "q", None])
    assert collection.distinct("a", {"g": 1}) == []
    assert normal(collection.distinct("a", {"a": {"$gt": 1}})) == normal([1, 2])
    store.close()


def test_descending_sort_on_arrays_uses_the_largest_element(tmp_path: Path) -> None:
    # MongoDB: ascending sorts an array by its smallest element, descending by its largest.
    store, collection = new_collection(tmp_path)
    collection.insert_many([{"_id": 1, "a": [1, 10]}, {"_id": 2, "a": 5}])
    assert [doc["_id"] for doc in collection.find({}, sort=[("a", -1)])] == [1, 2]
    assert [doc["_id"] for doc in collection.find({}, sort=[("a", 1)])] == [1, 2]
    store.close()


def test_an_index_cannot_change_its_uniqueness_silently(tmp_path: Path) -> None:
    store, collection = new_collection(tmp_path)
    collection.create_index([("u", 1)], False, None)
    with pytest.raises(OperationFailure):
        collection.create_index([("u", 1)], True, None)
    collection.create_index([("u", 1)], False, None)  # the same definition again: a no-op
    store.close()


async def test_the_served_store_sees_another_process_change_at_its_next_job(
    tmp_path: Path,
) -> None:
    # The server's store thread looks for other connections' commits once per job, not before
    # every query: a multikey flag another process set must be planned with from the next job
    # on (planned as a scalar index, {a: {$gt: 5, $lt: 8}} would miss [1, 10]).
    from lrs.storage.database import open_embedded

    database = open_embedded(tmp_path, "lrs")
    try:
        served = database["c"]
        await served.create_index([("a", 1)])
        await served.insert_many([{"_id": 1, "a": 6}, {"_id": 2, "a": 20}])
        assert ids(await served.find({"a": {"$gt": 5, "$lt": 8}})) == [1]
        other = EmbeddedStore(str(tmp_path / "lrs.sqlite3"))
        other.collection("c").insert_many([{"_id": 3, "a": [1, 10]}])
        other.close()
        assert ids(await served.find({"a": {"$gt": 5, "$lt": 8}})) == [1, 3]
        assert await served.count({"a": {"$gt": 5, "$lt": 8}}) == 2
    finally:
        await database.close()


# --- durability ---------------------------------------------------------------------------------


def test_commits_reach_the_disk_before_they_return_unless_configured_otherwise(
    tmp_path: Path,
) -> None:
    """SQLite's synchronous FULL (2) by default: an acknowledged write survives a power cut;
    NORMAL (1) only when asked for."""

    def level(store: EmbeddedStore) -> int:
        return store._db.execute("PRAGMA synchronous").fetchone()[0]

    assert level(EmbeddedStore(str(tmp_path / "default.sqlite3"))) == 2
    assert level(EmbeddedStore(str(tmp_path / "normal.sqlite3"), "normal")) == 1
    with pytest.raises(ValueError):
        EmbeddedStore(str(tmp_path / "off.sqlite3"), "off")


def test_the_page_cache_is_as_large_as_configured(tmp_path: Path) -> None:
    def kib(store: EmbeddedStore) -> int:
        return -store._db.execute("PRAGMA cache_size").fetchone()[0]  # negative: KiB

    assert kib(EmbeddedStore(str(tmp_path / "default.sqlite3"))) == 64 * 1024
    assert kib(EmbeddedStore(str(tmp_path / "small.sqlite3"), "full", 16)) == 16 * 1024
    for wrong in (0, -1, 1.5, True, "16"):
        with pytest.raises(ValueError, match="cache_mib"):
            EmbeddedStore(str(tmp_path / "wrong.sqlite3"), "full", wrong)  # type: ignore[arg-type]


def test_the_synchronous_and_cache_settings_reach_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from lrs.config import Settings
    from lrs.storage import embedded
    from lrs.storage.database import open_database

    assert Settings().embedded_synchronous == "full"
    monkeypatch.setenv("LRS_EMBEDDED_SYNCHRONOUS", "off")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("LRS_EMBEDDED_SYNCHRONOUS", "normal")
    assert Settings().embedded_cache_mib == 64
    monkeypatch.setenv("LRS_EMBEDDED_CACHE_MIB", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("LRS_EMBEDDED_CACHE_MIB", "32")
    settings = Settings(storage="embedded", data_dir=tmp_path)
    opened: list[tuple[str, int]] = []
    original = embedded.EmbeddedStore.__init__

    def recording(
        self: EmbeddedStore, path: str, synchronous: str = "full", cache_mib: int = 64
    ) -> None:
        opened.append((synchronous, cache_mib))
        original(self, path, synchronous, cache_mib)

    monkeypatch.setattr(embedded.EmbeddedStore, "__init__", recording)
    database = open_database(settings)
    try:
        assert opened[0] == ("normal", 32)  # the connection that writes
        assert all(cache == 32 for _, cache in opened)
    finally:
        import asyncio

        asyncio.run(database.close())
