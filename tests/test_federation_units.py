"""Federation pieces without a network: filters, back-off, checkpoints, Retry-After."""

from __future__ import annotations

import random

from lrs.federation.client import parse_retry_after
from lrs.federation.filters import StatementFilter
from lrs.federation.forwarding import backoff_delay
from lrs.federation.pulling import Puller

PASSED = "http://adlnet.gov/expapi/verbs/passed"
FAILED = "http://adlnet.gov/expapi/verbs/failed"
REG = "6f5a1a44-3c3e-4a27-9e55-4c1f0a1b2c3d"


def _fields(**overrides: object) -> dict:
    base = {
        "verb": PASSED,
        "activity": "http://example.com/course/m1/quiz",
        "related_activities": ["http://example.com/course/m1/quiz", "http://example.com/course"],
        "registration": REG,
    }
    base.update(overrides)
    return base


def test_empty_filter_takes_everything() -> None:
    assert StatementFilter().is_empty
    assert StatementFilter().matches(_fields(verb=FAILED, activity=None))


def test_kinds_combine_with_and_values_with_or() -> None:
    f = StatementFilter(verbs=(PASSED, FAILED), activity_prefixes=("http://example.com/course/",))
    assert f.matches(_fields())
    assert f.matches(_fields(verb=FAILED))
    assert not f.matches(_fields(verb="http://adlnet.gov/expapi/verbs/experienced"))
    assert not f.matches(_fields(activity="http://example.com/other"))


def test_exact_activities_and_related_activities() -> None:
    exact = StatementFilter(activities=("http://example.com/course",))
    assert not exact.matches(_fields())  # the object is the quiz, not the course
    related = StatementFilter(activities=("http://example.com/course",), related_activities=True)
    assert related.matches(_fields())


def test_registration_is_case_insensitive() -> None:
    assert StatementFilter(registration=REG.upper()).matches(_fields())
    assert not StatementFilter(registration=REG.upper()).matches(_fields(registration=None))


def test_filter_round_trips_through_its_document() -> None:
    f = StatementFilter(
        verbs=(PASSED,),
        activities=("http://a",),
        activity_prefixes=("http://b/",),
        related_activities=True,
        registration=REG,
    )
    assert StatementFilter.from_doc(f.to_doc()) == f
    assert StatementFilter.from_doc(None) == StatementFilter()


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 2.0, 900.0, rng) for n in range(1, 16)]
    for n, delay in enumerate(delays, start=1):
        step = min(900.0, 2.0 * 2 ** (n - 1))
        assert step / 2 <= delay <= step
    assert max(delays) <= 900.0
    # Jitter: the same attempt does not always wait the same time.
    assert len({round(backoff_delay(5, 2.0, 900.0, rng), 6) for _ in range(10)}) > 1


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: no wait


def test_checkpoint_never_passes_consistent_through() -> None:
    page = [{"stored": "2026-01-01T00:00:01Z"}, {"stored": "2026-01-01T00:00:05Z"}]
    last = 1767225605000000  # 2026-01-01T00:00:05Z
    assert Puller._advance(None, page, None) == last
    through = "2026-01-01T00:00:03Z"
    assert Puller._advance(None, page, through) == last - 2_000_000
    # Never backwards, and a page without `stored` values keeps it.
    assert Puller._advance(last + 1, page, None) == last + 1
    assert Puller._advance(42, [{"id": "x"}], None) == 42


def test_default_retries_outlast_an_hour_of_outage() -> None:
    """With the default settings the last retry comes more than an hour after the first failure,
    whatever the jitter draws (equal jitter waits at least half of each step)."""
    from lrs.config import Settings
    from lrs.federation.service import forwarding_settings

    s = forwarding_settings(Settings(storage="memory"))
    # Attempt n fails -> wait backoff_delay(n); after attempt max_attempts it is a dead letter.
    shortest = sum(
        min(s.backoff_max, s.backoff_base * 2 ** (n - 1)) / 2 for n in range(1, s.max_attempts)
    )
    assert shortest > 3600


async def test_more_link_to_another_origin_is_refused() -> None:
    """`more` is a path on the source (xAPI: no scheme, host or port); an absolute link to
    another host must not receive the source's credentials."""
    import httpx
    import pytest

    from lrs.federation.client import PeerClient, PeerConfig, PeerError

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"statements": [], "more": ""})

    config = PeerConfig("https://source.example/xapi/", username="key", password="secret")
    async with PeerClient(config, httpx.MockTransport(handler)) as client:
        # A path (the usual form) and a relative reference resolve against the endpoint.
        await client.get_statements("1.0.3", more="/xapi/statements?cursor=a")
        await client.get_statements("1.0.3", more="statements?cursor=b")
        assert [str(r.url) for r in seen] == [
            "https://source.example/xapi/statements?cursor=a",
            "https://source.example/xapi/statements?cursor=b",
        ]
        for elsewhere in (
            "https://evil.example/xapi/statements?cursor=c",
            "//evil.example/xapi/statements",
            "http://source.example/xapi/statements",  # another scheme: another origin
            "https://source.example:8443/xapi/statements",
        ):
            with pytest.raises(PeerError, match="origin"):
                await client.get_statements("1.0.3", more=elsewhere)
    assert len(seen) == 2
