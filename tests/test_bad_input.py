"""Bad input is never a 5xx and never a half-written state (issue 12): the strict JSON and
integer parsers, the error boundary that keeps connections alive, the 16 MiB statement limit,
and a sweep that sends malformed, deeply nested, huge and overflowing values to every route."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import bson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st

from lrs.api.middleware import XAPIMiddleware
from lrs.api.paths import INT64_MAX, nonnegative_int
from lrs.app import create_app
from lrs.xapi import jsontext
from lrs.xapi.sizes import MAX_DOCUMENT_BYTES
from tests.conftest import LRS, basic_auth, make_settings, statement

DEEP = 5000  # beyond any recursion limit
DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_LEARNER = '{"mbox":"mailto:a@b.c","x":' + "[" * DEEP + "]" * DEEP + "}"

# --- the strict JSON parser -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (DEEP_ARRAY, "nested"),
        ("[" * (jsontext.MAX_DEPTH + 1) + "]" * (jsontext.MAX_DEPTH + 1), "nested"),
        ('{"a":' * 70 + "1" + "}" * 70, "nested"),
        ("1e400", "too large"),
        ('{"score": -1e400}', "too large"),
        ("[NaN]", "NaN"),
        ('{"a": Infinity}', "Infinity"),
        ('{"a": 1, "a": 2}', "more than once"),
        ('{"a" : 1 ,\n "a"\t: 2}', "more than once"),
        ('[{"x": {"k": 1, "k": 1}}]', "more than once"),
        ('"\\ud800"', "surrogate"),
        ('{"k": "\\uDFFF"}', "surrogate"),
        ("{", "not valid JSON"),
    ],
)
def test_strict_json_parser_refuses(text: str, why: str) -> None:
    with pytest.raises(jsontext.JSONTextError, match=why):
        jsontext.loads(text.encode(), "the body")
    with pytest.raises(jsontext.JSONTextError, match=why):
        jsontext.loads(text, "the body")


@pytest.mark.parametrize(
    "value",
    [
        {"name": {"fr-FR": "Évaluation \u2028 ✓"}, "score": {"scaled": 0.00001, "raw": -0.0}},
        {"ext": [1, 2.5, True, None, {"nested": 'a"b\\c\n\u0000'}]},
        {"big": 10**20},  # beyond 64 bits: written by the standard library
        {"lone": "\ud800"},  # kept as it came where the caller allows it
    ],
)
def test_compact_json_is_compact_and_reads_back_as_the_same_value(value: Any) -> None:
    text = jsontext.compact_json(value)
    assert json.loads(text) == value
    assert ": " not in text and ", " not in text
    if "name" in value:
        assert "É" in text  # non-ASCII characters as they are, not escaped
    data = jsontext.compact_json_bytes(value)  # UTF-8 whatever the value holds
    assert json.loads(data.decode("utf-8")) == value
    assert b"\n" not in data  # one line: an SSE `data:` field
    if "name" in value:
        assert "É".encode() in data


def test_strict_json_parser_accepts_what_is_valid() -> None:
    within = "[" * jsontext.MAX_DEPTH + "]" * jsontext.MAX_DEPTH
    assert jsontext.loads(within, "x") is not None
    # A key holding an escaped quote before a colon only looks like two members.
    assert jsontext.loads('{"a\\":b": 1, "c": "d\\" : e"}', "x") == {'a":b': 1, "c": 'd" : e'}
    assert jsontext.loads('{"big": 100000000000000000000}', "x") == {"big": 10**20}
    assert jsontext.loads(b'{"a": "\\ud800"}', "x", lone_surrogates=True) == {"a": "\ud800"}
    assert jsontext.loads("1e308", "x") == 1e308
    with pytest.raises(jsontext.JSONTextError, match="64 bits"):
        jsontext.loads('{"n": 9223372036854775808}', "x", int64=True)
    assert jsontext.loads('{"n": -9223372036854775808}', "x", int64=True) == {"n": -(2**63)}
    with pytest.raises(jsontext.JSONTextError, match="UTF-8"):
        jsontext.loads(b'"\xff"', "x")


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)
_KEYS = st.text(alphabet=st.sampled_from('ab":\\ \n{}[],'), max_size=4)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4)


_JSON = st.recursive(_SCALARS, _containers, max_leaves=20)


def _spaced(value: Any, gaps: Iterator[str], duplicate: list[bool]) -> str:
    """JSON text of `value` with the given whitespace between tokens; when `duplicate` is
    [True], the first non-empty object gets its first member a second time."""
    if isinstance(value, dict):
        members = [(json.dumps(k), _spaced(v, gaps, duplicate)) for k, v in value.items()]
        if members and duplicate[0]:
            duplicate[0] = False
            members.append(members[0])
        inner = ",".join(f"{next(gaps)}{k}{next(gaps)}:{next(gaps)}{v}" for k, v in members)
        return "{" + inner + next(gaps) + "}"
    if isinstance(value, list):
        return "[" + ",".join(next(gaps) + _spaced(v, gaps, duplicate) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=300, deadline=None)
@given(
    value=_JSON,
    gaps=st.lists(st.sampled_from(["", " ", "\n", "\t ", "\r\n"]), min_size=1),
    duplicate=st.booleans(),
)
def test_duplicate_keys_found_whatever_the_layout(
    value: Any, gaps: list[str], duplicate: bool
) -> None:
    """The fast duplicate check (member count vs separators in the raw text) agrees with a
    parse that sees every member, for any layout and any key text."""
    cycle = iter(gaps * 10_000)
    marker = [duplicate]
    text = _spaced(value, cycle, marker)
    has_duplicate = duplicate and not marker[0]
    if has_duplicate:
        with pytest.raises(jsontext.JSONTextError, match="more than once"):
            jsontext.loads(text.encode(), "x")
    else:
        assert jsontext.loads(text.encode(), "x") == json.loads(text)


def _exact(value: Any) -> Any:
    """`value` with every number's type and spelling kept (1 and 1.0, 0.0 and -0.0 differ)
    and every object's member order."""
    if isinstance(value, dict):
        return ("object", [(key, _exact(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("array", [_exact(item) for item in value])
    return (type(value).__name__, repr(value))


_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**18, 10**19]),
    st.floats(allow_nan=False, allow_infinity=False),
)
_JSON_NUMBERS = st.recursive(_SCALARS | _NUMBERS, _containers, max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(value=_JSON_NUMBERS)
def test_every_value_is_read_exactly_as_the_standard_library_reads_it(value: Any) -> None:
    """orjson parses where it reads exactly; integers beyond 64 bits (which orjson would read
    as floats) and anything it refuses go to the standard library: the value is the same,
    numbers' types included, for request bodies and for the texts the LRS stores alike."""
    text = json.dumps(value)
    assert _exact(jsontext.loads(text.encode(), "x")) == _exact(json.loads(text))
    stored = jsontext.compact_json(value)
    assert _exact(jsontext.parse_stored(stored)) == _exact(json.loads(stored))


@pytest.mark.parametrize(
    "text",
    [
        '{"n": -9223372036854775809}',  # 19 digits, below -2**63: orjson reads a float
        '{"n": 123456789012345678901234}',
        '{"s": "\\ud83d\\ude00", "n": 18446744073709551616}',
    ],
)
def test_long_integers_stay_integers(text: str) -> None:
    expected = json.loads(text)
    assert _exact(jsontext.loads(text, "x")) == _exact(expected)
    assert _exact(jsontext.parse_stored(text)) == _exact(expected)


def test_stored_text_with_a_lone_surrogate_is_read_back() -> None:
    stored = jsontext.compact_json({"lone": "\ud800"})  # the standard library writes it
    assert jsontext.parse_stored(stored) == {"lone": "\ud800"}


# --- the strict integer parser -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        (str(INT64_MAX), INT64_MAX),
        (str(INT64_MAX + 1), None),
        ("²", None),
        ("١٢", None),  # Arabic-Indic digits: isdigit() says yes
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1e3", None),
        ("", None),
        ("9" * 10_000, None),
    ],
)
def test_strict_integer_parser(text: str, value: int | None) -> None:
    assert nonnegative_int(text) == value


