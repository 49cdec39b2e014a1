"""xAPI timestamps (Data 4.5): ISO 8601 / RFC 3339 in, UTC out; bad input is a TimestampError."""

from datetime import UTC, datetime

import pytest

from lrs.xapi.timestamps import TimestampError, format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05.123456789+01:00", datetime(2026, 1, 2, 2, 4, 5, 123456, UTC)),
        ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_valid_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02T03:04:05-00:00",  # RFC 3339 "unknown offset" is forbidden by xAPI
        "2026-01-02T03:04:05Z\n",
        "２０２６-01-02T03:04:05Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-02-30T00:00:00Z",
        "yesterday",
    ],
)
def test_invalid_timestamps(text: str) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(text)


def test_format_is_utc_with_microseconds() -> None:
    assert format_timestamp(parse_timestamp("2026-01-02T03:04:05.5+02:00")) == (
        "2026-01-02T01:04:05.500000Z"
    )


def test_format_micros_is_format_timestamp_of_the_same_moment() -> None:
    import random

    from lrs.xapi.timestamps import format_micros, format_timestamp, from_micros

    rng = random.Random(5)
    for micros in [0, 1, 999_999, 86_399_999_999, *(rng.randrange(2**52) for _ in range(500))]:
        assert format_micros(micros) == format_timestamp(from_micros(micros))
