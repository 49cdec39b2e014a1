"""Statement comparison: when are two Statements "the same" Statement?

Used when a Statement id that the LRS already holds is sent again (same Statement: no-op,
different Statement: 409 Conflict; Communication 2.1.1.s2.b3 / 2.1.2.s2.b5, IEEE 9274.1.1
4.1.6.1) and to check a signed Statement against its JWS payload (Data 2.6.s5.b3.b2, IEEE
9274.1.1 4.2.6).

xAPI 1.0.3, Data 2.3.1 "Statement Comparison Requirements" (2.3.1.s9):
  * differences which could have been caused by the exceptions to Statement immutability MUST
    be ignored;
  * differences in the serialization of any other property MUST NOT be ignored.

The exceptions (Data 2.3.1.b1-b7) and what this module does with each, in 1.0.x mode:
  b1  properties the LRS may assign while processing: "id", "authority", "stored",
      "timestamp", "version".
        - authority, stored, version: always ignored (the LRS overwrites authority and stored,
          and fills in version).
        - id, timestamp: the LRS only assigns them when they are missing, so they are ignored
          when one side lacks them; when both sides have them they must agree (id as a UUID,
          case-insensitively; timestamp as an instant, see b4).
  b2  Activity Definitions are not part of the Statement: every Activity's "definition" is
      ignored (Statement object, SubStatement object, context activities).
  b3  the Verb's "display" is not part of the Statement: ignored.
  b4  serialization of timestamps: "timestamp" values are compared as instants (time zone and
      notation do not matter). Data 4.5.s1.b7 lets the LRS truncate or round a timestamp to
      milliseconds, so two instants are the same when they agree after truncating both to
      milliseconds or after rounding both to milliseconds.
  b5  unordered lists: the "member" list of a Group (anywhere: actor, object, instructor,
      team, context groups) is compared as a multiset.
  b6  attachments are not part of the Statement: "attachments" is ignored (this also makes a
      signed Statement comparable with its payload, which predates the signature attachment).
  b7  case-insensitive properties: the scheme and domain of an mbox, mbox_sha1sum (hex),
      UUIDs (Statement id, StatementRef ids, registration), language tags ("language"), and in
      every IRI the scheme, the host and the hex digits of percent-encodings (RFC 3987
      5.3.2.1, which Data 3.1.s2.b1 allows).
  b8  (explicitly NOT an exception) result "duration" is compared as a string, except that
      Data 4.6.s1.b5 excludes precision beyond 0.01 s from comparisons: the fraction of the
      seconds is truncated to two digits (trailing zeros dropped) before comparing.

Other differences that LRS processing causes and that are therefore ignored:
  * an omitted "objectType" equals its default: "Agent" for an Agent (Data 2.4.2.1 table),
    "Activity" for a Statement object or a context activity (IEEE 9274.1.1 4.2.2.3: "treat
    any Object without an objectType as though the value was Activity");
  * a single Activity in contextActivities equals a list holding only that Activity (IEEE
    9274.1.1 4.2.4.2: the LRS shall return every contextActivities value as an array);
  * numbers are compared at IEEE 754 single precision (Data 2.2.s4.b3: the LRS stores numbers
    with at least that precision); a boolean is never equal to a number.

xAPI 2.0 (IEEE 9274.1.1, 4.2 "Statement Immutability") lists what the LRS "shall specifically
not consider for equivalence": case (upper vs. lower), id, order of any Group members,
authority, stored, timestamp, version, any attachments, any referenced Activity Definitions;
and keeps Verb except display, and Duration at 0.01 s. So in 2.0 mode, in addition to the
rules above: id and timestamp are ignored outright, and every string (values, and the keys of
extension and language maps) is compared case-insensitively (str.casefold).
"""

from __future__ import annotations

import json
import re
import struct
from datetime import datetime, timedelta
from typing import Any

from lrs.xapi.timestamps import TimestampError, parse_timestamp

__all__ = ["statements_equivalent"]

# Top-level properties that are never compared (Data 2.3.1.b1 and b6; IEEE 4.2).
_ALWAYS_IGNORED = frozenset({"authority", "stored", "version", "attachments"})

_IRI_HEAD = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):(?P<rest>.*)$", re.DOTALL)
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_DURATION_SECONDS = re.compile(r"(?P<int>\d+)(?P<sep>[.,])(?P<frac>\d+)S$")


