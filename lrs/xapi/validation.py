"""Validation of the xAPI Statement data model (xAPI 1.0.x and 2.0.0 / IEEE 9274.1.1).

Everything works on the raw JSON-decoded values (dict, list, str, int, float, bool, None), so a
request body can be checked before anything else looks at it. The first violation found is
raised as a :class:`StatementValidationError` whose ``path`` names the offending field, e.g.
``context.contextActivities.parent[0].id``. Keys of language maps and extensions, which are
data rather than property names, are shown in brackets: ``verb.display["en_US"]``.

Spec references in comments use the section numbers of xAPI 1.0.3 Part Two ("Data") and
Part Three ("Communication"), and of IEEE 9274.1.1 ("2.0") for what version 2.0.0 adds.

No value is ever traversed recursively beyond the fixed nesting of the data model (a
SubStatement holds no SubStatement, a Group holds only Agents, extension values are not
inspected), so arbitrarily deep input cannot exhaust the stack.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping

import orjson

from lrs.xapi.timestamps import parse_timestamp

__all__ = [
    "StatementValidationError",
    "is_iri",
    "is_iso8601_duration",
    "is_language_tag",
    "is_uuid",
    "reject_duplicate_keys",
    "validate_agent",
    "validate_statement",
]

VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
SIGNATURE_USAGE_TYPE = "http://adlnet.gov/expapi/attachments/signature"

INTERACTION_TYPES = frozenset(
    {
        "true-false",
        "choice",
        "fill-in",
        "long-fill-in",
        "matching",
        "performance",
        "sequencing",
        "likert",
        "numeric",
        "other",
    }
)
COMPONENT_LISTS = ("choices", "scale", "source", "target", "steps")
# Data 2.4.4.1 "Interaction Components": the supported component list(s) per interactionType.
ALLOWED_COMPONENT_LISTS: Mapping[str, frozenset[str]] = {
    "choice": frozenset({"choices"}),
    "sequencing": frozenset({"choices"}),
    "likert": frozenset({"scale"}),
    "matching": frozenset({"source", "target"}),
    "performance": frozenset({"steps"}),
    "true-false": frozenset(),
    "fill-in": frozenset(),
    "long-fill-in": frozenset(),
    "numeric": frozenset(),
    "other": frozenset(),
}

IFI_KEYS = ("mbox", "mbox_sha1sum", "openid", "account")
CONTEXT_ACTIVITY_KEYS = ("parent", "grouping", "category", "other")
OBJECT_TYPES = ("Activity", "Agent", "Group", "SubStatement", "StatementRef")

_STATEMENT_KEYS = frozenset(
    {
        "id",
        "actor",
        "verb",
        "object",
        "result",
        "context",
        "timestamp",
        "stored",
        "authority",
        "version",
        "attachments",
    }
)
# Data 2.4.4.3: "A SubStatement MUST NOT have the "id", "stored", "version" or "authority"
# properties."
_SUBSTATEMENT_FORBIDDEN = ("id", "stored", "version", "authority")
_SUBSTATEMENT_KEYS = (_STATEMENT_KEYS - frozenset(_SUBSTATEMENT_FORBIDDEN)) | {"objectType"}
_AGENT_KEYS = frozenset({"objectType", "name", *IFI_KEYS})
_GROUP_KEYS = _AGENT_KEYS | {"member"}
_ACCOUNT_KEYS = frozenset({"homePage", "name"})
_VERB_KEYS = frozenset({"id", "display"})
_ACTIVITY_KEYS = frozenset({"objectType", "id", "definition"})
_DEFINITION_KEYS = frozenset(
    {
        "name",
        "description",
        "type",
        "moreInfo",
        "extensions",
        "interactionType",
        "correctResponsesPattern",
        *COMPONENT_LISTS,
    }
)
_COMPONENT_KEYS = frozenset({"id", "description"})
_STATEMENT_REF_KEYS = frozenset({"objectType", "id"})
_RESULT_KEYS = frozenset({"score", "success", "completion", "response", "duration", "extensions"})
_SCORE_KEYS = frozenset({"scaled", "raw", "min", "max"})
_CONTEXT_KEYS_1 = frozenset(
    {
        "registration",
        "instructor",
        "team",
        "contextActivities",
        "revision",
        "platform",
        "language",
        "statement",
        "extensions",
    }
)
_CONTEXT_KEYS_2_ONLY = frozenset({"contextAgents", "contextGroups"})
_CONTEXT_KEYS_2 = _CONTEXT_KEYS_1 | _CONTEXT_KEYS_2_ONLY
_CONTEXT_AGENT_KEYS = frozenset({"objectType", "agent", "relevantTypes"})
_CONTEXT_GROUP_KEYS = frozenset({"objectType", "group", "relevantTypes"})
_ATTACHMENT_KEYS = frozenset(
    {"usageType", "display", "description", "contentType", "length", "sha2", "fileUrl"}
)


class StatementValidationError(ValueError):
    """A Statement (or part of one) violates the xAPI data model.

    ``path`` is the dotted/indexed location of the offending value ("" for the value itself),
    ``message`` says what is wrong with it.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __reduce__(self) -> tuple[type[StatementValidationError], tuple[str, str]]:
        return (type(self), (self.path, self.message))


# --------------------------------------------------------------------------------------------
# Format predicates
# --------------------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid(value: object) -> bool:
    """A UUID in the standard string form (8-4-4-4-12 hex digits, either case).

    Data 2.4.1 / 4.4: "UUIDs MUST be in the standard string form. It is recommended variant 2
    in RFC 4122 is used." The variant is only recommended (the spec's own example
    12345678-1234-5678-1234-567812345678 is not RFC 4122 variant), so it is not enforced.
    """
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*", re.ASCII)
_HEX = frozenset("0123456789abcdefABCDEF")
_ASCII_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")


def _is_ucschar(cp: int) -> bool:
    # RFC 3987 ucschar
    return (
        0xA0 <= cp <= 0xD7FF
        or 0xF900 <= cp <= 0xFDCF
        or 0xFDF0 <= cp <= 0xFFEF
        or (0x10000 <= cp <= 0xEFFFD and (cp & 0xFFFF) <= 0xFFFD)
    )


def _is_iprivate(cp: int) -> bool:
    # RFC 3987 iprivate (allowed in the query component only)
    return 0xE000 <= cp <= 0xF8FF or 0xF0000 <= cp <= 0xFFFFD or 0x100000 <= cp <= 0x10FFFD


