"""Local calendar time of a venue: the instant (epoch ms, read once at the edge) seen in the
venue's time zone, plus the gate-display formats for days and times of day.

Pure: the instant is always passed in; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo

_WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True)
class LocalTime:
    """An instant in one venue's time zone."""

    # Proleptic Gregorian ordinal of the local date (`date.toordinal()`).
    day: int
    # Minutes after local midnight, 0..1439.
    minute: int
    # Monday = 0 .. Sunday = 6, the index into `Venue.opening`.
    weekday: int


def local_time(tz: tzinfo, now_ms: int) -> LocalTime:
    """The local day, minute and weekday at `now_ms` (epoch milliseconds) in `tz`."""
    # Whole seconds are enough for a minute and keep the conversion exact (no float rounding).
    dt = datetime.fromtimestamp(now_ms // 1000, tz)
    return LocalTime(dt.toordinal(), dt.hour * 60 + dt.minute, dt.weekday())


def fmt_minute(minute: int) -> str:
    """Minutes after midnight as "HH:MM" (1440 reads "24:00", the end of the day)."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def fmt_day(ordinal: int) -> str:
    """A date ordinal as ISO "YYYY-MM-DD"."""
    return date.fromordinal(ordinal).isoformat()


def weekday_name(weekday: int) -> str:
    """Short English weekday name, Monday = 0."""
    return _WEEKDAY_NAMES[weekday % 7]