class _Rules:
    __slots__ = ("fold_case", "ignore_id", "ignore_timestamp")

    def __init__(self, xapi_version: str) -> None:
        legacy = xapi_version.startswith("1.")
        self.fold_case = not legacy
        self.ignore_id = not legacy
        self.ignore_timestamp = not legacy


def statements_equivalent(a: dict, b: dict, *, xapi_version: str = "2.0.0") -> bool:
    """True when `a` and `b` are the same Statement under the xAPI comparison rules.

    `xapi_version` selects the rule set: "1.0.x" for xAPI 1.0.3 (Data 2.3.1), anything else
    for xAPI 2.0 (IEEE 9274.1.1 4.2). See the module docstring for every rule.
    Neither argument is modified.
    """
    if not isinstance(a, dict) or not isinstance(b, dict):
        return a == b
    rules = _Rules(xapi_version)
    if not rules.ignore_id and not _ids_compatible(a.get("id"), b.get("id")):
        return False
    if not rules.ignore_timestamp and not _timestamps_compatible(a, b):
        return False
    return _finish(_statement(a, top=True), rules) == _finish(_statement(b, top=True), rules)


# --- properties compared outside the canonical form ------------------------------------------


def _ids_compatible(x: Any, y: Any) -> bool:
    if x is None or y is None:  # the LRS assigns a missing id (Data 2.4.1.s2.b1)
        return True
    if isinstance(x, str) and isinstance(y, str):
        return x.lower() == y.lower()
    return x == y


def _timestamps_compatible(a: dict, b: dict) -> bool:
    if not _same_instant(a.get("timestamp"), b.get("timestamp")):
        return False
    obj_a, obj_b = a.get("object"), b.get("object")
    if (
        isinstance(obj_a, dict)
        and isinstance(obj_b, dict)
        and obj_a.get("objectType") == "SubStatement"
        and obj_b.get("objectType") == "SubStatement"
    ):
        return _same_instant(obj_a.get("timestamp"), obj_b.get("timestamp"))
    return True


def _same_instant(x: Any, y: Any) -> bool:
    if x is None or y is None:  # the LRS fills in a missing timestamp
        return True
    try:
        tx, ty = parse_timestamp(x), parse_timestamp(y)
    except TimestampError:
        return x == y
    return _truncate_ms(tx) == _truncate_ms(ty) or _round_ms(tx) == _round_ms(ty)


def _truncate_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _round_ms(moment: datetime) -> datetime:
    return _truncate_ms(moment + timedelta(microseconds=500))


# --- structural normalization ----------------------------------------------------------------


def _statement(stmt: dict, *, top: bool) -> dict:
    out: dict[str, Any] = {}
    for key, value in stmt.items():
        if key == "timestamp" or (top and (key == "id" or key in _ALWAYS_IGNORED)):
            continue
        if not top and key == "attachments":
            continue
        if key == "actor":
            out[key] = _agent_or_group(value)
        elif key == "verb":
            out[key] = _verb(value)
        elif key == "object":
            out[key] = _object(value)
        elif key == "result":
            out[key] = _result(value)
        elif key == "context":
            out[key] = _context(value)
        else:
            out[key] = value
    return out


