"""Request parameters: single-valued query parameters, integers, and path segments that hold
IRIs.

Integers (`limit`, `Last-Event-ID`, Content-Length, ...) go through one strict parser: ASCII
digits only (`str.isdigit` accepts "²", which `int` refuses) and at most a signed 64-bit value
(MongoDB holds nothing larger).

Path segments that hold IRIs. Clients URL-encode them (`/` as %2F); routing sees the decoded
path, where an IRI's slashes are indistinguishable from the path's own, so these routes read
the raw path and decode each segment themselves."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import unquote

from fastapi import Request

from lrs.api.errors import bad_request, not_found
from lrs.xapi import jsontext

INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def nonnegative_int(text: str) -> int | None:
    """The value of a string of ASCII digits that fits a signed 64-bit integer, else None."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


def int_param(text: str, name: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """A non-negative integer parameter or header in [minimum, maximum]; 400 otherwise."""
    value = nonnegative_int(text)
    if value is None or not minimum <= value <= maximum:
        raise bad_request(
            f"{name} must be an integer from {minimum} to {maximum}, not {text[:40]!r}"
        )
    return value


def single_params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters as a dict; 400 for a repeated or unknown one."""
    items = request.query_params.multi_items()
    params = dict(items)
    if len(params) != len(items):
        raise bad_request("a query parameter is repeated")
    unknown = set(params) - allowed
    if unknown:
        raise bad_request(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return params


def parse_json_body(raw: bytes, what: str, *, int64: bool = False) -> Any:
    """A JSON request body through the strict parser (lrs.xapi.jsontext); 400 if refused.
    `int64` for bodies stored as BSON, which holds no larger integer."""
    try:
        return jsontext.loads(raw, what, int64=int64)
    except jsontext.JSONTextError as exc:
        raise bad_request(str(exc)) from exc


def encode_cursor(value: list[Any]) -> str:
    """A paging cursor: the JSON of the position, base64url without padding."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode().rstrip("=")


def decode_cursor(token: str, shape: tuple[type, ...]) -> list[Any]:
    """The position a cursor token holds, which must be a JSON array of values of `shape`
    (integers within 0..2^63-1); 400 for anything this LRS did not issue."""
    refused = bad_request("the cursor parameter is not one this LRS issued")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = jsontext.loads(raw, "the cursor parameter")
    except (ValueError, binascii.Error) as exc:
        raise refused from exc
    if not isinstance(value, list) or len(value) != len(shape):
        raise refused
    for item, kind in zip(value, shape, strict=True):
        if type(item) is not kind or (kind is int and not 0 <= item <= INT64_MAX):
            raise refused
    return value


def raw_segments(request: Request, prefix: str) -> list[str]:
    """The decoded segments after `prefix` (e.g. "/courses/"), split on the raw slashes."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if not path.startswith(prefix):
        raise not_found()
    rest = path[len(prefix) :]
    return [unquote(segment) for segment in rest.split("/")] if rest else []
