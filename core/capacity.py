"""Capacity arithmetic of a venue: the LB/T 068-2017 alert level and the admission limit.

Both dimensions count: instantaneous (people inside now) and daily (entries today). A capacity
<= 0 means that dimension has no limit. Integer arithmetic only, so 95 % is exactly 95 %.
"""

from __future__ import annotations

from core.models import AlertLevel, AlertThresholds


def alert_level(
    occupancy: int,
    instant_capacity: int,
    entries_today: int,
    daily_capacity: int,
    thresholds: AlertThresholds,
) -> AlertLevel:
    """The alert level of the fuller dimension; FULL once either capacity is reached."""
    instant = _level(occupancy, instant_capacity, thresholds)
    daily = _level(entries_today, daily_capacity, thresholds)
    return instant if instant >= daily else daily


def would_exceed(
    occupancy: int, instant_capacity: int, entries_today: int, daily_capacity: int
) -> bool:
    """True when admitting one more person would exceed either capacity."""
    return (0 < instant_capacity <= occupancy) or (0 < daily_capacity <= entries_today)


def _level(used: int, capacity: int, t: AlertThresholds) -> AlertLevel:
    if capacity <= 0:
        return AlertLevel.GREEN
    if used >= capacity:
        return AlertLevel.FULL
    pct = used * 100
    if pct >= t.red_pct * capacity:
        return AlertLevel.RED
    if pct >= t.orange_pct * capacity:
        return AlertLevel.ORANGE
    if pct >= t.yellow_pct * capacity:
        return AlertLevel.YELLOW
    return AlertLevel.GREEN
