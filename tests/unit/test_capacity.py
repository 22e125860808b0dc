"""core.capacity: LB/T 068-2017 alert levels and the admission limit, both dimensions."""

from __future__ import annotations

import pytest

from core.capacity import alert_level, would_exceed
from core.models import AlertLevel, AlertThresholds

DEFAULT = AlertThresholds()
G, Y, OR, R, F = (
    AlertLevel.GREEN,
    AlertLevel.YELLOW,
    AlertLevel.ORANGE,
    AlertLevel.RED,
    AlertLevel.FULL,
)


@pytest.mark.parametrize(
    ("occupancy", "instant", "today", "daily", "thresholds", "expected"),
    [
        pytest.param(0, 100, 0, 1000, DEFAULT, G, id="empty"),
        pytest.param(79, 100, 0, 1000, DEFAULT, G, id="instant-79pct"),
        pytest.param(80, 100, 0, 1000, DEFAULT, Y, id="instant-80pct-yellow"),
        pytest.param(89, 100, 0, 1000, DEFAULT, Y, id="instant-89pct"),
        pytest.param(90, 100, 0, 1000, DEFAULT, OR, id="instant-90pct-orange"),
        pytest.param(94, 100, 0, 1000, DEFAULT, OR, id="instant-94pct"),
        pytest.param(95, 100, 0, 1000, DEFAULT, R, id="instant-95pct-red"),
        pytest.param(99, 100, 0, 1000, DEFAULT, R, id="instant-99pct"),
        pytest.param(100, 100, 0, 1000, DEFAULT, F, id="instant-reached-full"),
        pytest.param(130, 100, 0, 1000, DEFAULT, F, id="instant-over-full"),
        pytest.param(0, 100, 800, 1000, DEFAULT, Y, id="daily-80pct-yellow"),
        pytest.param(0, 100, 950, 1000, DEFAULT, R, id="daily-95pct-red"),
        pytest.param(0, 100, 1000, 1000, DEFAULT, F, id="daily-reached-full"),
        pytest.param(80, 100, 950, 1000, DEFAULT, R, id="fuller-dimension-wins-daily"),
        pytest.param(95, 100, 800, 1000, DEFAULT, R, id="fuller-dimension-wins-instant"),
        pytest.param(10**6, 0, 950, 1000, DEFAULT, R, id="no-instant-limit"),
        pytest.param(95, 100, 10**6, 0, DEFAULT, R, id="no-daily-limit"),
        pytest.param(10**6, 0, 10**6, -1, DEFAULT, G, id="no-limits-at-all"),
        pytest.param(19, 20, 0, 0, DEFAULT, R, id="exactly-95pct-of-20"),
        pytest.param(6, 7, 0, 0, DEFAULT, Y, id="6-of-7-is-85pct"),
        pytest.param(60, 100, 0, 0, AlertThresholds(50, 60, 70), OR, id="custom-thresholds"),
        pytest.param(49, 100, 0, 0, AlertThresholds(50, 60, 70), G, id="custom-below-yellow"),
    ],
)
def test_alert_level(
    occupancy: int,
    instant: int,
    today: int,
    daily: int,
    thresholds: AlertThresholds,
    expected: AlertLevel,
) -> None:
    assert alert_level(occupancy, instant, today, daily, thresholds) is expected


@pytest.mark.parametrize(
    ("occupancy", "instant", "today", "daily", "expected"),
    [
        pytest.param(0, 100, 0, 1000, False, id="empty"),
        pytest.param(99, 100, 0, 1000, False, id="last-place-inside"),
        pytest.param(100, 100, 0, 1000, True, id="instant-reached"),
        pytest.param(0, 100, 999, 1000, False, id="last-entry-of-the-day"),
        pytest.param(0, 100, 1000, 1000, True, id="daily-reached"),
        pytest.param(5000, 0, 0, 1000, False, id="no-instant-limit"),
        pytest.param(0, 100, 5000, 0, False, id="no-daily-limit"),
        pytest.param(0, 1, 0, 1, False, id="capacity-one-empty"),
        pytest.param(1, 1, 0, 1, True, id="capacity-one-taken"),
    ],
)
def test_would_exceed(occupancy: int, instant: int, today: int, daily: int, expected: bool) -> None:
    assert would_exceed(occupancy, instant, today, daily) is expected
