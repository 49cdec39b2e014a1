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