# --- store fingerprints: "nothing written" -----------------------------------------------------

_COLLECTIONS = (
    "activities",
    "agents",
    "attachments",
    "counters",
    "course_activities",
    "courses",
    "credentials",
    "dead_letters",
    "deliveries",
    "destinations",
    "documents",
    "federation_keys",
    "meta",
    "progress",
    "source_errors",
    "sources",
    "statements",
)


async def fingerprint(lrs: LRS) -> dict[str, str]:
    """A digest of every document of every collection the service writes."""
    prints = {}
    for name in _COLLECTIONS:
        docs = await lrs.services.database[name].find({})
        encoded = sorted(bson.encode(doc) for doc in docs)
        prints[name] = f"{len(docs)}:{hashlib.sha256(b''.join(encoded)).hexdigest()[:16]}"
    return prints


# --- the sweep ------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HUGE = "x" * 30_000  # a URL component httpx sends is at most 64 KiB
QUERY_CASES: list[dict[str, str]] = [
    {"limit": "²"},
    {"limit": str(2**63)},
    {"limit": "-1"},
    {"cursor": _b64(DEEP_ARRAY)},
    {"cursor": _b64(f'[{2**63}, "x", "y"]')},
    {"cursor": _b64('[1e400, "x"]')},
    {"cursor": _b64('[true, "x"]')},
    {"cursor": "%%%not base64"},
    {"learner": DEEP_LEARNER},
    {"learner": '{"mbox": "mailto:a@b.c", "n": 1e400}'},
    {"agent": DEEP_LEARNER},
    {"agent": '{"mbox": "mailto:a@b.c", "mbox": "mailto:x@y.z"}'},
    {"lastEventId": "²"},
    {"lastEventId": str(2**63)},
    {"since": "2026-13-45T99:00:00Z"},
    {"statementId": HUGE},
    {"course": HUGE},
    {"module": DEEP_ARRAY},
    {"activityId": DEEP_ARRAY, "agent": "{", "stateId": "s"},
    {"format": "ids", "attachments": "maybe"},
]
HEADER_CASES: list[dict[str, str | bytes]] = [
    {"Last-Event-ID": str(2**64)},
    {"Last-Event-ID": "²".encode()},
    {"X-Experience-API-Version": "²".encode()},
    {"If-Match": '"' * 10_000},
    {"Accept-Language": "q=," * 10_000},
    {"Authorization": "Basic " + "%" * 1000},
]
_DEEP_XML = (
    '<courseStructure xmlns="https://w3id.org/xapi/profiles/cmi5/v1/CourseStructure.xsd">'
    '<course id="http://c"><title><langstring lang="en">c</langstring></title></course>'
    + '<block id="http://b">' * DEEP
    + "</block>" * DEEP
    + "</courseStructure>"
)
BODY_CASES: list[tuple[str, bytes]] = [
    ("application/json", DEEP_ARRAY.encode()),
    (
        "application/json",
        ('{"learner": ' + DEEP_LEARNER + ', "course": "c", "module": "m"}').encode(),
    ),
    ("application/json", b'{"learner": {"mbox": "mailto:a@b.c"}, "n": 1e400}'),
    ("application/json", b'{"scopes": ["all"], "x": NaN}'),
    ("application/json", b'{"name": "a", "name": "b"}'),
    ("application/json", b'{"endpoint": "http://x/", "batch_size": 99999999999999999999}'),
    ("application/json", b"\xff\xfe{}"),
    ("application/json", b'{"learner": "\\ud800"}'),
    ("application/json", ("[" + "1," * 300_000 + "1]").encode()),
    ("application/json", b"{"),
    ("multipart/mixed; boundary=zz", b"--zz\r\nContent-Type: application/json\r\n\r\n[\r\n--zz--"),
    ("application/xml", _DEEP_XML.encode()),
]