_ASCII_RUNS: dict[frozenset[str], re.Pattern[str]] = {}


def _ascii_run(extra: frozenset[str]) -> re.Pattern[str]:
    """The ASCII text `_valid_chars` accepts, as one pattern (most IRIs are ASCII)."""
    pattern = _ASCII_RUNS.get(extra)
    if pattern is None:
        allowed = "".join(sorted(_ASCII_UNRESERVED | _SUB_DELIMS | extra))
        pattern = re.compile(r"(?:[" + re.escape(allowed) + r"]|%[0-9A-Fa-f]{2})*", re.ASCII)
        _ASCII_RUNS[extra] = pattern
    return pattern


def _valid_chars(text: str, extra: frozenset[str], *, private: bool = False) -> bool:
    """Every character is iunreserved, a sub-delim, in ``extra`` or part of a %XX escape."""
    if text.isascii():  # no ucschar or iprivate can occur: the pattern decides
        return _ascii_run(extra).fullmatch(text) is not None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            if i + 2 >= n or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                return False
            i += 3
            continue
        if not (ch in _ASCII_UNRESERVED or ch in _SUB_DELIMS or ch in extra):
            cp = ord(ch)
            if cp < 0x80 or not (_is_ucschar(cp) or (private and _is_iprivate(cp))):
                return False
        i += 1
    return True


_PCHAR_EXTRA = frozenset(":@/")
_QUERY_EXTRA = frozenset(":@/?")
_USERINFO_EXTRA = frozenset(":")
_NO_EXTRA: frozenset[str] = frozenset()


def _valid_authority(authority: str) -> bool:
    """RFC 3987 iauthority: [ iuserinfo "@" ] ihost [ ":" port ]."""
    userinfo, at, hostport = authority.rpartition("@")
    if at and not _valid_chars(userinfo, _USERINFO_EXTRA):
        return False
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return False
        literal, rest = hostport[1:end], hostport[end + 1 :]
        if literal[:1] in ("v", "V"):  # IPvFuture
            version, dot, tail = literal[1:].partition(".")
            if not (version and all(c in _HEX for c in version) and dot and tail):
                return False
            if not all(c in _ASCII_UNRESERVED or c in _SUB_DELIMS or c == ":" for c in tail):
                return False
        else:
            if "%" in literal:  # zone identifiers are not part of RFC 3987
                return False
            try:
                ipaddress.IPv6Address(literal)
            except ValueError:
                return False
        if rest and not rest.startswith(":"):
            return False
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
        if not _valid_chars(host, _NO_EXTRA):
            return False
    return all("0" <= c <= "9" for c in port)


def is_iri(value: object) -> bool:
    """An absolute IRI (RFC 3987): a scheme, ":", then only characters an IRI may contain.

    Data 2.2.s4.b1: the LRS MUST reject values that are not format-following, including the
    empty string, and IRI values without a scheme; relative references are not IRIs.
    The check is syntactic (RFC 3987 character classes, percent-escapes, authority shape).
    """
    # The same ids (verbs, activities, extension keys) come again and again: remembered.
    return isinstance(value, str) and _is_iri(value)


@functools.lru_cache(maxsize=65536)
def _is_iri(value: str) -> bool:
    colon = value.find(":")
    if colon <= 0 or _SCHEME.fullmatch(value[:colon]) is None:
        return False
    rest = value[colon + 1 :]
    rest, hash_sign, fragment = rest.partition("#")
    if hash_sign and not _valid_chars(fragment, _QUERY_EXTRA):
        return False
    rest, question, query = rest.partition("?")
    if question and not _valid_chars(query, _QUERY_EXTRA, private=True):
        return False
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        authority, path = (rest[2:], "") if slash < 0 else (rest[2:slash], rest[slash:])
        if not _valid_authority(authority):
            return False
    else:
        path = rest
    return _valid_chars(path, _PCHAR_EXTRA)


def _is_uri(value: object) -> bool:
    """An absolute URI: an IRI restricted to ASCII (RFC 3986)."""
    return isinstance(value, str) and value.isascii() and is_iri(value)


def _is_mailto_iri(value: object) -> bool:
    """``mailto:`` followed by one e-mail address (Data 2.4.2.3: "mailto:email address")."""
    if not isinstance(value, str) or not value.startswith("mailto:"):
        return False
    address = value[len("mailto:") :]
    local, at, domain = address.partition("@")
    if not at or not local or not domain or "@" in domain or "?" in address or "#" in address:
        return False
    return is_iri(value)


# RFC 5646 section 2.1 ABNF (case-insensitive), with the variants and extensions captured so
# that the "at most once" rules of sections 2.2.5 and 2.2.6 can be checked.
_LANGTAG = re.compile(
    r"""
    (?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4}|[a-z]{5,8})
    (?:-[a-z]{4})?                                  # script
    (?:-(?:[a-z]{2}|[0-9]{3}))?                     # region
    (?P<variants>(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*)
    (?P<extensions>(?:-[a-wyz0-9](?:-[a-z0-9]{2,8})+)*)
    (?:-x(?:-[a-z0-9]{1,8})+)?                      # privateuse
    """,
    re.IGNORECASE | re.ASCII | re.VERBOSE,
)
_PRIVATEUSE = re.compile(r"x(?:-[a-z0-9]{1,8})+", re.IGNORECASE | re.ASCII)
_GRANDFATHERED = frozenset(
    tag.lower()
    for tag in (
        "en-GB-oed",
        "i-ami",
        "i-bnn",
        "i-default",
        "i-enochian",
        "i-hak",
        "i-klingon",
        "i-lux",
        "i-mingo",
        "i-navajo",
        "i-pwn",
        "i-tao",
        "i-tay",
        "i-tsu",
        "sgn-BE-FR",
        "sgn-BE-NL",
        "sgn-CH-DE",
        "art-lojban",
        "cel-gaulish",
        "no-bok",
        "no-nyn",
        "zh-guoyu",
        "zh-hakka",
        "zh-min",
        "zh-min-nan",
        "zh-xiang",
    )
)


def is_language_tag(value: object) -> bool:
    """An RFC 5646 well-formed language tag (Data 2.2.s4.b2, 4.2).

    Checks the ABNF of RFC 5646 section 2.1 (including private-use and grandfathered tags) and
    that no variant and no extension singleton appears twice (sections 2.2.5, 2.2.6). Subtags
    are not looked up in the IANA registry.
    """
    return isinstance(value, str) and _is_language_tag(value)