def _agent_or_group(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = dict(value)
    out.setdefault("objectType", "Agent")
    if isinstance(out.get("mbox"), str):
        out["mbox"] = _mbox(out["mbox"])
    if isinstance(out.get("mbox_sha1sum"), str):
        out["mbox_sha1sum"] = out["mbox_sha1sum"].lower()
    if isinstance(out.get("openid"), str):
        out["openid"] = _iri(out["openid"])
    account = out.get("account")
    if isinstance(account, dict) and isinstance(account.get("homePage"), str):
        out["account"] = {**account, "homePage": _iri(account["homePage"])}
    members = out.get("member")
    if isinstance(members, list):
        out["member"] = _Unordered(_agent_or_group(m) for m in members)
    return out


def _verb(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if k != "display"}
    if isinstance(out.get("id"), str):
        out["id"] = _iri(out["id"])
    return out


def _activity(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if k != "definition"}
    out.setdefault("objectType", "Activity")
    if isinstance(out.get("id"), str):
        out["id"] = _iri(out["id"])
    return out


def _statement_ref(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if isinstance(out.get("id"), str):
        out["id"] = out["id"].lower()
    return out


def _object(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kind = value.get("objectType", "Activity")
    if kind in ("Agent", "Group"):
        return _agent_or_group(value)
    if kind == "StatementRef":
        return _statement_ref(value)
    if kind == "SubStatement":
        return _statement(value, top=False)
    return _activity(value)


def _result(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if isinstance(out.get("duration"), str):
        out["duration"] = _duration(out["duration"])
    if "extensions" in out:
        out["extensions"] = _extensions(out["extensions"])
    return out


def _context(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if isinstance(out.get("registration"), str):
        out["registration"] = out["registration"].lower()
    if isinstance(out.get("language"), str):
        out["language"] = out["language"].lower()  # RFC 5646 tags are case-insensitive
    for key in ("instructor", "team"):
        if key in out:
            out[key] = _agent_or_group(out[key])
    if "statement" in out:
        out["statement"] = _statement_ref(out["statement"])
    if "extensions" in out:
        out["extensions"] = _extensions(out["extensions"])
    activities = out.get("contextActivities")
    if isinstance(activities, dict):
        out["contextActivities"] = {
            kind: [_activity(a) for a in (acts if isinstance(acts, list) else [acts])]
            for kind, acts in activities.items()
        }
    for key, inner in (("contextAgents", "agent"), ("contextGroups", "group")):
        entries = out.get(key)
        if isinstance(entries, list):
            out[key] = [_context_actor(entry, inner) for entry in entries]
    return out


def _context_actor(entry: Any, inner: str) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = dict(entry)
    if inner in out:
        out[inner] = _agent_or_group(out[inner])
    types = out.get("relevantTypes")
    if isinstance(types, list):
        out["relevantTypes"] = [_iri(t) if isinstance(t, str) else t for t in types]
    return out


def _extensions(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {_iri(k): v for k, v in value.items()}


# --- scalar normalization --------------------------------------------------------------------


def _mbox(value: str) -> str:
    """mailto: scheme and e-mail domain are case-insensitive (Data 2.3.1.b7, 2.4.2.3.s4.b1)."""
    scheme, sep, address = value.partition(":")
    if not sep:
        return value
    local, at, domain = address.rpartition("@")
    if not at:
        return scheme.lower() + ":" + address
    return f"{scheme.lower()}:{local}@{domain.lower()}"


def _iri(value: str) -> str:
    """RFC 3987 5.3.2.1 case normalization: scheme, host and percent-encoding hex digits."""
    match = _IRI_HEAD.match(value)
    if not match:
        return value
    scheme, rest = match["scheme"].lower(), match["rest"]
    if rest.startswith("//"):
        end = len(rest)
        for stop in "/?#":
            found = rest.find(stop, 2)
            if found != -1:
                end = min(end, found)
        authority, tail = rest[2:end], rest[end:]
        userinfo, at, hostport = authority.rpartition("@")
        rest = "//" + userinfo + at + hostport.lower() + tail
    rest = _PCT.sub(lambda m: m.group(0).upper(), rest)
    return f"{scheme}:{rest}"


def _duration(value: str) -> str:
    """Drop precision beyond 0.01 s (Data 4.6.s1.b5); otherwise keep the string as sent."""
    match = _DURATION_SECONDS.search(value)
    if not match:
        return value
    frac = match["frac"][:2].rstrip("0")
    seconds = match["int"] + (match["sep"] + frac if frac else "") + "S"
    return value[: match.start()] + seconds


class _Unordered(list):
    """Marks a list whose order does not matter (Group members)."""


def _finish(value: Any, rules: _Rules) -> Any:
    """Canonical form: numbers tagged (never equal to booleans) and rounded to float32,
    unordered lists sorted, strings and keys case-folded in 2.0 mode."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return ("number", _float32(value))
    if isinstance(value, str):
        return value.casefold() if rules.fold_case else value
    if isinstance(value, _Unordered):
        items = [_finish(item, rules) for item in value]
        return ("unordered", sorted(items, key=_sort_key))
    if isinstance(value, list):
        return [_finish(item, rules) for item in value]
    if isinstance(value, dict):
        fold = rules.fold_case
        return {
            (k.casefold() if fold and isinstance(k, str) else k): _finish(v, rules)
            for k, v in value.items()
        }
    return value


def _float32(number: int | float) -> float | int:
    try:
        return struct.unpack("<f", struct.pack("<f", number))[0]
    except (OverflowError, struct.error):
        return number


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, default=str)
