"""The embedded document store: MongoDB's document model on one SQLite file, with real indexes.

Used when no MongoDB server is configured (`lrs serve` on a fresh machine). It implements the
small part of MongoDB that the repositories use (see `lrs.storage.database.Collection`), with
MongoDB's matching rules, so the same repository code runs here and on MongoDB.

Layout: each collection is a table of BSON documents (`d<N>`), and each declared index is a table
of key entries (`x<N>_<M>`: one row per document, or one per array element for multikey fields,
as in MongoDB) with an SQLite B-tree over it. A query is planned on the indexes: the plan whose
constraints match the fewest entries wins, a plan that yields the requested sort order streams
and stops at the limit, and the documents it yields are checked against the full filter unless
the index constraints alone are known to be exact. SQLite gives atomic, durable writes (WAL) and
locking across processes, so the CLI can work on the data directory of a running server.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
from bson import Binary, CodecOptions, Decimal128, ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure

_CODEC = CodecOptions(tz_aware=True, tzinfo=datetime.UTC)
_CHUNK = 256  # documents fetched per round trip while streaming candidates
_PROBE_CAP = 2000  # index entries counted per plan when choosing between plans
_PROBE_CAPS = (16, 256, _PROBE_CAP)  # the rising caps of those counts
_MAX_PLANS = 32
_PLAN_CACHE = 512  # filter shapes whose plan is remembered, per collection
_RECOUNT_AFTER = 32  # queries served by a plan chosen by counting before counting again
_LOCK_WAIT_SECONDS = 30  # how long a write waits for another process's write to finish


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# --- values: MongoDB's equality and ordering on the types we store ------------------------------

# Rank of each type in MongoDB's cross-type order (nulls first, then numbers, strings, ...).
_NULL = 0
_NUMBER = 1
_STRING = 2
_OBJECT = 3
_EMPTY_ARRAY = 4
_BINARY = 5
_OID = 7
_BOOL = 8
_DATE = 9
_UNKEYED = 99


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal128) and not isinstance(value, bool)


def _number(value: Any) -> float | int:
    return float(value.to_decimal()) if isinstance(value, Decimal128) else value


def _utc(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC)


def _millis(value: datetime.datetime) -> int:
    # BSON keeps milliseconds; keys must agree with the stored (decoded) value.
    delta = _utc(value) - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _index_key(value: Any) -> tuple[int, Any]:
    """The (type rank, SQLite value) an index stores for one scalar, ordered like MongoDB."""
    # The common exact types first: every write computes a dozen keys or more.
    kind = type(value)
    if kind is str:
        return (_STRING, value)
    if kind is int and -(2**63) <= value < 2**63:
        return (_NUMBER, value)
    if value is None or value is MISSING:
        return (_NULL, 0)
    if isinstance(value, bool):
        return (_BOOL, int(value))
    if _is_number(value):
        number = _number(value)
        if isinstance(number, float) and math.isnan(number):
            return (_UNKEYED, "nan")
        if isinstance(number, int) and not -(2**63) <= number < 2**63:
            number = float(number)
        return (_NUMBER, number)
    if isinstance(value, str):
        return (_STRING, value)
    if isinstance(value, dict):
        return (_OBJECT, bson.encode(value))  # never planned on; the full filter decides
    if isinstance(value, list | tuple):
        return (_UNKEYED, repr(list(value)))  # nested arrays: left to the full filter
    if isinstance(value, ObjectId):
        return (_OID, value.binary)
    if isinstance(value, datetime.datetime):
        return (_DATE, _millis(value))
    if isinstance(value, uuid.UUID):
        return (_BINARY, value.bytes)
    if isinstance(value, bytes | Binary):
        return (_BINARY, bytes(value))
    return (_UNKEYED, repr(value))


def _plannable(value: Any) -> bool:
    key = _index_key(value)
    return key[0] not in (_OBJECT, _UNKEYED)


def values_equal(a: Any, b: Any) -> bool:
    """MongoDB equality: numbers by value across types, bools only with bools, documents and
    arrays element by element (documents also in key order)."""
    kind = type(a)
    if kind is type(b) and (kind is str or kind is bool or kind is int):
        return a == b  # the common case, decided without the checks below
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and _number(a) == _number(b)
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or list(a) != list(b):
            return False
        return all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return False
        return all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime.datetime) and isinstance(b, datetime.datetime):
        return _millis(a) == _millis(b)
    if isinstance(a, bytes | Binary) and isinstance(b, bytes | Binary):
        return bytes(a) == bytes(b)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == b


def _compare(a: Any, op: str, b: Any) -> bool:
    """$gt/$gte/$lt/$lte: only values of the same type bracket compare, as in MongoDB."""
    if b is None:  # null's bracket holds null and missing, all equal
        return op in ("$gte", "$lte") and (a is None or a is MISSING)
    if isinstance(a, bool) or isinstance(b, bool):
        if not (isinstance(a, bool) and isinstance(b, bool)):
            return False
        x, y = int(a), int(b)
    elif _is_number(a) and _is_number(b):
        x, y = _number(a), _number(b)
    elif isinstance(a, str) and isinstance(b, str):
        x, y = a, b
    elif isinstance(a, datetime.datetime) and isinstance(b, datetime.datetime):
        x, y = _millis(a), _millis(b)
    elif isinstance(a, ObjectId) and isinstance(b, ObjectId):
        x, y = a.binary, b.binary
    else:
        return False
    if op == "$gt":
        return x > y
    if op == "$gte":
        return x >= y
    if op == "$lt":
        return x < y
    return x <= y


def sort_value(value: Any, descending: bool = False) -> tuple[int, Any]:
    """A Python sort key that orders values as MongoDB does (for the types we sort on): an
    array sorts by its smallest element ascending, by its largest descending."""
    if value is MISSING:
        value = None
    if isinstance(value, list):
        keys = [sort_value(v) for v in value]
        if not keys:
            return (_EMPTY_ARRAY, 0)
        return max(keys) if descending else min(keys)
    rank, key = _index_key(value)
    return (rank, key if key is not None else 0)


# --- paths ---------------------------------------------------------------------------------------


def _path_values(doc: Any, parts: Sequence[str]) -> list[Any]:
    """Every value a dotted path reaches, walking into arrays of documents; MISSING where a
    branch ends early. A value that is an array is returned whole (the caller expands it)."""
    if not parts:
        return [doc]
    if isinstance(doc, dict):
        if parts[0] not in doc:
            return [MISSING]
        return _path_values(doc[parts[0]], parts[1:])
    if isinstance(doc, list | tuple):  # a tuple is stored (BSON) as an array
        found: list[Any] = []
        for element in doc:
            if isinstance(element, dict):
                found.extend(_path_values(element, parts))
        return found or [MISSING]
    return [MISSING]


def _values_at(doc: Mapping[str, Any], path: str) -> list[Any]:
    return _path_values(doc, path.split("."))


# --- matching ------------------------------------------------------------------------------------

_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")


# Condition types `_scalar_matches` decides alone (exact types: a subclass takes the long way).
_PLAIN_SCALARS = frozenset({str, bool, int})


def _plain_equality(key: str, condition: Any) -> bool:
    """Whether `{key: condition}` is a top-level equality `_scalar_matches` decides."""
    return type(condition) in _PLAIN_SCALARS and "." not in key and not key.startswith("$")


def _scalar_matches(value: Any, condition: Any) -> bool:
    """`_field_matches([value], condition)` for a condition of a type in `_PLAIN_SCALARS`,
    without the general dispatch: residual filters of GETs and of the derivation's reads are
    mostly such equalities (`voided: false`, `agents: "mbox:..."`), checked on every candidate."""
    kind = type(condition)
    if type(value) is kind:
        return value == condition
    if type(value) is list:  # an array matches if one of its elements equals the condition
        return any(e == condition if type(e) is kind else values_equal(e, condition) for e in value)
    return value is not MISSING and values_equal(value, condition)


def matches(doc: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Whether a document matches a MongoDB query filter (the operators the LRS uses)."""
    for key, condition in filter.items():
        if type(doc) is dict and _plain_equality(key, condition):
            if not _scalar_matches(doc.get(key, MISSING), condition):
                return False
        elif key == "$and":
            if not all(matches(doc, sub) for sub in condition):
                return False
        elif key == "$or":
            if not any(matches(doc, sub) for sub in condition):
                return False
        elif key == "$nor":
            if any(matches(doc, sub) for sub in condition):
                return False
        elif key.startswith("$"):
            raise ValueError(f"unsupported query operator {key}")
        elif not _field_matches(_values_at(doc, key), condition):
            return False
    return True


