"""The one strict JSON parser for everything that comes in: request bodies, JSON-valued query
parameters (`agent`, `learner`), paging cursors, course definitions and admin bodies.

Beyond `json.loads` it refuses, with `JSONTextError` (the API answers 400):
- nesting deeper than `MAX_DEPTH` (deeply nested input would otherwise exhaust the recursion
  limit here or in any later recursive step, and MongoDB refuses documents nested beyond 100);
- numbers that are not finite (`NaN`, `Infinity`, and `1e400`, which overflows to infinity and
  could never be served back as JSON);
- an object that uses the same key twice (Data 2.2.s2.b2: a property is used at most once);
- text that is not Unicode (a lone surrogate escape such as "\\ud800"), unless the caller keeps
  such text as it came (documents are stored byte for byte);
- with `int64`, integers that do not fit a signed 64-bit integer, for values stored as BSON.

Speed matters (every statement batch goes through here): orjson parses (it refuses, as this
module must, NaN, Infinity, numbers that overflow, invalid UTF-8 and lone surrogate escapes, and
takes about a third of the standard library's time), and one pass over the parsed containers
checks the depth and counts the object members. Duplicate keys are found by comparing that count
with the `"key":` separators of the raw text, which are never fewer than the members; only when
the two differ is the text parsed again with a hook that finds the duplicate (or proves there is
none). orjson reads an integer beyond 64 bits as a float, so text with a run of 19 digits or
more (and text orjson refuses, whose error the standard library then names) goes to the
standard library's parser, with hooks that check numbers.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# Deep enough for any statement (a SubStatement's context activity definition's extension is
# about 8 levels down) with room for nested extension values and documents.
MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Whitespace JSON allows between tokens (removed for the member count below).
_WHITESPACE = b" \t\n\r"
# A \u escape of a UTF-16 surrogate (D800-DFFF); a hit only triggers the exact check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_CONTAINERS = (dict, list)


def compact_json(value: Any) -> str:
    """`value` as compact JSON text (no whitespace, non-ASCII characters as they are), written
    by orjson: a statement's text is written once per statement stored, and orjson takes about
    a ninth of the standard library's time. What orjson refuses (integers beyond 64 bits, a
    lone surrogate: nothing a validated statement holds) the standard library writes. The two
    differ only in how some floats are spelled (0.00001 against 1e-05), never in value."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def compact_json_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON, as `compact_json` writes it (a progress record is written
    once per change and per SSE client). What orjson refuses the standard library writes with
    non-ASCII characters escaped, so that the text is UTF-8 even with a lone surrogate. A
    `JSONText` inside is written as its text."""
    try:
        return orjson.dumps(value, default=_as_fragment)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), default=_as_parsed).encode()


class JSONText:
    """A value already written as JSON (e.g. a progress record's item list, as stored), which
    `compact_json_bytes` writes out as is: neither parsed nor encoded again, which for a list
    of 150 items took 66 us where writing the text takes 1."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JSONText) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"JSONText({self.text[:60]!r})"


def _as_fragment(value: Any) -> Any:
    if isinstance(value, JSONText):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _as_parsed(value: Any) -> Any:
    if isinstance(value, JSONText):
        return json.loads(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JSONTextError(ValueError):
    """The input is not acceptable JSON; the message says why and names the input."""


def loads(
    raw: bytes | str, what: str, *, int64: bool = False, lone_surrogates: bool = False
) -> Any:
    """Parse `raw` (UTF-8 bytes or text) strictly; `what` names it in error messages."""
    if isinstance(raw, str):
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JSONTextError(f"{what} is not valid Unicode text") from exc
    else:
        data = bytes(raw)
    value = _orjson_value(data)
    if value is _REFUSED:
        # Beyond what orjson reads exactly, or refused: the standard library decides (and names
        # the fault), as it did for everything before orjson parsed here.
        value = _standard_value(data, what, int64=int64, lone_surrogates=lone_surrogates)
    members = _members_within_depth(value, what)
    if members and members != _member_separators(data):
        _find_duplicate_key(data.decode("utf-8"), what)
    return value


_REFUSED: Any = object()
# Every digit as "0": a run of 19 of them may be an integer beyond 64 bits, which orjson would
# make a float. (A regular expression for the run took ten times as long as this.)
_DIGITS_AS_ZERO = bytes(ord("0") if ord("0") <= b <= ord("9") else b for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def _long_digit_run(data: bytes) -> bool:
    return _LONG_DIGIT_RUN in data.translate(_DIGITS_AS_ZERO)


def _orjson_value(data: bytes) -> Any:
    """orjson's value of `data`, or `_REFUSED`. What orjson accepts here the standard library
    parses to the same value; it refuses lone surrogates, so no check for them is needed."""
    if _long_digit_run(data):
        return _REFUSED
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _REFUSED


def _standard_value(data: bytes, what: str, *, int64: bool, lone_surrogates: bool) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONTextError(f"{what} is not valid UTF-8 text") from exc
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_int64 if int64 else None,
        )
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except ValueError as exc:
        raise JSONTextError(f"{what} is not valid JSON: {exc}") from exc
    if not lone_surrogates and _SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JSONTextError(
                f"{what} is not valid Unicode text: it holds a lone surrogate escape"
            ) from exc
    return value


def parse_stored(text: str) -> Any:
    """Parse JSON text the LRS wrote itself (a stored statement): valid, so no checks; orjson
    where it reads the text exactly (no integer beyond 64 bits, no lone surrogate), else the
    standard library."""
    try:
        value = _orjson_value(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, written as it came
        value = _REFUSED
    return json.loads(text) if value is _REFUSED else value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"the number {literal[:40]} is too large to represent")
    return number


def _int64(literal: str) -> int:
    number = int(literal)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"the integer {literal[:40]} does not fit in 64 bits")
    return number


def _too_deep(what: str) -> JSONTextError:
    return JSONTextError(f"{what} is nested more than {MAX_DEPTH} levels deep")


def _members_within_depth(value: Any, what: str) -> int:
    """Walk the containers level by level, refusing more than MAX_DEPTH levels; returns the
    number of object members. (Written for speed: it sees every value of every request.)"""
    members = 0
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    object_type, array_type = dict, list
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep(what)
        below: list[Any] = []
        keep = below.append
        for node in level:
            if type(node) is object_type:
                members += len(node)
                node = node.values()
            for item in node:
                kind = type(item)
                if kind is object_type or kind is array_type:
                    keep(item)
        level = below
    return members


def _member_separators(data: bytes) -> int:
    """How many `"key":` separators the text can hold at most: every member's key ends with a
    quote followed (after optional whitespace) by a colon, so with whitespace removed each
    member adds one `":`. Text inside strings can only add more, so when the count equals the
    parsed members, no key was used twice."""
    return data.translate(None, _WHITESPACE).count(b'":')


def _find_duplicate_key(text: str, what: str) -> None:
    """Parse again with a hook that sees every object's members (the rare slow path)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(items)
        if len(result) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise JSONTextError(
                        f"{what}: the property {json.dumps(key)} is used more than once in an "
                        "object"
                    )
                seen.add(key)
        return result

    json.loads(text, parse_constant=_reject_constant, object_pairs_hook=pairs)
