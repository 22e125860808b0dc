"""core.clock: an instant seen in a venue's time zone, and the display formats."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from core.clock import LocalTime, fmt_day, fmt_minute, local_time, weekday_name

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def _ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("tz", "now_ms", "expected"),
    [
        pytest.param(
            UTC,
            _ms(2026, 10, 1, 16, 30),
            LocalTime(date(2026, 10, 1).toordinal(), 16 * 60 + 30, 3),
            id="utc-thursday-afternoon",
        ),
        pytest.param(
            SHANGHAI,
            _ms(2026, 10, 1, 16, 30),
            LocalTime(date(2026, 10, 2).toordinal(), 30, 4),
            id="shanghai-is-already-friday",
        ),
        pytest.param(
            timezone(timedelta(hours=-5)),
            _ms(2026, 10, 1, 3, 0),
            LocalTime(date(2026, 9, 30).toordinal(), 22 * 60, 2),
            id="fixed-offset-still-yesterday",
        ),
        pytest.param(
            NEW_YORK,
            _ms(2026, 3, 8, 7, 30),
            LocalTime(date(2026, 3, 8).toordinal(), 3 * 60 + 30, 6),
            id="new-york-after-dst-starts",
        ),
        pytest.param(
            NEW_YORK,
            _ms(2026, 3, 8, 6, 30),
            LocalTime(date(2026, 3, 8).toordinal(), 60 + 30, 6),
            id="new-york-before-dst-starts",
        ),
        pytest.param(
            SHANGHAI,
            _ms(2026, 10, 1, 16, 0) - 1,
            LocalTime(date(2026, 10, 1).toordinal(), 23 * 60 + 59, 3),
            id="last-millisecond-of-the-day",
        ),
        pytest.param(
            SHANGHAI,
            _ms(2026, 10, 1, 16, 0),
            LocalTime(date(2026, 10, 2).toordinal(), 0, 4),
            id="local-midnight",
        ),
    ],
)
def test_local_time(tz: ZoneInfo, now_ms: int, expected: LocalTime) -> None:
    assert local_time(tz, now_ms) == expected


@pytest.mark.parametrize(
    ("minute", "text"),
    [(0, "00:00"), (9, "00:09"), (510, "08:30"), (1439, "23:59"), (1440, "24:00")],
)
def test_fmt_minute(minute: int, text: str) -> None:
    assert fmt_minute(minute) == text


@pytest.mark.parametrize(
    ("day", "text"),
    [(date(2026, 10, 1), "2026-10-01"), (date(2027, 1, 9), "2027-01-09")],
    ids=["october", "zero-padded"],
)
def test_fmt_day(day: date, text: str) -> None:
    assert fmt_day(day.toordinal()) == text


@pytest.mark.parametrize(
    ("weekday", "name"), [(0, "Mon"), (3, "Thu"), (6, "Sun"), (9, "Wed")], ids=str
)
def test_weekday_name_wraps_past_sunday(weekday: int, name: str) -> None:
    assert weekday_name(weekday) == name
