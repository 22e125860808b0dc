"""run_cluster's own logic: the seeded population follows the server's clock, not the host's."""

from __future__ import annotations

from datetime import date

from run_cluster import _frozen_ms, server_today


def test_seed_day_follows_a_frozen_clock_in_the_province_time_zone() -> None:
    # 00:30 in Shanghai is still the previous day in UTC: the province's date wins.
    frozen = _frozen_ms("2026-10-01T00:30:00+08:00")
    assert server_today(frozen, "Asia/Shanghai") == date(2026, 10, 1).toordinal()
    assert server_today(frozen, "UTC") == date(2026, 9, 30).toordinal()


def test_seed_day_of_a_frozen_clock_far_from_the_host_date() -> None:
    frozen = _frozen_ms("2031-05-01T10:00:00+08:00")
    assert server_today(frozen, "Asia/Shanghai") == date(2031, 5, 1).toordinal()