def matcher(filter: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """`lambda doc: matches(doc, filter)`, with the filter taken apart once rather than for
    every document it is checked against (the candidates of one query: up to hundreds)."""
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for key, condition in filter.items():
        if key in ("$and", "$or", "$nor"):
            subs = [matcher(sub) for sub in condition]
            if key == "$and":
                checks.append(_every(subs))
            elif key == "$or":
                checks.append(_some(subs))
            else:
                some = _some(subs)
                checks.append(lambda doc, some=some: not some(doc))
        elif _plain_equality(key, condition):
            checks.append(
                lambda doc, key=key, condition=condition: (
                    _scalar_matches(doc.get(key, MISSING), condition)
                    if type(doc) is dict
                    else matches(doc, {key: condition})
                )
            )
        else:
            # Anything else as `matches` does it (which also raises on an unknown operator,
            # when a document gets that far, as before).
            checks.append(lambda doc, part={key: condition}: matches(doc, part))
    return _every(checks)


# A part made of one check is that check: a residual that is one `$or` (an `agent` GET's) is
# not wrapped in an `all` over a generator as well.
Check = Callable[[Mapping[str, Any]], bool]


def _every(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda doc: all(check(doc) for check in checks)


def _some(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda doc: any(check(doc) for check in checks)


def _is_operator_dict(condition: Any) -> bool:
    return isinstance(condition, dict) and bool(condition) and next(iter(condition)).startswith("$")


def _field_matches(values: list[Any], condition: Any) -> bool:
    if not _is_operator_dict(condition):
        return any(_equals(value, condition) for value in values)
    for op, operand in condition.items():
        if op == "$eq":
            ok = any(_equals(value, operand) for value in values)
        elif op == "$ne":
            ok = not any(_equals(value, operand) for value in values)
        elif op == "$in":
            ok = any(_equals(value, item) for value in values for item in operand)
        elif op == "$nin":
            ok = not any(_equals(value, item) for value in values for item in operand)
        elif op in _COMPARISONS:
            ok = any(_compare(e, op, operand) for value in values for e in _elements(value))
        elif op == "$exists":
            ok = any(value is not MISSING for value in values) == bool(operand)
        elif op == "$elemMatch":
            ok = any(
                isinstance(value, list) and any(_element_matches(e, operand) for e in value)
                for value in values
            )
        elif op == "$all":
            ok = bool(operand) and all(
                any(_equals(value, item) for value in values) for item in operand
            )
        elif op == "$size":
            ok = any(isinstance(value, list) and len(value) == operand for value in values)
        elif op == "$not":
            ok = not _field_matches(values, operand)
        else:
            raise ValueError(f"unsupported query operator {op}")
        if not ok:
            return False
    return True


def _elements(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _equals(value: Any, expected: Any) -> bool:
    if expected is None:
        if value is MISSING or value is None:
            return True
        return isinstance(value, list) and any(e is None for e in value)
    if value is MISSING:
        return False
    if values_equal(value, expected):
        return True
    return isinstance(value, list) and any(values_equal(e, expected) for e in value)


def _element_matches(element: Any, condition: Mapping[str, Any]) -> bool:
    if _is_operator_dict(condition):
        return _field_matches([element], condition) if not isinstance(element, list) else False
    return isinstance(element, dict) and matches(element, condition)


# --- updates -------------------------------------------------------------------------------------


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target = doc
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


def _get_path(doc: Mapping[str, Any], path: str) -> Any:
    target: Any = doc
    for part in path.split("."):
        if not isinstance(target, dict) or part not in target:
            return MISSING
        target = target[part]
    return target


def _unset_path(doc: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    target: Any = doc
    for part in parts[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target.pop(parts[-1], None)


def apply_update(
    doc: dict[str, Any], update: Mapping[str, Any], *, inserting: bool, shallow: bool = False
) -> dict[str, Any]:
    """The document after an update (operators) or a replacement (a plain document). With
    `shallow` (only top-level fields change, see `_shallow_fields`) the copy is shallow."""
    if not _is_operator_dict(update):
        # _id is immutable: the existing (or upsert-seeded) one, else the replacement's.
        source = doc if "_id" in doc else update
        replaced = {"_id": source["_id"]} if "_id" in source else {}
        replaced.update({k: v for k, v in update.items() if k != "_id"})
        return replaced
    # Otherwise a deep copy of BSON types: nested values may be changed in place below.
    new = dict(doc) if shallow else bson.decode(bson.encode(doc), codec_options=_CODEC)
    for op, fields in update.items():
        for path, value in fields.items():
            if op == "$set" or (op == "$setOnInsert" and inserting):
                _set_path(new, path, value)
            elif op == "$setOnInsert":
                continue
            elif op == "$unset":
                _unset_path(new, path)
            elif op == "$inc":
                current = _get_path(new, path)
                _set_path(new, path, value if current is MISSING else current + value)
            elif op in ("$addToSet", "$push"):
                items = value["$each"] if isinstance(value, dict) and "$each" in value else [value]
                current = _get_path(new, path)
                array = [] if current is MISSING else current
                if not isinstance(array, list):
                    raise ValueError(f"{op} on a non-array field {path}")
                for item in items:
                    if op == "$push" or not any(values_equal(e, item) for e in array):
                        array.append(item)
                _set_path(new, path, array)
            else:
                raise ValueError(f"unsupported update operator {op}")
    return new


def _upsert_seed(filter: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an upsert takes from its filter's equality conditions."""
    seed: dict[str, Any] = {}
    for key, condition in filter.items():
        if key == "$and":
            for sub in condition:
                seed.update(_upsert_seed(sub))
        elif key.startswith("$"):
            continue
        elif _is_operator_dict(condition):
            if "$eq" in condition:
                _set_path(seed, key, condition["$eq"])
        else:
            _set_path(seed, key, condition)
    return seed


def project(doc: dict[str, Any], projection: Mapping[str, Any] | None) -> dict[str, Any]:
    return projector(projection)(doc)


def projector(
    projection: Mapping[str, Any] | None,
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`lambda doc: project(doc, projection)`, with the projection read once rather than for
    every document of a page."""
    if not projection:
        return lambda doc: doc
    include = tuple(k for k, v in projection.items() if v and k != "_id")
    if include or (projection.get("_id") and len(projection) == 1):
        with_id = bool(projection.get("_id", 1))

        def included(doc: dict[str, Any]) -> dict[str, Any]:
            result = {k: doc[k] for k in include if k in doc}
            if with_id and "_id" in doc:
                result["_id"] = doc["_id"]
            return result

        return included
    excluded = frozenset(k for k, v in projection.items() if not v)
    return lambda doc: {k: v for k, v in doc.items() if k not in excluded}


# --- indexes and query plans ---------------------------------------------------------------------


@dataclass
class _Index:
    name: str
    fields: list[str]
    unique: bool
    table: str
    multikey: int  # bit i set: field i held an array in some document
    # A partial index (MongoDB's partialFilterExpression {field: {$exists: true}}): only the
    # documents that have this top-level field have entries.
    partial: str | None = None

    @functools.cached_property
    def roots(self) -> set[str]:
        """The top-level fields the index reads."""
        return {name.split(".", 1)[0] for name in self.fields}

    @functools.cached_property
    def paths(self) -> list[list[str]]:
        return [name.split(".") for name in self.fields]

    def is_multikey(self, position: int) -> bool:
        return bool(self.multikey >> position & 1)

    def entries(self, doc: Mapping[str, Any]) -> tuple[set[tuple[Any, ...]], bool]:
        """The index rows of a document (without rid), and a bit mask of the fields whose
        values were expanded from arrays."""
        if self.partial is not None and self.partial not in doc:
            return set(), 0
        per_field: list[list[tuple[int, Any]]] = []
        expanded = 0
        for parts in self.paths:
            keys: list[tuple[int, Any]] = []
            # A top-level field (most are) needs no walk through the document.
            values = [doc.get(parts[0], MISSING)] if len(parts) == 1 else _path_values(doc, parts)
            if len(values) > 1:
                expanded |= 1 << len(per_field)
            for value in values:
                if isinstance(value, list | tuple):
                    expanded |= 1 << len(per_field)
                    keys.extend(_index_key(e) for e in value)
                    if not value:
                        keys.append((_EMPTY_ARRAY, 0))
                else:
                    keys.append(_index_key(value))
            per_field.append(keys)
        if not expanded:  # one value per field: one row
            return {tuple(itertools.chain.from_iterable(keys[0] for keys in per_field))}, 0
        rows = {
            tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*per_field)
        }
        return rows, expanded


@dataclass
class _Constraint:
    keys: list[tuple[int, Any]] | None = None  # equality with any of these
    rank: int = 0  # range: type rank, bounds (None: open)
    low: tuple[Any, bool] | None = None  # (value, inclusive)
    high: tuple[Any, bool] | None = None
    exact: bool = True

    @property
    def single(self) -> bool:
        return self.keys is not None and len(self.keys) == 1


def _constraint(condition: Any) -> _Constraint | None:
    """What an index can do with one field condition; None if nothing."""
    if type(condition) is str:  # the commonest condition: a store, a key, a term
        return _Constraint(keys=[(_STRING, condition)])
    if not _is_operator_dict(condition):
        if isinstance(condition, list | dict) or not (condition is None or _plannable(condition)):
            return None
        return _Constraint(keys=[_index_key(condition)])
    ops = set(condition)
    if "$eq" in ops:
        operand = condition["$eq"]
        if isinstance(operand, list | dict) or not (operand is None or _plannable(operand)):
            return None
        return _Constraint(keys=[_index_key(operand)], exact=len(ops) == 1)
    if "$in" in ops:
        operand = condition["$in"]
        if not isinstance(operand, list | tuple):
            return None
        # Each key once, in the order given (the SQL's IN list does not depend on its order).
        if set(map(type, operand)) <= {str}:  # the usual one: ids, keys, terms
            return _Constraint(
                keys=[(_STRING, v) for v in dict.fromkeys(operand)], exact=len(ops) == 1
            )
        if any(isinstance(v, list | dict) or not (v is None or _plannable(v)) for v in operand):
            return None
        keys = list(dict.fromkeys(_index_key(v) for v in operand))
        return _Constraint(keys=keys, exact=len(ops) == 1)
    bounds = [op for op in _COMPARISONS if op in ops]
    if not bounds:
        return None
    ranks = {_index_key(condition[op])[0] for op in bounds}
    if len(ranks) != 1 or next(iter(ranks)) in (_OBJECT, _UNKEYED, _NULL):
        return None
    result = _Constraint(rank=ranks.pop(), exact=len(ops) == len(bounds))
    for op in bounds:
        key = _index_key(condition[op])[1]
        # Several bounds on one side ({$gt: 5, $gte: 0}) all hold: keep the tightest.
        if op in ("$gt", "$gte"):
            bound = (key, op == "$gte")
            if result.low is None or (bound[0], not bound[1]) > (result.low[0], not result.low[1]):
                result.low = bound
        else:
            bound = (key, op == "$lte")
            if result.high is None or (bound[0], bound[1]) < (result.high[0], result.high[1]):
                result.high = bound
    return result


def _conjuncts(filter: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The (field, condition) pairs every match must satisfy, and the other parts of the
    filter every match must satisfy too ($or, $nor, ...: none when the pairs are the whole
    filter). The filter is the conjunction of both."""
    pairs: list[tuple[str, Any]] = []
    others: list[dict[str, Any]] = []
    for key, condition in filter.items():
        if key == "$and":
            for sub in condition:
                sub_pairs, sub_others = _conjuncts(sub)
                pairs.extend(sub_pairs)
                others.extend(sub_others)
        elif key.startswith("$"):
            others.append({key: condition})
        else:
            pairs.append((key, condition))
    return pairs, others


@dataclass
class _Plan:
    index: _Index
    constraints: dict[int, _Constraint]
    exact: bool
    ordered: bool
    prefix: int = 0  # leading index fields the constraints seek on
    numbers: tuple[int, ...] = ()  # per index field, the filter condition used (-1: none)
    order_sql: str = ""
    where_sql: str = ""
    params: list[Any] = field(default_factory=list)
    # What a candidate must still be checked against: the filter less the conditions the index
    # seek already guarantees (None: the whole filter). An `$in` of 100 ids re-checked on each
    # of 100 candidates is 10,000 comparisons, more than the read itself.
    residual: Mapping[str, Any] | None = None


def _narrowing(plan: _Plan) -> int:
    """How many of the plan's conditions can narrow much: an equality on a boolean or null
    (`voided: false`) splits an index into two or three parts at most, so among plans that all
    match too many entries to count, one seeking on a value (a term, an id) is preferred."""
    return sum(
        1
        for constraint in plan.constraints.values()
        if constraint.keys is None or any(rank not in (_BOOL, _NULL) for rank, _ in constraint.keys)
    )


def _excludes_missing(constraints: list[tuple[int, _Constraint]] | None) -> bool:
    """Whether one of these conditions on a field rules out documents that lack it (so that a
    partial index on the field may serve the query)."""
    for _, constraint in constraints or ():
        if constraint.keys is None:  # a range: never met by a missing field
            return True
        if all(rank != _NULL for rank, _ in constraint.keys):
            return True
    return False


def _shape(value: Any) -> Any:
    """A filter with its values reduced to their types (what planning depends on, apart from
    the counts it sometimes takes)."""
    kind = type(value)
    if kind is str:  # most values (computed on every query: the cheap cases first)
        return "str"
    if kind is dict or isinstance(value, dict):
        return tuple([(key, _shape(item)) for key, item in value.items()])
    if isinstance(value, list | tuple):
        # An `$in` of a thousand ids is a thousand strings: their type, not a thousand reprs.
        types = set(map(type, value))
        if types == _ONLY_STR:
            return _STR_LIST
        if not any(issubclass(t, dict | list | tuple) for t in types):
            return ("[]", tuple(sorted(t.__name__ for t in types)))
        return ("[]", tuple(sorted({repr(_shape(item)) for item in value})))
    return kind.__name__


_ONLY_STR = {str}
_STR_LIST = ("[]", ("str",))  # what _shape gives a list of strings


def _prefix(constraints: dict[int, _Constraint]) -> int:
    depth = 0
    while depth in constraints:
        depth += 1
        if constraints[depth - 1].keys is None:
            break  # a range ends the part of the key an index can seek on
    return depth


def _where(plan_index: _Index, constraints: dict[int, _Constraint]) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for position, constraint in sorted(constraints.items()):
        t, v = f"t{position}", f"v{position}"
        if constraint.keys is not None:
            if len(constraint.keys) == 1:
                clauses.append(f"{t} = ? AND {v} = ?")
                params.extend(constraint.keys[0])
            elif not constraint.keys:
                clauses.append("0")
            else:
                groups: dict[int, list[Any]] = {}
                for rank, value in constraint.keys:
                    groups.setdefault(rank, []).append(value)
                alternatives = []
                for rank, values in groups.items():
                    if len(values) == 1:
                        alternatives.append(f"{t} = ? AND {v} = ?")
                    else:
                        alternatives.append(
                            f"{t} = ? AND {v} IN ({', '.join(['?'] * len(values))})"
                        )
                    params.extend([rank, *values])
                clauses.append(
                    alternatives[0]
                    if len(alternatives) == 1
                    else "(" + " OR ".join(f"({a})" for a in alternatives) + ")"
                )
            continue
        clauses.append(f"{t} = ?")
        params.append(constraint.rank)
        low = constraint.low
        high = constraint.high
        if low is not None and high is not None and plan_index.is_multikey(position):
            high = None  # two bounds may be met by different elements of an array
        if low is not None:
            clauses.append(f"{v} {'>=' if low[1] else '>'} ?")
            params.append(low[0])
        if high is not None:
            clauses.append(f"{v} {'<=' if high[1] else '<'} ?")
            params.append(high[0])
    return " AND ".join(clauses) or "1", params


# --- the store -----------------------------------------------------------------------------------


class EmbeddedStore:
    """One SQLite file holding every collection of one database. Not thread-safe: the caller
    runs all calls on one thread (`lrs.storage.database` does)."""

    def __init__(self, path: str, synchronous: str = "full", cache_mib: int = 64) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if isinstance(cache_mib, bool) or not isinstance(cache_mib, int) or cache_mib < 1:
            raise ValueError(f"cache_mib must be a whole number of MiB >= 1, not {cache_mib!r}")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every COMMIT reaches the disk before it returns, so what was acknowledged
        # survives a power cut. NORMAL (in WAL mode): a power cut can lose the last commits,
        # never corrupt the file; a crash of the process alone loses nothing either way.
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute(f"PRAGMA busy_timeout={_LOCK_WAIT_SECONDS * 1000}")
        self._db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # negative: in KiB
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, tbl TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS indexes (collection TEXT, name TEXT, fields TEXT,"
            " uniq INTEGER, tbl TEXT, multikey INTEGER, partial TEXT,"
            " PRIMARY KEY (collection, name))"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(indexes)")}
        if "partial" not in columns:  # a file written before partial indexes existed
            self._db.execute("ALTER TABLE indexes ADD COLUMN partial TEXT")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS clock (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        # Started at the clock: every stored key above it is a later write's.
        self._db.execute(
            "INSERT OR IGNORE INTO clock VALUES ('stored', ?)", (time.time_ns() // 1000,)
        )
        self._collections: dict[str, EmbeddedCollection] = {}
        self._seen_version: int | None = None
        self._seen_metadata: int | None = None
        # Looking at PRAGMA data_version before every query cost a tenth of a GET's time. The
        # owner of the connection may instead expire the look at each of its jobs (a job
        # reading several times sees the metadata as of its start, which is what it gets from
        # SQLite anyway): see lrs.storage.database.open_embedded.
        self.refresh_per_job = False
        self._refreshed = False
        self._depth = 0  # open write transaction (1) and savepoints in it
        self._synced_commits = synchronous == "full"
        # Called before each write transaction takes the lock (lrs.storage.database: the
        # progress file is made durable before the statements' file writes).
        self.before_write: Callable[[], None] | None = None
        self._unsynced = False  # committed since the last sync (synchronous NORMAL only)

    def collection(self, name: str) -> EmbeddedCollection:
        if name not in self._collections:
            self._collections[name] = EmbeddedCollection(self, name)
        return self._collections[name]

    def close(self) -> None:
        self._db.close()

    def refresh_if_changed(self) -> None:
        """Reload index metadata when another connection committed (another process may have
        created an index or marked one multikey)."""
        if self._refreshed:
            return
        version = self.data_version()
        if version != self._seen_version:
            self._seen_version = version
            # Another process writing all the time (`--workers`, the derivation process) moves
            # data_version at every commit; the metadata itself rarely changes.
            row = self._db.execute("SELECT value FROM clock WHERE name = 'metadata'").fetchone()
            metadata = row[0] if row else 0
            if metadata != self._seen_metadata:
                self._seen_metadata = metadata
                self.reload_metadata()
        # Under the write lock nobody else commits, so one look lasts the transaction; with
        # `refresh_per_job`, one look lasts until the owner's next job (`expire_refresh`).
        self._refreshed = self._depth > 0 or self.refresh_per_job

    def data_version(self) -> int:
        """Moves when another connection commits (SQLite's PRAGMA data_version)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def has_collection(self, name: str) -> bool:
        """Whether this file holds the collection (it was written or indexed here once)."""
        row = self._db.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone()
        return row is not None

    def make_durable(self) -> None:
        """Make every commit of this connection so far durable (a no-op where each commit is
        synced). A commit with synchronous NORMAL reaches the disk only at a later sync; one
        synced commit syncs the log, and with it every frame written before."""
        if not self._unsynced:
            return
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self.write() as db:
                db.execute("INSERT OR REPLACE INTO clock VALUES ('synced', ?)", (time.time_ns(),))
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._unsynced = False

    def expire_refresh(self) -> None:
        """The next read looks again whether another connection committed."""
        self._refreshed = False

    def write(self) -> _WriteTransaction:
        """A write transaction, or, inside one (a group commit), a savepoint of it."""
        return _WriteTransaction(self)

    # A group of writes (lrs.storage.database commits queued writes together): begin() opens
    # the transaction, each write inside it is a savepoint, commit() makes them all durable.
    def begin(self) -> None:
        _WriteTransaction(self).__enter__()

    def commit(self) -> None:
        _WriteTransaction(self).__exit__(None, None, None)

    def rollback(self) -> None:
        if self._depth == 0:
            # A COMMIT that failed leaves SQLite's transaction open, with our depth at 0.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
                self.reload_metadata()
            return
        error = RuntimeError("group rolled back")
        _WriteTransaction(self).__exit__(RuntimeError, error, None)

    def next_stored_key(self) -> int:
        """A `stored` key for a batch written in the current transaction: the clock in
        microseconds, but always above every key handed out before, by any process. Taken
        under the write lock, so keys grow in commit order: whatever commits later has a
        larger key, which makes X-Experience-API-Consistent-Through simply "now"."""
        assert self._depth > 0, "stored keys are taken inside a write transaction"
        row = self._db.execute("SELECT value FROM clock WHERE name = 'stored'").fetchone()
        now = time.time_ns() // 1000
        key = max(now, row[0] + 1) if row else now
        self._db.execute("INSERT OR REPLACE INTO clock VALUES ('stored', ?)", (key,))
        return key

    def last_stored_key(self) -> int:
        """The stored key of the last batch committed (by any process). Keys are taken in
        commit order under the write lock, so every statement whose key is at or below it is
        visible to any read that starts after this one: X-Experience-API-Consistent-Through."""
        row = self._db.execute("SELECT value FROM clock WHERE name = 'stored'").fetchone()
        return int(row[0])

    def reload_metadata(self) -> None:
        for collection in self._collections.values():
            collection.load_metadata()


class _WriteTransaction:
    # BEGIN IMMEDIATE takes the write lock up front: a read-modify-write is never interleaved
    # with another process's write. Nested inside an open transaction, a savepoint.
    def __init__(self, store: EmbeddedStore) -> None:
        self._store = store
        self._db = store._db

    def __enter__(self) -> sqlite3.Connection:
        depth = self._store._depth
        if depth == 0:
            if self._store.before_write is not None:
                self._store.before_write()
            self._begin()
            self._store._depth = 1
            # Under the lock: an index another process created since our last look is written.
            self._store.expire_refresh()
            self._store.refresh_if_changed()
            return self._db
        self._db.execute(f"SAVEPOINT w{depth}")
        self._store._depth = depth + 1
        return self._db

    def _begin(self) -> None:
        # SQLite's own busy handler sleeps up to 100 ms between tries: with another process
        # writing (a worker, the CLI) requests would wait for nothing. Poll every few ms instead.
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        pause = 0.0005
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, 0.004)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={_LOCK_WAIT_SECONDS * 1000}")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        depth = self._store._depth - 1
        self._store._depth = depth
        if depth == 0:
            self._store.expire_refresh()  # the lock goes: others may commit from now on
        if exc_type is None:
            self._db.execute("COMMIT" if depth == 0 else f"RELEASE w{depth}")
            if depth == 0 and not self._store._synced_commits:
                self._store._unsynced = True
            return
        if depth == 0:
            self._db.execute("ROLLBACK")
        else:
            self._db.execute(f"ROLLBACK TO w{depth}")
            self._db.execute(f"RELEASE w{depth}")
        # The in-memory metadata may describe tables, indexes or flags that were rolled back.
        self._store.reload_metadata()


class EmbeddedCollection:
    def __init__(self, store: EmbeddedStore, name: str) -> None:
        self._store = store
        self._db = store._db
        self.name = name
        self.table = ""
        self.indexes: list[_Index] = []
        # shape -> (index, filter condition per index field, multikey flags, uses left or None);
        # emptied whenever `indexes` changes, so the index is always one of them.
        self._plan_cache: dict[Any, tuple[_Index, tuple[int, ...], int, int | None]] = {}
        self.load_metadata()

    # --- metadata --------------------------------------------------------------------------

    def load_metadata(self) -> None:
        self._plan_cache = {}
        row = self._db.execute(
            "SELECT tbl FROM collections WHERE name = ?", (self.name,)
        ).fetchone()
        self.table = row[0] if row else ""
        self.indexes = [
            _Index(name, json.loads(fields), bool(uniq), tbl, multikey, partial)
            for name, fields, uniq, tbl, multikey, partial in self._db.execute(
                "SELECT name, fields, uniq, tbl, multikey, partial FROM indexes"
                " WHERE collection = ? ORDER BY rowid",
                (self.name,),
            )
        ]

    def _ensure_table(self, db: sqlite3.Connection) -> None:
        if self.table:
            return
        row = db.execute("SELECT tbl FROM collections WHERE name = ?", (self.name,)).fetchone()
        if row is None:
            number = db.execute("SELECT count(*) FROM collections").fetchone()[0] + 1
            table = f"d{number}"
            db.execute(f"CREATE TABLE {table} (rid INTEGER PRIMARY KEY, doc BLOB NOT NULL)")
            db.execute("INSERT INTO collections VALUES (?, ?)", (self.name, table))
            _metadata_changed(db)
            self.table = table
            self._add_index(db, "_id_", ["_id"], unique=True)
        else:
            self.load_metadata()

    def create_index(
        self,
        keys: Sequence[tuple[str, int]],
        unique: bool,
        name: str | None,
        partial: str | None = None,
    ) -> None:
        fields = [key for key, _ in keys]
        name = name or "_".join(f"{key}_{direction}" for key, direction in keys)
        with self._store.write() as db:
            self._ensure_table(db)
            for index in self.indexes:
                if index.name == name or index.fields == fields:
                    if index.unique != unique or index.partial != partial:
                        # As MongoDB: an index cannot silently change its options.
                        raise OperationFailure(
                            f"index {index.name} on {fields} exists with other options"
                            f" (unique={index.unique}, partial={index.partial})",
                            86,
                        )
                    return
            index = self._add_index(db, name, fields, unique=unique, partial=partial)
            for rid, blob in db.execute(f"SELECT rid, doc FROM {self.table}").fetchall():
                self._insert_entries(db, index, rid, bson.decode(blob, codec_options=_CODEC))

    def drop_index(self, fields: list[str]) -> bool:
        """Drop the index on exactly these fields, if there is one (an index an earlier
        version declared and this one no longer uses); True if one was dropped."""
        with self._store.write() as db:
            self._ensure_table(db)
            index = next((i for i in self.indexes if i.fields == fields), None)
            if index is None or index.name == "_id_":
                return False
            db.execute(f"DROP TABLE {index.table}")
            db.execute(
                "DELETE FROM indexes WHERE collection = ? AND name = ?", (self.name, index.name)
            )
            _metadata_changed(db)
            self.indexes.remove(index)
            self._plan_cache = {}
            return True

    def _add_index(
        self,
        db: sqlite3.Connection,
        name: str,
        fields: list[str],
        unique: bool,
        partial: str | None = None,
    ) -> _Index:
        # Above every table in use (an index may have been dropped: counting would reuse one).
        number = (
            db.execute(
                "SELECT coalesce(max(CAST(substr(tbl, 2) AS INTEGER)), 0) FROM indexes"
            ).fetchone()[0]
            + 1
        )
        table = f"x{number}"
        key_columns = ", ".join(f"t{i}, v{i}" for i in range(len(fields)))
        # The entries are the B-tree itself (WITHOUT ROWID): no second copy in a separate index.
        primary_key = key_columns if unique else f"{key_columns}, rid"
        db.execute(
            f"CREATE TABLE {table} ({key_columns}, rid INTEGER NOT NULL,"
            f" PRIMARY KEY ({primary_key})) WITHOUT ROWID"
        )
        db.execute(
            "INSERT INTO indexes VALUES (?, ?, ?, ?, ?, 0, ?)",
            (self.name, name, json.dumps(fields), int(unique), table, partial),
        )
        _metadata_changed(db)
        index = _Index(name, fields, unique, table, 0, partial)
        self.indexes.append(index)
        self._plan_cache = {}
        return index

    # --- index maintenance -----------------------------------------------------------------

    def _insert_entries(
        self, db: sqlite3.Connection, index: _Index, rid: int, doc: Mapping[str, Any]
    ) -> None:
        rows, expanded = index.entries(doc)
        self._write_entries(db, index, rid, rows, expanded)

    def _write_entries(
        self,
        db: sqlite3.Connection,
        index: _Index,
        rid: int,
        rows: set[tuple[Any, ...]],
        expanded: int,
    ) -> None:
        self._write_rows(db, index, [(*row, rid) for row in rows], expanded)

    def _write_rows(
        self, db: sqlite3.Connection, index: _Index, rows: list[tuple[Any, ...]], expanded: int
    ) -> None:
        """Index entries, each (key values..., rid)."""
        if expanded & ~index.multikey:
            index.multikey |= expanded
            db.execute(
                "UPDATE indexes SET multikey = ? WHERE collection = ? AND name = ?",
                (index.multikey, self.name, index.name),
            )
            _metadata_changed(db)
        if not rows:  # a partial index the documents are not in: most statements, 3 of 8
            return
        placeholders = ", ".join(["?"] * (2 * len(index.fields) + 1))
        try:
            db.executemany(f"INSERT INTO {index.table} VALUES ({placeholders})", rows)
        except sqlite3.IntegrityError as exc:
            raise DuplicateKeyError(
                f"E11000 duplicate key error collection: {self.name} index: {index.name}", 11000
            ) from exc

    def _insert(self, db: sqlite3.Connection, doc: dict[str, Any]) -> None:
        if "_id" not in doc:
            doc["_id"] = ObjectId()
        blob = bson.encode(doc)
        cursor = db.execute(f"INSERT INTO {self.table} (doc) VALUES (?)", (blob,))
        rid = cursor.lastrowid
        assert rid is not None
        # Keys of the document as given equal those of its stored (decoded) form: dates key by
        # milliseconds either way, tuples as arrays; so no decoding here.
        for index in self.indexes:
            self._insert_entries(db, index, rid, doc)

    def _insert_all(self, db: sqlite3.Connection, docs: list[dict[str, Any]]) -> None:
        """`_insert` for many documents with one statement per table (raises on the first
        duplicate key; the caller rolls back)."""
        for doc in docs:
            if "_id" not in doc:
                doc["_id"] = ObjectId()
        first = db.execute(f"SELECT coalesce(max(rid), 0) + 1 FROM {self.table}").fetchone()[0]
        db.executemany(
            f"INSERT INTO {self.table} (rid, doc) VALUES (?, ?)",
            [(first + n, bson.encode(doc)) for n, doc in enumerate(docs)],
        )
        for index in self.indexes:
            rows: list[tuple[Any, ...]] = []
            expanded = 0
            for n, doc in enumerate(docs):
                entries, more = index.entries(doc)
                expanded |= more
                rows.extend((*row, first + n) for row in entries)
            self._write_rows(db, index, rows, expanded)

    def _replace(
        self,
        db: sqlite3.Connection,
        rid: int,
        old: dict[str, Any],
        new: dict[str, Any],
        blob: bytes,
        touched: set[str] | None = None,
    ) -> None:
        """Store `new` (encoded as `blob`) over `old`; only the index entries whose keys
        changed are rewritten, and with `touched` (the top-level fields the update changed)
        only the indexes over those fields are looked at."""
        db.execute(f"UPDATE {self.table} SET doc = ? WHERE rid = ?", (blob, rid))
        for index in self.indexes:
            if touched is not None and not touched.intersection(index.roots):
                continue
            before, _ = index.entries(old)
            after, expanded = index.entries(new)
            if before != after:
                self._delete_entries(db, index, rid, before - after)
                self._write_entries(db, index, rid, after - before, expanded)

    def _delete_entries(
        self, db: sqlite3.Connection, index: _Index, rid: int, rows: set[tuple[Any, ...]]
    ) -> None:
        # Entries are found by their full key (recomputed from the document), the table's
        # primary key, so no index on rid is needed.
        match = " AND ".join(f"t{i} = ? AND v{i} = ?" for i in range(len(index.fields)))
        db.executemany(
            f"DELETE FROM {index.table} WHERE {match} AND rid = ?", [(*row, rid) for row in rows]
        )

    def _delete(self, db: sqlite3.Connection, found: list[tuple[int, dict[str, Any]]]) -> None:
        for rid, doc in found:
            db.execute(f"DELETE FROM {self.table} WHERE rid = ?", (rid,))
            for index in self.indexes:
                self._delete_entries(db, index, rid, index.entries(doc)[0])

    # --- planning --------------------------------------------------------------------------

    def _plans(
        self, filter: Mapping[str, Any], sort: Sequence[tuple[str, int]] | None
    ) -> list[_Plan]:
        """Every plan for the filter."""
        pairs, others = _conjuncts(filter)
        by_field: dict[str, list[tuple[int, _Constraint]]] = {}
        for number, (name, condition) in enumerate(pairs):
            constraint = _constraint(condition)
            if constraint is not None:
                by_field.setdefault(name, []).append((number, constraint))
        plans: list[_Plan] = []
        for index in self.indexes:
            if index.fields[0] not in by_field:
                continue
            if index.partial is not None and not _excludes_missing(by_field.get(index.partial)):
                continue  # documents without the field are not in it
            options = [by_field.get(name, [(-1, None)]) for name in index.fields]
            for combo in itertools.islice(itertools.product(*options), _MAX_PLANS):
                constraints = {
                    position: constraint
                    for position, (_, constraint) in enumerate(combo)
                    if constraint is not None
                }
                numbers = tuple(number for number, _ in combo)
                plans.append(self._plan(index, numbers, constraints, pairs, others, sort))
        return plans

    def _plan(
        self,
        index: _Index,
        numbers: tuple[int, ...],
        constraints: dict[int, _Constraint],
        pairs: list[tuple[str, Any]],
        others: list[dict[str, Any]],
        sort: Sequence[tuple[str, int]] | None,
    ) -> _Plan:
        """The plan on `index` using, per index field, the filter condition numbered in
        `numbers` (-1: none), whose constraints are `constraints`; `pairs` and `others` are
        the filter taken apart (`_conjuncts`)."""
        # The filter conditions the seek alone guarantees (a range on a multikey field does
        # not: its bounds may be met by different elements). All of them: no post-filter.
        guaranteed = {
            numbers[position]
            for position, c in constraints.items()
            if c.exact and not (c.low and c.high and index.is_multikey(position))
        }
        exact = not others and len(guaranteed) == len(pairs)
        plan = _Plan(index, constraints, exact, ordered=False, prefix=_prefix(constraints))
        plan.numbers = numbers
        if not exact:
            # What the seek does not guarantee: the other pairs, and the $or/... parts (an
            # `agent` GET's residual is its $or alone, not its store, voided and term again).
            plan.residual = {
                "$and": [
                    *({name: c} for n, (name, c) in enumerate(pairs) if n not in guaranteed),
                    *others,
                ]
            }
        plan.where_sql, plan.params = _where(index, constraints)
        if sort:
            plan.ordered, plan.order_sql = self._order(index, sort)
        return plan

    def _remembered(
        self,
        index: _Index,
        numbers: tuple[int, ...],
        multikey: int,
        filter: Mapping[str, Any],
        sort: Sequence[tuple[str, int]] | None,
    ) -> _Plan | None:
        """The plan remembered for the filter's shape, built for its values without planning
        (None if the index became multikey since, or a condition no longer suits it)."""
        if index.multikey != multikey:
            return None
        pairs, others = _conjuncts(filter)
        constraints: dict[int, _Constraint] = {}
        for position, number in enumerate(numbers):
            if number < 0:
                continue
            if number >= len(pairs) or pairs[number][0] != index.fields[position]:
                return None
            constraint = _constraint(pairs[number][1])
            if constraint is None:
                return None
            constraints[position] = constraint
        return self._plan(index, numbers, constraints, pairs, others, sort)

    @staticmethod
    def _order(index: _Index, sort: Sequence[tuple[str, int]]) -> tuple[bool, str]:
        # Index rows carry each document's own (non-array) values, so ORDER BY on them is the
        # documents' order; SQLite walks its B-tree in that order when it can.
        terms = []
        for name, direction in sort:
            if name not in index.fields:
                return False, ""
            position = index.fields.index(name)
            if index.is_multikey(position):
                return False, ""  # an array sorts by its smallest/largest element, not per entry
            word = "ASC" if direction > 0 else "DESC"
            terms.append(f"t{position} {word}, v{position} {word}")
        return True, ", ".join(terms)

    def _count(self, plan: _Plan, cap: int) -> int:
        return self._db.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {plan.index.table} WHERE {plan.where_sql}"
            " LIMIT ?)",
            (*plan.params, cap),
        ).fetchone()[0]

    def _choose(
        self, filter: Mapping[str, Any], sort: Sequence[tuple[str, int]] | None, limit: int
    ) -> _Plan | None:
        # A choice that the filter's shape alone decided (no counting) is remembered for that
        # shape: the same query with other values gets the same plan without planning again.
        # A choice made by counting is remembered for the next _RECOUNT_AFTER queries of the
        # shape only (other values may favour another plan; which plan serves a query changes
        # how fast, never what, it finds): counting took a tenth of a filtered GET's time.
        shape = (_shape(filter), tuple(sort or ()), bool(limit))
        known = self._plan_cache.get(shape)
        if known is not None:
            index, numbers, multikey, left = known
            remembered = (
                self._remembered(index, numbers, multikey, filter, sort) if left != 0 else None
            )
            if remembered is not None:
                if left is not None:
                    self._plan_cache[shape] = (index, numbers, multikey, left - 1)
                return remembered
        plan, by_shape = self._decide(filter, sort, limit)
        if plan is not None and (shape in self._plan_cache or len(self._plan_cache) < _PLAN_CACHE):
            left = None if by_shape else _RECOUNT_AFTER
            self._plan_cache[shape] = (plan.index, plan.numbers, plan.index.multikey, left)
        return plan

    def _decide(
        self, filter: Mapping[str, Any], sort: Sequence[tuple[str, int]] | None, limit: int
    ) -> tuple[_Plan | None, bool]:
        """The plan, and whether the filter's shape alone decided it."""
        plans = self._plans(filter, sort)
        if not plans:
            return None, False
        if len(plans) == 1:
            return plans[0], True
        # Only plans that seek deepest into their index are worth counting (plus, for a sorted
        # and limited query, the ones that yield its order); a fully pinned unique key wins.
        deepest = max(plan.prefix for plan in plans)
        for plan in plans:
            if (
                plan.index.unique
                and plan.prefix == len(plan.index.fields)
                and all(c.single for c in plan.constraints.values())
            ):
                return plan, True
        # A unique index pinned on every field by short lists of values ($in of ids) matches at
        # most as many documents as the lists allow: no count can beat that by much, and
        # counting the others (a boolean such as `voided` matches most of a collection) costs
        # more than the whole read. Not remembered: the bound depends on the lists' lengths.
        for plan in plans:
            if plan.index.unique and plan.prefix == len(plan.index.fields):
                bound = math.prod(len(c.keys or ()) for c in plan.constraints.values())
                if 0 < bound <= _PROBE_CAP:
                    return plan, False
        # A partial index holds only the documents that have its field, which is why it was
        # declared partial: a seek on that field by value (voids, ref_target...) is the
        # narrowest plan there is, without counting.
        for plan in plans:
            partial = plan.index.partial
            if partial is not None and plan.prefix == deepest:
                position = plan.index.fields.index(partial)
                constraint = plan.constraints.get(position)
                if position < plan.prefix and constraint is not None and constraint.keys:
                    return plan, True
        # A sorted, limited query with a plan that is exact and yields its order reads `limit`
        # entries and stops: no plan reads fewer, so none is counted. (A `since` GET counted the
        # terms index too, which gives the order but seeks only on the store: 19 ms on a store
        # of 100,000 statements, every _RECOUNT_AFTER queries, against 0.4 ms for the read.)
        if sort and limit:
            exact_in_order = [p for p in plans if p.exact and p.ordered]
            if exact_in_order:
                return max(exact_in_order, key=lambda plan: plan.prefix), True
        plans = [p for p in plans if p.prefix == deepest or (p.ordered and sort and limit)]
        if len(plans) == 1:
            return plans[0], True
        # Counted under rising caps: a plan that matches a handful of entries (a sparse or
        # partial index, a short $in list) is found in the first round, and the others are never
        # counted further than that. Each count stops as soon as it cannot win (ties still tie).
        plans.sort(key=lambda plan: -len(plan.constraints))
        counted: list[tuple[int, _Plan]] = []
        for cap in _PROBE_CAPS:
            counted = [(self._count(plan, cap), plan) for plan in plans]
            smallest = min(found for found, _ in counted)
            if smallest < cap:
                break
        if smallest >= _PROBE_CAP and sort and limit:
            # Every plan matches many entries: stream one in the requested order and stop early.
            ordered = [plan for _, plan in counted if plan.ordered]
            if ordered:
                best_ordered = max(
                    ordered, key=lambda plan: (_narrowing(plan), len(plan.constraints))
                )
                return best_ordered, False
        best = [plan for count, plan in counted if count == smallest]
        chosen = max(best, key=lambda plan: (plan.ordered, plan.exact, len(plan.constraints)))
        return chosen, False

    # --- reading ---------------------------------------------------------------------------

    def _decode(self, blob: bytes) -> dict[str, Any]:
        return bson.decode(blob, codec_options=_CODEC)

    def _scan(
        self, filter: Mapping[str, Any], sort: Sequence[tuple[str, int]] | None, limit: int
    ) -> tuple[Iterator[tuple[int, dict[str, Any]]], _Plan | None]:
        """Candidate (rid, document) pairs, and the plan that produced them (None: full scan)."""
        self._store.refresh_if_changed()
        if not self.table:
            return iter(()), None
        plan = self._choose(filter, sort, limit)
        if plan is None:
            rows = self._db.execute(f"SELECT rid, doc FROM {self.table} ORDER BY rid")
            return ((rid, self._decode(blob)) for rid, blob in rows), None
        # Where the caller stops after `limit` matches (rows come in the order wanted), the first
        # round trip fetches `limit` rows, not a chunk, even when part of the filter is left to
        # check on the documents (not exact): the plan's index narrows to candidates that
        # mostly match, so they are usually all that is read.
        wanted = limit if plan.exact or not sort or plan.ordered else 0
        return self._stream(plan, wanted), plan

    def _stream(self, plan: _Plan, first: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """`first`: how many rows the first round trip fetches (0: a whole chunk); each row
        fetched costs a seek into the documents, wanted or not."""
        # One query: the index entries in the plan's order, each joined to its document.
        order = plan.order_sql if plan.ordered else "e.rid"  # t0, v0...: only the entries'
        cursor = self._db.execute(
            f"SELECT e.rid, d.doc FROM {plan.index.table} AS e JOIN {self.table} AS d"
            f" ON d.rid = e.rid WHERE {plan.where_sql} ORDER BY {order}",
            plan.params,
        )
        seen: set[int] = set()
        chunk_size = min(first, _CHUNK) if first else _CHUNK
        try:
            while batch := cursor.fetchmany(chunk_size):
                chunk_size = _CHUNK
                for rid, blob in batch:
                    if rid not in seen:  # a multikey document has several entries
                        seen.add(rid)
                        yield rid, self._decode(blob)
        finally:
            cursor.close()

    def _matching(
        self,
        filter: Mapping[str, Any],
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> list[tuple[int, dict[str, Any]]]:
        candidates, plan = self._scan(filter, sort, limit)
        exact = plan is not None and plan.exact
        residual = plan.residual if plan is not None and plan.residual is not None else filter
        in_order = not sort or (plan is not None and plan.ordered)
        found: list[tuple[int, dict[str, Any]]] = []
        check = None if exact else matcher(residual)  # an exact plan's rows all match
        try:
            for rid, doc in candidates:
                if check is None or check(doc):
                    found.append((rid, doc))
                    if limit and in_order and len(found) >= limit:
                        break
        finally:
            close = getattr(candidates, "close", None)
            if close is not None:
                close()  # finishes the SQLite read before the caller writes
        if sort and not in_order:
            for name, direction in reversed(list(sort)):
                found.sort(
                    key=lambda item: sort_value(_get_path(item[1], name), direction < 0),
                    reverse=direction < 0,
                )
            if limit:
                found = found[:limit]
        return found

    def find(
        self,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        shape = projector(projection)
        return [shape(doc) for _, doc in self._matching(filter, sort, limit)]

    def find_one(
        self, filter: Mapping[str, Any], projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        found = self._matching(filter, None, 1)
        return project(found[0][1], projection) if found else None

    def count(self, filter: Mapping[str, Any]) -> int:
        candidates, plan = self._scan(filter, None, 0)
        if plan is not None and plan.exact:
            return self._db.execute(
                f"SELECT count(DISTINCT rid) FROM {plan.index.table} WHERE {plan.where_sql}",
                plan.params,
            ).fetchone()[0]
        residual = plan.residual if plan is not None and plan.residual is not None else filter
        check = matcher(residual)
        return sum(1 for _, doc in candidates if check(doc))

    def distinct(self, key: str, filter: Mapping[str, Any]) -> list[Any]:
        seen: dict[tuple[int, Any], Any] = {}
        for _, doc in self._matching(filter):
            for value in _values_at(doc, key):
                for element in _elements(value):
                    if element is not MISSING:
                        seen.setdefault(_distinct_key(element), element)
        return list(seen.values())

    # --- writing ---------------------------------------------------------------------------

    def insert_many(self, docs: list[dict[str, Any]]) -> list[int]:
        """Insert each document; returns the positions refused for a duplicate key. The inserted
        ones commit together."""
        refused: list[int] = []
        with self._store.write() as db:
            self._ensure_table(db)
            if len(docs) > 1:
                db.execute("SAVEPOINT bulk")
                try:
                    self._insert_all(db, docs)
                    db.execute("RELEASE bulk")
                    return refused
                except DuplicateKeyError:
                    # One at a time instead, to tell which ones were refused.
                    db.execute("ROLLBACK TO bulk")
                    db.execute("RELEASE bulk")
                    self.load_metadata()
            for position, doc in enumerate(docs):
                db.execute("SAVEPOINT one")
                try:
                    self._insert(db, doc)
                except DuplicateKeyError:
                    db.execute("ROLLBACK TO one")
                    self.load_metadata()  # e.g. a multikey flag set by the refused document
                    refused.append(position)
                db.execute("RELEASE one")
        return refused

    def update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *,
        upsert: bool = False,
        many: bool = False,
    ) -> tuple[int, dict[str, Any] | None]:
        """Apply an update to the first (or every) match; returns (matched count, the first
        document as it is after the update, or the upserted one)."""
        with self._store.write() as db:
            self._ensure_table(db)
            targets = self._matching(filter, None, 0 if many else 1)
            after: dict[str, Any] | None = None
            shallow = _shallow_fields(update)
            for rid, doc in targets:
                if shallow is not None:
                    # Top-level fields only: no deep copy, and only those fields compared.
                    new = apply_update(doc, update, inserting=False, shallow=True)
                    if any(_encoded(doc, name) != _encoded(new, name) for name in shallow):
                        self._replace(db, rid, doc, new, bson.encode(new), shallow)
                else:
                    new = apply_update(doc, update, inserting=False)
                    blob = bson.encode(new)
                    if blob != bson.encode(doc):
                        self._replace(db, rid, doc, new, blob)
                after = after or new
            if targets or not upsert:
                return len(targets), after
            seed = _upsert_seed(filter)
            if not _is_operator_dict(update):  # a replacement keeps only the filter's _id
                seed = {"_id": seed["_id"]} if "_id" in seed else {}
            new = apply_update(seed, update, inserting=True)
            if "_id" in seed and "_id" not in new:
                new["_id"] = seed["_id"]
            self._insert(db, new)
            return 0, new

    def delete_many(self, filter: Mapping[str, Any]) -> int:
        with self._store.write() as db:
            found = self._matching(filter)
            self._delete(db, found)
        return len(found)


def _metadata_changed(db: sqlite3.Connection) -> None:
    """Count a change of the collections or indexes tables, in the same transaction: other
    connections reload their metadata when this count moved (`refresh_if_changed`)."""
    db.execute(
        "INSERT INTO clock VALUES ('metadata', 1)"
        " ON CONFLICT (name) DO UPDATE SET value = value + 1"
    )


def _shallow_fields(update: Mapping[str, Any]) -> set[str] | None:
    """The top-level fields an update sets, unsets or increments, when that is all it does
    (None: a replacement, a dotted path or another operator)."""
    if not _is_operator_dict(update) or not set(update) <= {"$set", "$unset", "$inc"}:
        return None
    fields = {name for changes in update.values() for name in changes}
    return None if any("." in name for name in fields) else fields


def _encoded(doc: Mapping[str, Any], name: str) -> bytes | None:
    """A field's value as BSON stores it (None when absent): BSON equality, not Python's."""
    return bson.encode({"v": doc[name]}) if name in doc else None


def _distinct_key(value: Any) -> tuple[int, Any]:
    rank, key = _index_key(value)
    if rank in (_OBJECT, _UNKEYED):
        return (rank, repr(value))
    return (rank, key)


# --- data directories written by earlier versions ------------------------------------------------

_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def import_legacy_layout(store: EmbeddedStore, directory: Path) -> dict[str, int]:
    """Copy a database written by earlier versions of the LRS (the `litemongo` layout: one
    SQLite file per collection, table `documents` of BSON documents) into `store`, documents
    unchanged; returns the count per collection. The caller keeps the old directory."""
    counts: dict[str, int] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.endswith(_SQLITE_SIDECARS):
            continue
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            has_documents = source.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'documents'"
            ).fetchone()
            if not has_documents:
                continue
            collection = store.collection(path.name)
            counts[path.name] = 0
            rows = source.execute("SELECT doc FROM documents ORDER BY rowid")
            while chunk := rows.fetchmany(500):
                docs = [bson.decode(blob, codec_options=_CODEC) for (blob,) in chunk]
                refused = collection.insert_many(docs)
                counts[path.name] += len(docs) - len(refused)
        finally:
            source.close()
    return counts