def _fill(path: str, value: str) -> str:
    """The route's path with every parameter set to `value` (URL-encoded)."""
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            if part.endswith(":path}") and path.startswith("/progress/learners/"):
                out.append(quote(value, safe="") + "/courses/" + quote("http://c", safe=""))
            else:
                out.append(quote(value, safe=""))
        else:
            out.append(part)
    return "/".join(out)


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """(path, method) of every API route of the app, through included routers (which recent
    FastAPI keeps as routers rather than copying their routes)."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                walk(included.routes, prefix + route.include_context.prefix)
            elif isinstance(route, APIRoute):
                found.extend((prefix + route.path, method) for method in sorted(route.methods))

    walk(app.routes, "")
    assert len(found) > 40  # every route of the app, whatever is added later
    return found


async def test_bad_input_sweep_every_route_no_5xx_and_no_write(lrs: LRS) -> None:
    """Every route of the app (listed from the app itself), every method: malformed, deeply
    nested, huge and overflowing query parameters, headers, path values and bodies. None may
    answer 5xx, and none may write anything."""
    app = lrs.client._transport.app  # type: ignore[attr-defined]
    before = await fingerprint(lrs)
    failures: list[str] = []

    async def send(method: str, url: str, **kwargs: Any) -> None:
        stream = url.startswith("/progress/stream")
        try:
            response = await asyncio.wait_for(
                lrs.client.request(method, url, **kwargs), 2 if stream else 30
            )
        except TimeoutError:
            # A request the event stream finds valid opens it (200), and it never ends; the
            # in-process transport only answers at the end. Anything else must answer.
            if not stream:
                failures.append(f"{method} {url[:80]}: no answer in 30 s")
            return
        if response.status_code >= 500:
            failures.append(f"{method} {url[:80]} {str(kwargs)[:120]}: {response.status_code}")

    for path, method in _routes(app):
        values = ("x", DEEP_LEARNER, HUGE[:20_000], "http://c") if "{" in path else ("x",)
        for value in values:
            url = _fill(path, value)
            for params in QUERY_CASES:
                await send(method, url, params=params)
            for headers in HEADER_CASES:
                await send(method, url, headers=headers)
            if method in ("POST", "PUT", "PATCH"):
                for content_type, body in BODY_CASES:
                    await send(method, url, content=body, headers={"Content-Type": content_type})
    for path in ("/dashboard/" + "%2e%2e/" * 50, "/dashboard/" + HUGE[:10_000]):
        await send("GET", path)
    assert failures == []
    assert await fingerprint(lrs) == before


async def test_alternate_syntax_and_content_length_bad_input_no_5xx(lrs: LRS) -> None:
    """The same through the 1.0.3 alternate request syntax, and a Content-Length that is not
    a number (answered by the middleware, before any handler)."""
    before = await fingerprint(lrs)
    for form in (
        f"agent={quote(DEEP_LEARNER)}",
        "limit=%C2%B2&X-Experience-API-Version=1.0.3",
        f"content={quote(DEEP_ARRAY)}&Content-Type=application%2Fjson",
        "content=%FF%FE",
    ):
        for method in ("GET", "PUT", "POST"):
            response = await lrs.client.post(
                f"/xapi/statements?method={method}",
                content=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code < 500, (form, method, response.text)

    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached
        raise AssertionError("the middleware must answer")

    middleware = XAPIMiddleware(app, max_body_bytes=1000)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def capture(message: dict[str, Any]) -> None:
        sent.append(message)

    for length in ("²", "12abc", str(2**64)):
        sent.clear()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/xapi/statements",
            "headers": [(b"content-length", length.encode())],
            "query_string": b"",
        }
        await middleware(scope, receive, capture)
        assert sent[0]["status"] == (413 if length.isascii() and length.isdigit() else 400), length
    assert await fingerprint(lrs) == before


# --- oversized statements -------------------------------------------------------------------------


async def test_statement_over_16_mib_stored_is_413_before_anything_is_written(
    lrs: LRS, backend: str
) -> None:
    """Communication 3.2.s3.b11: a statement whose stored document would exceed 16 MiB (what
    MongoDB holds) is a 413 on every back end, and nothing of its batch is stored."""
    activities = [{"id": f"http://example.com/a/{i:07d}"} for i in range(220_000)]
    big = statement(context={"contextActivities": {"other": activities}})
    small = statement()
    before = await fingerprint(lrs)
    response = await lrs.client.post("/xapi/statements", json=[small, big])
    assert response.status_code == 413, response.text
    assert str(MAX_DOCUMENT_BYTES) in response.json()["error"]
    assert await fingerprint(lrs) == before
    # Just under the limit is stored, whole.
    fitting = statement(context={"contextActivities": {"other": activities[:20_000]}})
    response = await lrs.client.post("/xapi/statements", json=[small, fitting])
    assert response.status_code == 200, response.text


# --- no handler raises past the app: connections survive a 500 ---------------------------------


class _Server:
    """An app on a real uvicorn server in a thread (its own event loop, lifespan on), as
    `lrs serve` runs it."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]})

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _exchange(conn: socket.socket, path: str, auth: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 keep-alive request on an open connection: (status, headers, body)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: lrs\r\nAuthorization: {auth}\r\n"
        "X-Experience-API-Version: 1.0.3\r\n\r\n"
    )
    conn.sendall(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        body += chunk
    return int(status_line.split()[1]), headers, body


def _served(tmp_path: Any) -> tuple[Any, str]:
    settings = make_settings("memory", tmp_path, admin_key="k", admin_secret="s")
    return create_app(settings), basic_auth("k", "s")


def test_an_unexpected_error_is_a_500_that_keeps_the_connection_alive(tmp_path: Any) -> None:
    """uvicorn closes a keep-alive connection when the app raises (Starlette's last-resort
    handler answers 500, then re-raises): the error boundary answers instead, with the usual
    headers, and the next request on the same connection is served."""
    app, auth = _served(tmp_path)

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("storage exploded")

    app.state.services.statements.query = fail
    with _Server(app) as server, socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.settimeout(10)
        status, headers, body = _exchange(conn, "/xapi/statements", auth)
        assert status == 500 and json.loads(body) == {"error": "internal error"}
        assert headers["x-experience-api-version"] == "1.0.3"
        assert "x-experience-api-consistent-through" in headers and "x-request-id" in headers
        status, _, _ = _exchange(
            conn, "/xapi/statements?statementId=" + "0" * 8 + "-0000-4000-8000-" + "0" * 12, auth
        )
        assert status == 404


def test_a_failing_middleware_is_a_500_that_keeps_the_connection_alive(tmp_path: Any) -> None:
    """The outer boundary: an exception in a middleware itself (here while computing
    X-Experience-API-Consistent-Through) still gets an answer, and the connection stays."""
    app, auth = _served(tmp_path)

    def broken() -> int:
        raise RuntimeError("clock exploded")

    app.state.services.statements.consistent_through = broken
    with _Server(app) as server, socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.settimeout(10)
        status, _, body = _exchange(conn, "/xapi/statements", auth)
        assert status == 500 and json.loads(body) == {"error": "internal error"}
        status, _, _ = _exchange(conn, "/health", auth)
        assert status == 200


def test_json_text_is_written_out_as_is_even_beside_a_lone_surrogate() -> None:
    """A value already JSON (a progress record's item list as stored) is written verbatim, on
    orjson's path and on the standard library's (taken for a lone surrogate elsewhere)."""
    text = '[ {"id": "a", "n": 1} ]'
    assert jsontext.compact_json_bytes({"items": jsontext.JSONText(text)}) == (
        b'{"items":' + text.encode() + b"}"
    )
    beside = jsontext.compact_json_bytes({"items": jsontext.JSONText(text), "name": "\ud800"})
    assert json.loads(beside) == {"items": [{"id": "a", "n": 1}], "name": "\ud800"}
    with pytest.raises(TypeError):
        jsontext.compact_json_bytes({"other": object()})