@functools.lru_cache(maxsize=4096)
def _is_language_tag(value: str) -> bool:
    if not value.isascii():
        return False
    if value.lower() in _GRANDFATHERED or _PRIVATEUSE.fullmatch(value):
        return True
    match = _LANGTAG.fullmatch(value)
    if match is None:
        return False
    variants = [v.lower() for v in match["variants"].split("-") if v]
    if len(variants) != len(set(variants)):
        return False
    singletons = [s.lower() for s in match["extensions"].split("-") if len(s) == 1]
    return len(singletons) == len(set(singletons))


_NUM = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION = re.compile(
    rf"""
    P(?:
        (?P<weeks>{_NUM})W
      | (?:(?P<years>{_NUM})Y)?(?:(?P<months>{_NUM})M)?(?:(?P<days>{_NUM})D)?
        (?:T(?:(?P<hours>{_NUM})H)?(?:(?P<minutes>{_NUM})M)?(?:(?P<seconds>{_NUM})S)?)?
    )
    """,
    re.VERBOSE | re.ASCII,
)
_DURATION_FIELDS = ("years", "months", "days", "hours", "minutes", "seconds")


def is_iso8601_duration(value: object) -> bool:
    """An ISO 8601:2004 section 4.4.3.2 duration: PnYnMnDTnHnMnS or PnW (Data 4.6).

    At least one component is required, "T" must be followed by a time component, only the
    last component given may have a decimal fraction, and weeks cannot be combined with other
    components. The alternative format (P0003-01-29T...) of section 4.4.3.3 is rejected.
    """
    if not isinstance(value, str):
        return False
    match = _DURATION.fullmatch(value)
    if match is None:
        return False
    if match["weeks"] is not None:
        return True
    present = [match[name] for name in _DURATION_FIELDS if match[name] is not None]
    if not present:
        return False
    if "T" in value and all(match[name] is None for name in ("hours", "minutes", "seconds")):
        return False
    return all("." not in part and "," not in part for part in present[:-1])


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(
    rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\\r\n]|\\.)*"))*[ \t]*',
    re.ASCII,
)
_VERSION_1 = re.compile(r"1\.0(?:\.[0-9]+)?", re.ASCII)
_VERSION_2 = re.compile(r"2\.0(?:\.[0-9]+)?", re.ASCII)
_SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")
_SHA2_HEX = re.compile(r"[0-9a-fA-F]+")
_SHA2_HEX_LENGTHS = frozenset({56, 64, 96, 128})  # SHA-224, SHA-256, SHA-384, SHA-512


def reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` for :func:`json.loads` that refuses repeated keys.

    Data 2.2.s2.b2: "A Statement MUST use each property no more than one time" (2.0: "An LRS
    shall reject a Statement that uses a property more than once"). ``json.loads`` silently
    keeps the last value, so the API has to parse with this hook to see the violation.
    """
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise StatementValidationError(
                "", f"the property {json.dumps(key)} is used more than once in an object"
            )
        result[key] = value
    return result


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _map_key(path: str, key: object) -> str:
    if isinstance(key, str):
        return _string_key(path, key)
    return f"{path}[{key!r}]"


@functools.lru_cache(maxsize=4096)
def _string_key(path: str, key: str) -> str:
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _type_error(path: str, value: object, expected: str) -> StatementValidationError:
    if value is None:
        # Data 2.2.s4.b1.b1: the LRS MUST reject Statements with any null values (except inside
        # extensions).
        return StatementValidationError(path, "must not be null")
    return StatementValidationError(path, f"must be {expected}, not {_kind(value)}")


def _as_object(value: object, path: str, what: str = "an object") -> dict[object, object]:
    if not isinstance(value, dict):
        raise _type_error(path, value, what)
    return value


def _as_array(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise _type_error(path, value, "an array")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _type_error(path, value, "a string")
    return value


def _boolean(value: object, path: str) -> None:
    # Data 2.2.s4.b1.b3: strings (even "true"/"false") where booleans are required are rejected.
    if not isinstance(value, bool):
        raise _type_error(path, value, "a boolean (true or false)")


def _number(value: object, path: str) -> int | float:
    # Data 2.2.s4.b1.b2: strings where numbers are required are rejected, even if they contain
    # numbers. NaN and Infinity are not JSON numbers (Python's json module accepts them).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(path, value, "a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise StatementValidationError(path, "must be a finite number")
    return value


class _KnownValid:
    """Values of one kind (Activities, say) found valid before, by their JSON text.

    Content players send the same Activities (definitions included), Verbs, actors and
    contextActivities with statement after statement, and checking an Activity Definition
    costs many times what writing its JSON text does; a value whose text was found valid
    before is valid again. Used only on values as the JSON parser made them (dicts, lists,
    strings, numbers, booleans, null), where equal text means equal values: a tuple or a
    `datetime` elsewhere could have the text of a valid value without being one. Only valid
    values are kept, so an invalid one is checked (and its error reported at its own path)
    every time. At most `limit` texts are kept; when full, the set starts again.
    """

    __slots__ = ("_texts", "_limit")

    def __init__(self, limit: int = 4096) -> None:
        self._texts: set[bytes] = set()
        self._limit = limit

    def check(self, check: Callable[[object, str], object], value: object, path: str) -> None:
        try:
            text = orjson.dumps(value)
        except TypeError:  # JSONEncodeError too: an integer beyond 64 bits, a lone surrogate
            check(value, path)
            return
        if text in self._texts:
            return
        check(value, path)
        if len(self._texts) >= self._limit:
            self._texts.clear()
        self._texts.add(text)

    def clear(self) -> None:
        self._texts.clear()


# One set per kind: the rules differ (an Activity's text is not a valid actor).
_KNOWN_ACTORS = _KnownValid()
_KNOWN_VERBS = _KnownValid()
_KNOWN_ACTIVITIES = _KnownValid()
_KNOWN_CONTEXT_ACTIVITIES = _KnownValid()


def forget_known_values() -> None:
    """Empty the sets of values found valid (for measurements of the checks themselves)."""
    for known in (_KNOWN_ACTORS, _KNOWN_VERBS, _KNOWN_ACTIVITIES, _KNOWN_CONTEXT_ACTIVITIES):
        known.clear()


def _part(
    known: _KnownValid | None,
    check: Callable[[object, str], object],
    value: object,
    path: str,
) -> None:
    """`check(value, path)`, skipped where `known` holds the value's text."""
    if known is None:
        check(value, path)
    else:
        known.check(check, value, path)


def _check_properties(
    obj: Mapping[object, object],
    path: str,
    allowed: Iterable[str],
    required: Iterable[str] = (),
    *,
    what: str,
    hint: Callable[[str], str | None] | None = None,
) -> None:
    """Unknown keys (case-sensitive), null values and missing required keys.

    Data 2.2.s4.b1: reject keys whose case does not match the spec (b5), keys not allowed by the
    spec (b7) and null values (b1); 2.0 4.2.1: reject additional properties and missing required
    properties.
    """
    allowed_set = allowed if isinstance(allowed, (set, frozenset)) else frozenset(allowed)
    for key, value in obj.items():
        if key not in allowed_set:
            message = f"is not a property of {what}"
            extra = hint(key) if hint is not None and isinstance(key, str) else None
            if extra is not None:
                message = f"{message} ({extra})"
            elif isinstance(key, str):
                for candidate in sorted(allowed_set):
                    if candidate.lower() == key.lower():
                        message = f"{message}; property names are case-sensitive: use '{candidate}'"
                        break
            raise StatementValidationError(_join(path, key), message)
        if value is None:
            raise StatementValidationError(_join(path, key), "must not be null")
    for key in required:
        if key not in obj:
            raise StatementValidationError(_join(path, key), f"is required in {what}")


def _iri(value: object, path: str, what: str = "an IRI") -> str:
    text = _string(value, path)
    if not is_iri(text):
        raise StatementValidationError(
            path, f"must be {what} (an absolute IRI with a scheme), got {json.dumps(text)}"
        )
    return text


def _irl(value: object, path: str) -> str:
    # An IRL is an IRI that is expected to resolve; it is checked with the same syntax.
    return _iri(value, path, "an IRL")


def _uuid(value: object, path: str) -> str:
    text = _string(value, path)
    if not is_uuid(text):
        raise StatementValidationError(
            path, f"must be a UUID in standard string form, got {json.dumps(text)}"
        )
    return text


def _timestamp(value: object, path: str) -> None:
    text = _string(value, path)
    # Data 4.5.s1.b1: A Timestamp MUST be formatted according to ISO 8601 (RFC 3339 recommended,
    # whose section 4.3 rules out the unknown-local-offset form -00:00). parse_timestamp's
    # pattern uses \d and $, which would let non-ASCII digits and a trailing newline through, and
    # it can raise OverflowError for instants outside datetime's range, so both are guarded here.
    ok = text.isascii() and "\n" not in text
    if ok:
        try:
            parse_timestamp(text)
        except (ValueError, OverflowError):
            ok = False
    if not ok:
        raise StatementValidationError(
            path,
            "must be an ISO 8601 timestamp with a valid date, time and offset "
            f"(e.g. 2013-05-18T05:32:34.804Z; -00:00 is not allowed), got {json.dumps(text)}",
        )


def _language_tag(value: object, path: str) -> str:
    text = _string(value, path)
    if not is_language_tag(text):
        raise StatementValidationError(
            path, f"must be an RFC 5646 language tag, got {json.dumps(text)}"
        )
    return text


def _language_map(value: object, path: str) -> None:
    """Data 4.2: keys are RFC 5646 language tags, values are strings."""
    mapping = _as_object(value, path, "a language map (an object)")
    for key, text in mapping.items():
        key_path = _map_key(path, key)
        if not is_language_tag(key):
            raise StatementValidationError(
                key_path, "language map keys must be RFC 5646 language tags"
            )
        if not isinstance(text, str):
            raise _type_error(key_path, text, "a string")


def _extensions(value: object, path: str) -> None:
    """Data 4.1: "The keys of an extensions map MUST be IRIs"; values may be any JSON value,
    including null ("An LRS MUST NOT reject a Statement based on the values of the extensions
    map")."""
    mapping = _as_object(value, path, "an extensions object")
    for key in mapping:
        if not is_iri(key):
            raise StatementValidationError(
                _map_key(path, key), "extension keys must be IRIs (with a scheme)"
            )


# --------------------------------------------------------------------------------------------
# Agents and Groups (Data 2.4.2)
# --------------------------------------------------------------------------------------------


def _ifis(obj: Mapping[object, object]) -> list[str]:
    return [key for key in IFI_KEYS if key in obj]


def _validate_ifi(obj: Mapping[object, object], key: str, path: str) -> None:
    """Data 2.4.2.3 Inverse Functional Identifier formats."""
    value = obj[key]
    ifi_path = _join(path, key)
    if key == "mbox":
        text = _string(value, ifi_path)
        if not _is_mailto_iri(text):
            raise StatementValidationError(
                ifi_path, f'must be a mailto IRI ("mailto:email address"), got {json.dumps(text)}'
            )
    elif key == "mbox_sha1sum":
        text = _string(value, ifi_path)
        if _SHA1_HEX.fullmatch(text) is None:
            raise StatementValidationError(
                ifi_path, "must be the hex-encoded SHA1 hash of a mailto IRI (40 hex digits)"
            )
    elif key == "openid":
        text = _string(value, ifi_path)
        if not _is_uri(text):
            raise StatementValidationError(
                ifi_path, f"must be a URI (absolute, with a scheme), got {json.dumps(text)}"
            )
    else:
        account = _as_object(value, ifi_path, "an Account object")
        # Data 2.4.2.4: homePage (IRL) and name (String) are both required.
        _check_properties(account, ifi_path, _ACCOUNT_KEYS, ("homePage", "name"), what="an Account")
        _irl(account["homePage"], _join(ifi_path, "homePage"))
        _string(account["name"], _join(ifi_path, "name"))


def _agent_hint(key: str) -> str | None:
    if key == "member":
        return 'only a Group has "member"; set "objectType": "Group"'
    return None


def _agent(value: object, path: str, what: str = "an Agent") -> None:
    """Data 2.4.2.1: objectType "Agent" (optional), name, exactly one IFI."""
    obj = _as_object(value, path, f"{what} (an object)")
    if obj.get("objectType", "Agent") not in ("Agent", None):
        raise StatementValidationError(
            _join(path, "objectType"), f'must be "Agent" here, got {json.dumps(obj["objectType"])}'
        )
    _check_properties(obj, path, _AGENT_KEYS, what="an Agent", hint=_agent_hint)
    if "name" in obj:
        _string(obj["name"], _join(path, "name"))
    ifis = _ifis(obj)
    if not ifis:
        # Data 2.4.2.1.s2.b1: An Agent MUST be identified by one (1) of the four types of IFI.
        raise StatementValidationError(
            path, "an Agent MUST be identified by one of mbox, mbox_sha1sum, openid, account"
        )
    if len(ifis) > 1:
        # Data 2.4.2.1.s2.b2: An Agent MUST NOT include more than one (1) IFI.
        raise StatementValidationError(
            path, f"an Agent MUST NOT include more than one IFI, found {', '.join(ifis)}"
        )
    _validate_ifi(obj, ifis[0], path)


def _group(value: object, path: str, *, anonymous_members: int | None = None) -> bool:
    """Data 2.4.2.2: an Identified Group (one IFI, optional members) or an Anonymous Group
    (no IFI, members required). Returns True when the Group is identified.

    ``anonymous_members`` fixes the member count an anonymous Group must have (authority).
    """
    obj = _as_object(value, path, "a Group (an object)")
    _check_properties(obj, path, _GROUP_KEYS, ("objectType",), what="a Group")
    if obj["objectType"] != "Group":
        raise StatementValidationError(
            _join(path, "objectType"), f'must be "Group", got {json.dumps(obj["objectType"])}'
        )
    if "name" in obj:
        _string(obj["name"], _join(path, "name"))
    ifis = _ifis(obj)
    if len(ifis) > 1:
        # Data 2.4.2.2.s5.b1: An Identified Group MUST include exactly one (1) IFI.
        raise StatementValidationError(
            path, f"an Identified Group MUST include exactly one IFI, found {', '.join(ifis)}"
        )
    if ifis:
        _validate_ifi(obj, ifis[0], path)
    elif "member" not in obj:
        # Data 2.4.2.2.s4.b1: An Anonymous Group MUST include a "member" property.
        raise StatementValidationError(
            _join(path, "member"),
            "is required: a Group without an IFI is an Anonymous Group, which MUST list its "
            "members",
        )
    if "member" in obj:
        member_path = _join(path, "member")
        members = _as_array(obj["member"], member_path)
        if not ifis and not members:
            raise StatementValidationError(
                member_path, "an Anonymous Group MUST list at least one member Agent"
            )
        for i, member in enumerate(members):
            item_path = _index(member_path, i)
            if isinstance(member, dict) and member.get("objectType") == "Group":
                # Data 2.4.2.2.s4.b2 / s5.b2: a Group MUST NOT contain Group Objects in "member".
                raise StatementValidationError(
                    _join(item_path, "objectType"),
                    "a Group MUST NOT contain Group Objects in its member property",
                )
            _agent(member, item_path, "a member Agent")
        if not ifis and anonymous_members is not None and len(members) != anonymous_members:
            raise StatementValidationError(
                member_path,
                f"must list exactly {anonymous_members} Agents, found {len(members)}",
            )
    return bool(ifis)


def _agent_or_group(value: object, path: str, what: str = "an Agent or Group") -> None:
    """An Actor: objectType absent or "Agent" means Agent; "Group" means Group."""
    obj = _as_object(value, path, f"{what} (an object)")
    object_type = obj.get("objectType", "Agent")
    if object_type == "Group":
        _group(obj, path)
    elif object_type == "Agent":
        _agent(obj, path)
    elif object_type is None:
        raise StatementValidationError(_join(path, "objectType"), "must not be null")
    else:
        raise StatementValidationError(
            _join(path, "objectType"),
            f'must be "Agent" or "Group" (case-sensitive), got {json.dumps(object_type)}',
        )


def _authority(value: object, path: str) -> None:
    """Data 2.4.9.s3.b1: "Authority MUST be an Agent, except in 3-legged OAuth, where it MUST
    be a Group with two Agents." An Identified Group is therefore not an authority."""
    obj = _as_object(value, path, "an Agent or a Group of two Agents (an object)")
    if obj.get("objectType") == "Group":
        if _ifis(obj):
            raise StatementValidationError(
                path,
                "authority MUST be an Agent or an Anonymous Group of two Agents (3-legged "
                "OAuth), not an Identified Group",
            )
        _group(obj, path, anonymous_members=2)
    else:
        _agent_or_group(obj, path, "an Agent")


# --------------------------------------------------------------------------------------------
# Verb, Activity, objects (Data 2.4.3, 2.4.4)
# --------------------------------------------------------------------------------------------


def _verb(value: object, path: str) -> str:
    obj = _as_object(value, path, "a Verb object")
    _check_properties(obj, path, _VERB_KEYS, ("id",), what="a Verb")
    verb_id = _iri(obj["id"], _join(path, "id"))
    if "display" in obj:
        _language_map(obj["display"], _join(path, "display"))
    return verb_id


def _interaction_components(value: object, path: str) -> None:
    components = _as_array(value, path)
    seen: dict[str, int] = {}
    for i, component in enumerate(components):
        item_path = _index(path, i)
        obj = _as_object(component, item_path, "an interaction component (an object)")
        _check_properties(obj, item_path, _COMPONENT_KEYS, ("id",), what="an interaction component")
        component_id = _string(obj["id"], _join(item_path, "id"))
        if component_id in seen:
            # Data 2.4.4.1.s16.b1: Within an array of interaction components, all id values MUST
            # be distinct.
            raise StatementValidationError(
                _join(item_path, "id"),
                f"duplicates the id of item [{seen[component_id]}]; ids within an interaction "
                "component list MUST be distinct",
            )
        seen[component_id] = i
        if "description" in obj:
            _language_map(obj["description"], _join(item_path, "description"))


def _activity_definition(value: object, path: str) -> None:
    obj = _as_object(value, path, "an Activity Definition object")
    _check_properties(obj, path, _DEFINITION_KEYS, what="an Activity Definition")
    for key in ("name", "description"):
        if key in obj:
            _language_map(obj[key], _join(path, key))
    if "type" in obj:
        _iri(obj["type"], _join(path, "type"))
    if "moreInfo" in obj:
        _irl(obj["moreInfo"], _join(path, "moreInfo"))
    interaction_type: str | None = None
    if "interactionType" in obj:
        type_path = _join(path, "interactionType")
        interaction_type = _string(obj["interactionType"], type_path)
        if interaction_type not in INTERACTION_TYPES:
            # Data 2.4.4.1.s13.b1: Interaction Activities MUST have a valid interactionType;
            # 2.2.s4.b1.b6: enumerated values are case-sensitive.
            raise StatementValidationError(
                type_path,
                f"must be one of {', '.join(sorted(INTERACTION_TYPES))} (case-sensitive), "
                f"got {json.dumps(interaction_type)}",
            )
    elif "correctResponsesPattern" in obj or any(key in obj for key in COMPONENT_LISTS):
        raise StatementValidationError(
            _join(path, "interactionType"),
            "is required: Interaction Activities (with correctResponsesPattern or interaction "
            "component lists) MUST have a valid interactionType",
        )
    if "correctResponsesPattern" in obj:
        pattern_path = _join(path, "correctResponsesPattern")
        for i, pattern in enumerate(_as_array(obj["correctResponsesPattern"], pattern_path)):
            _string(pattern, _index(pattern_path, i))
    for key in COMPONENT_LISTS:
        if key not in obj or interaction_type is None:
            continue
        allowed = ALLOWED_COMPONENT_LISTS[interaction_type]
        if key not in allowed:
            # Data 2.4.4.1 "Interaction Components" table; s13.b3 lets the LRS reject
            # properties that are not valid for the interactionType.
            supported = ", ".join(sorted(allowed)) or "no component lists"
            raise StatementValidationError(
                _join(path, key),
                f"is not supported for interactionType {json.dumps(interaction_type)} "
                f"(it supports {supported})",
            )
        _interaction_components(obj[key], _join(path, key))
    if "extensions" in obj:
        _extensions(obj["extensions"], _join(path, "extensions"))


def _activity_hint(key: str) -> str | None:
    if key in IFI_KEYS or key == "member":
        # Data 2.4.4.2.s1.b1
        return 'an Agent or Group used as an Object MUST specify "objectType"'
    if key in ("actor", "verb", "object"):
        return 'a SubStatement MUST specify "objectType": "SubStatement"'
    return None


def _activity(value: object, path: str) -> None:
    """Data 2.4.4.1: objectType "Activity" when present, id IRI (required), definition."""
    obj = _as_object(value, path, "an Activity object")
    if obj.get("objectType", "Activity") not in ("Activity", None):
        raise StatementValidationError(
            _join(path, "objectType"),
            f'must be "Activity" when present, got {json.dumps(obj["objectType"])}',
        )
    _check_properties(obj, path, _ACTIVITY_KEYS, ("id",), what="an Activity", hint=_activity_hint)
    _iri(obj["id"], _join(path, "id"), "an Activity id IRI")
    if "definition" in obj:
        _activity_definition(obj["definition"], _join(path, "definition"))


def _statement_ref(value: object, path: str) -> None:
    """Data 2.4.4.3: objectType "StatementRef" (required) and id UUID (required)."""
    obj = _as_object(value, path, "a Statement Reference object")
    if obj.get("objectType", "StatementRef") not in ("StatementRef", None):
        raise StatementValidationError(
            _join(path, "objectType"),
            f'must be "StatementRef" (case-sensitive), got {json.dumps(obj["objectType"])}',
        )
    _check_properties(
        obj, path, _STATEMENT_REF_KEYS, ("objectType", "id"), what="a Statement Reference"
    )
    _uuid(obj["id"], _join(path, "id"))


def _object_type_of(obj: Mapping[object, object], path: str) -> str:
    object_type = obj.get("objectType", "Activity")
    if object_type not in OBJECT_TYPES:
        if object_type is None:
            raise StatementValidationError(_join(path, "objectType"), "must not be null")
        raise StatementValidationError(
            _join(path, "objectType"),
            f"must be one of {', '.join(OBJECT_TYPES)} (case-sensitive), "
            f"got {json.dumps(object_type)}",
        )
    return str(object_type)


def _statement_object(
    value: object, path: str, v2: bool, *, in_substatement: bool, recognise: bool = False
) -> str:
    """Data 2.4.4: the Object of a Statement. Returns its objectType."""
    obj = _as_object(value, path, "an Activity, Agent, Group, StatementRef or SubStatement")
    object_type = _object_type_of(obj, path)
    if object_type == "Activity":
        _part(_KNOWN_ACTIVITIES if recognise else None, _activity, obj, path)
    elif object_type == "Agent":
        _agent(obj, path)
    elif object_type == "Group":
        _group(obj, path)
    elif object_type == "StatementRef":
        _statement_ref(obj, path)
    else:
        if in_substatement:
            # Data 2.4.4.3.s8.b4: A SubStatement MUST NOT contain a SubStatement of its own.
            raise StatementValidationError(
                _join(path, "objectType"),
                "a SubStatement MUST NOT contain a SubStatement of its own",
            )
        _statement(obj, path, v2, substatement=True, recognise=recognise)
    return object_type


# --------------------------------------------------------------------------------------------
# Result, Context, Attachments (Data 2.4.5, 2.4.6, 2.4.11)
# --------------------------------------------------------------------------------------------


def _score(value: object, path: str) -> None:
    obj = _as_object(value, path, "a Score object")
    _check_properties(obj, path, _SCORE_KEYS, what="a Score")
    numbers: dict[str, int | float] = {}
    for key in ("scaled", "raw", "min", "max"):
        if key in obj:
            numbers[key] = _number(obj[key], _join(path, key))
    scaled = numbers.get("scaled")
    if scaled is not None and not -1 <= scaled <= 1:
        raise StatementValidationError(
            _join(path, "scaled"), f"must be between -1 and 1 inclusive, got {scaled!r}"
        )
    low, high, raw = numbers.get("min"), numbers.get("max"), numbers.get("raw")
    if low is not None and high is not None and not low < high:
        raise StatementValidationError(
            _join(path, "min"), f"must be less than max ({high!r}), got {low!r}"
        )
    if raw is not None and low is not None and raw < low:
        raise StatementValidationError(
            _join(path, "raw"), f"must be at least min ({low!r}), got {raw!r}"
        )
    if raw is not None and high is not None and raw > high:
        raise StatementValidationError(
            _join(path, "raw"), f"must be at most max ({high!r}), got {raw!r}"
        )


def _result(value: object, path: str) -> None:
    obj = _as_object(value, path, "a Result object")
    _check_properties(obj, path, _RESULT_KEYS, what="a Result")
    if "score" in obj:
        _score(obj["score"], _join(path, "score"))
    for key in ("success", "completion"):
        if key in obj:
            _boolean(obj[key], _join(path, key))
    if "response" in obj:
        _string(obj["response"], _join(path, "response"))
    if "duration" in obj:
        duration_path = _join(path, "duration")
        text = _string(obj["duration"], duration_path)
        if not is_iso8601_duration(text):
            raise StatementValidationError(
                duration_path,
                f"must be an ISO 8601 duration (PnYnMnDTnHnMnS or PnW), got {json.dumps(text)}",
            )
    if "extensions" in obj:
        _extensions(obj["extensions"], _join(path, "extensions"))


def _context_activities(value: object, path: str, *, recognise: bool = False) -> None:
    obj = _as_object(value, path, "a contextActivities object")
    known = _KNOWN_ACTIVITIES if recognise else None
    # Data 2.4.6.2.s4.b1: every key MUST be one of parent, grouping, category, other.
    _check_properties(obj, path, CONTEXT_ACTIVITY_KEYS, what="contextActivities")
    for key in CONTEXT_ACTIVITY_KEYS:
        if key not in obj:
            continue
        key_path = _join(path, key)
        activities = obj[key]
        # Data 2.4.6.2.s4.b2: either a single Activity Object or an array of Activity Objects.
        if isinstance(activities, list):
            for i, activity in enumerate(activities):
                _part(known, _activity, activity, _index(key_path, i))
        else:
            _part(known, _activity, activities, key_path)


def _recognised_context_activities(value: object, path: str) -> None:
    _context_activities(value, path, recognise=True)


def _relevant_types(value: object, path: str) -> None:
    # 2.0 4.2.2.5: "A collection of 1 or more Relevant Type(s)" - an array of IRIs.
    types = _as_array(value, path)
    if not types:
        raise StatementValidationError(path, "must contain at least one Relevant Type IRI")
    for i, item in enumerate(types):
        _iri(item, _index(path, i), "a Relevant Type IRI")


def _context_agents(value: object, path: str) -> None:
    """2.0 4.2.2.5 Context Agents table."""
    for i, item in enumerate(_as_array(value, path)):
        item_path = _index(path, i)
        obj = _as_object(item, item_path, "a contextAgent object")
        _check_properties(
            obj, item_path, _CONTEXT_AGENT_KEYS, ("objectType", "agent"), what="a contextAgent"
        )
        if obj["objectType"] != "contextAgent":
            raise StatementValidationError(
                _join(item_path, "objectType"),
                f'must be "contextAgent", got {json.dumps(obj["objectType"])}',
            )
        _agent(obj["agent"], _join(item_path, "agent"))
        if "relevantTypes" in obj:
            _relevant_types(obj["relevantTypes"], _join(item_path, "relevantTypes"))


def _context_groups(value: object, path: str) -> None:
    """2.0 4.2.2.5 Context Group table."""
    for i, item in enumerate(_as_array(value, path)):
        item_path = _index(path, i)
        obj = _as_object(item, item_path, "a contextGroup object")
        _check_properties(
            obj, item_path, _CONTEXT_GROUP_KEYS, ("objectType", "group"), what="a contextGroup"
        )
        if obj["objectType"] != "contextGroup":
            raise StatementValidationError(
                _join(item_path, "objectType"),
                f'must be "contextGroup", got {json.dumps(obj["objectType"])}',
            )
        _group(obj["group"], _join(item_path, "group"))
        if "relevantTypes" in obj:
            _relevant_types(obj["relevantTypes"], _join(item_path, "relevantTypes"))


def _context(
    value: object, path: str, v2: bool, object_type: str, *, recognise: bool = False
) -> None:
    obj = _as_object(value, path, "a Context object")

    def hint(key: str) -> str | None:
        if key in _CONTEXT_KEYS_2_ONLY:
            return "it exists only in xAPI 2.0.0; send X-Experience-API-Version: 2.0.0"
        return None

    allowed = _CONTEXT_KEYS_2 if v2 else _CONTEXT_KEYS_1
    _check_properties(obj, path, allowed, what="a Context", hint=hint)
    if "registration" in obj:
        _uuid(obj["registration"], _join(path, "registration"))
    if "instructor" in obj:
        _agent_or_group(obj["instructor"], _join(path, "instructor"), "an Agent (or Group)")
    if "team" in obj:
        _group(obj["team"], _join(path, "team"))
    if "contextActivities" in obj:
        context_activities = obj["contextActivities"]
        activities_path = _join(path, "contextActivities")
        if recognise:
            _KNOWN_CONTEXT_ACTIVITIES.check(
                _recognised_context_activities, context_activities, activities_path
            )
        else:
            _context_activities(context_activities, activities_path)
    if "contextAgents" in obj:
        _context_agents(obj["contextAgents"], _join(path, "contextAgents"))
    if "contextGroups" in obj:
        _context_groups(obj["contextGroups"], _join(path, "contextGroups"))
    for key in ("revision", "platform"):
        if key in obj:
            _string(obj[key], _join(path, key))
            if object_type != "Activity":
                # Data 2.4.6.s4.b1/b2: "revision" and "platform" MUST only be used if the
                # Statement's Object is an Activity.
                raise StatementValidationError(
                    _join(path, key),
                    f"MUST only be used if the Statement's Object is an Activity "
                    f"(the Object is {object_type!r})",
                )
    if "language" in obj:
        _language_tag(obj["language"], _join(path, "language"))
    if "statement" in obj:
        _statement_ref(obj["statement"], _join(path, "statement"))
    if "extensions" in obj:
        _extensions(obj["extensions"], _join(path, "extensions"))


def _attachment(value: object, path: str) -> None:
    obj = _as_object(value, path, "an Attachment object")
    _check_properties(
        obj,
        path,
        _ATTACHMENT_KEYS,
        ("usageType", "display", "contentType", "length", "sha2"),
        what="an Attachment",
    )
    usage_type = _iri(obj["usageType"], _join(path, "usageType"))
    _language_map(obj["display"], _join(path, "display"))
    if "description" in obj:
        _language_map(obj["description"], _join(path, "description"))
    content_type_path = _join(path, "contentType")
    content_type = _string(obj["contentType"], content_type_path)
    if _MEDIA_TYPE.fullmatch(content_type) is None:
        raise StatementValidationError(
            content_type_path,
            f"must be an Internet Media Type (type/subtype), got {json.dumps(content_type)}",
        )
    length_path = _join(path, "length")
    length = obj["length"]
    if isinstance(length, float) and math.isfinite(length) and length.is_integer():
        length = int(length)
    if isinstance(length, bool) or not isinstance(length, int):
        raise _type_error(length_path, length, "an integer")
    if length < 0:
        raise StatementValidationError(length_path, f"must not be negative, got {length}")
    sha2_path = _join(path, "sha2")
    sha2 = _string(obj["sha2"], sha2_path)
    if _SHA2_HEX.fullmatch(sha2) is None or len(sha2) not in _SHA2_HEX_LENGTHS:
        raise StatementValidationError(
            sha2_path,
            "must be the hex-encoded SHA-2 hash of the Attachment data "
            "(56, 64, 96 or 128 hex digits)",
        )
    if "fileUrl" in obj:
        _irl(obj["fileUrl"], _join(path, "fileUrl"))
    if usage_type == SIGNATURE_USAGE_TYPE and content_type != "application/octet-stream":
        # Data 2.6.s4.b1: a signature is an Attachment with this usageType and a contentType
        # of application/octet-stream; 2.6.s5.b1: malformed signatures are rejected.
        raise StatementValidationError(
            content_type_path,
            'a signature Attachment MUST have the contentType "application/octet-stream"',
        )


# --------------------------------------------------------------------------------------------
# Statements (Data 2.2, 2.4)
# --------------------------------------------------------------------------------------------


def _statement_hint(substatement: bool) -> Callable[[str], str | None]:
    def hint(key: str) -> str | None:
        if substatement and key in _SUBSTATEMENT_FORBIDDEN:
            return f'a SubStatement MUST NOT have the "{key}" property'
        return None

    return hint


def _version(value: object, path: str, v2: bool) -> None:
    text = _string(value, path)
    if _VERSION_1.fullmatch(text) or (v2 and _VERSION_2.fullmatch(text)):
        return
    # Data 2.4.10.s3.b2: An LRS MUST reject all Statements with a version specified that does
    # not start with 1.0. (2.0: 1.0.x and 2.0.x Statements are both accepted.)
    accepted = '"1.0.x" or "2.0.x"' if v2 else '"1.0.x"'
    raise StatementValidationError(
        path, f"must be a Statement version of the form {accepted}, got {json.dumps(text)}"
    )


def _statement(
    value: object, path: str, v2: bool, *, substatement: bool, recognise: bool = False
) -> None:
    what = "a SubStatement" if substatement else "a Statement"
    obj = _as_object(value, path, f"{what} (a JSON object)")
    allowed = _SUBSTATEMENT_KEYS if substatement else _STATEMENT_KEYS
    required = (
        ("objectType", "actor", "verb", "object")
        if substatement
        else (
            "actor",
            "verb",
            "object",
        )
    )
    # Data 2.2.s2.b3: A Statement MUST use "actor", "verb", and "object".
    _check_properties(obj, path, allowed, required, what=what, hint=_statement_hint(substatement))
    if substatement and obj["objectType"] != "SubStatement":
        raise StatementValidationError(
            _join(path, "objectType"), f'must be "SubStatement", got {obj["objectType"]!r}'
        )
    if "id" in obj:
        _uuid(obj["id"], _join(path, "id"))
    if recognise:
        _KNOWN_ACTORS.check(_agent_or_group, obj["actor"], _join(path, "actor"))
        verb = obj["verb"]
        _KNOWN_VERBS.check(_verb, verb, _join(path, "verb"))
        verb_id = verb["id"]  # type: ignore[index]  # checked: an object with an IRI id
    else:
        _agent_or_group(obj["actor"], _join(path, "actor"))
        verb_id = _verb(obj["verb"], _join(path, "verb"))
    object_path = _join(path, "object")
    object_type = _statement_object(
        obj["object"], object_path, v2, in_substatement=substatement, recognise=recognise
    )
    if verb_id == VOIDED_VERB and object_type != "StatementRef":
        # Data 2.3.2.s2.b1: the Object of a voiding Statement MUST have the "objectType"
        # property set to StatementRef (and b2: identify the voided Statement by its "id").
        raise StatementValidationError(
            object_path,
            f"a voiding Statement (verb {VOIDED_VERB}) MUST have a StatementRef as its Object",
        )
    if "result" in obj:
        _result(obj["result"], _join(path, "result"))
    if "context" in obj:
        _context(obj["context"], _join(path, "context"), v2, object_type, recognise=recognise)
    if "timestamp" in obj:
        _timestamp(obj["timestamp"], _join(path, "timestamp"))
    if "stored" in obj:
        _timestamp(obj["stored"], _join(path, "stored"))
    if "authority" in obj:
        _authority(obj["authority"], _join(path, "authority"))
    if "version" in obj:
        _version(obj["version"], _join(path, "version"), v2)
    if "attachments" in obj:
        attachments_path = _join(path, "attachments")
        for i, attachment in enumerate(_as_array(obj["attachments"], attachments_path)):
            _attachment(attachment, _index(attachments_path, i))


def _is_v2(version: str) -> bool:
    return isinstance(version, str) and (version == "2.0" or version.startswith("2."))


def validate_statement(
    statement: object, *, version: str = "1.0.3", path: str = "", parsed_json: bool = False
) -> None:
    """Raise StatementValidationError for the first violation found; return None when valid.

    ``version`` is the X-Experience-API-Version of the request ("1.0.0".."1.0.3" or "2.0.0");
    under 2.0.x the context properties contextAgents/contextGroups and Statement versions
    "2.0.x" are accepted. ``path`` is a prefix for error paths (e.g. "statements[3]").

    With ``parsed_json`` (the statement is a value of the JSON parser: dicts, lists, strings,
    numbers, booleans and null only), an actor, Verb, Activity or contextActivities whose JSON
    text was found valid before is not checked again (`_KnownValid`). The outcome is the same.
    """
    _statement(statement, path, _is_v2(version), substatement=False, recognise=parsed_json)


def validate_agent(agent: object, *, path: str = "agent", version: str = "1.0.3") -> None:
    """Validate an Agent or Group object on its own (the ``agent`` parameter of the Statement,
    State and Agent Profile resources; Data 2.2.s4.b4: parameters are validated to the same
    standards as the same types in Statements). Anonymous Groups are accepted; callers that
    need an identified Agent/Group check for an IFI themselves."""
    del version  # the Agent/Group model is the same in 1.0.x and 2.0.0
    _agent_or_group(agent, path)
