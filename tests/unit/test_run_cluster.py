"""run_cluster's own logic: the seeded population follows the server's clock, not the host's; the
clock flags."""

from __future__ import annotations

from datetime import date

import pytest

from run_cluster import _frozen_ms, parse_args, server_today


def test_seed_day_follows_a_frozen_clock_in_the_province_time_zone() -> None:
    # 00:30 in Shanghai is still the previous day in UTC: the province's date wins.
    frozen = _frozen_ms("2026-10-01T00:30:00+08:00")
    assert server_today(frozen, "Asia/Shanghai") == date(2026, 10, 1).toordinal()
    assert server_today(frozen, "UTC") == date(2026, 9, 30).toordinal()


def test_seed_day_of_a_frozen_clock_far_from_the_host_date() -> None:
    frozen = _frozen_ms("2031-05-01T10:00:00+08:00")
    assert server_today(frozen, "Asia/Shanghai") == date(2031, 5, 1).toordinal()


def test_clock_flags_give_the_start_instant_and_whether_it_runs() -> None:
    running = parse_args(["--clock-start", "2026-10-01T10:00:00+08:00"])
    assert running.clock_ms == _frozen_ms("2026-10-01T10:00:00+08:00")
    assert running.clock_start is not None and running.frozen_clock is None
    frozen = parse_args(["--frozen-clock", "2026-10-01T10:00:00+08:00"])
    assert frozen.clock_ms == running.clock_ms and frozen.clock_start is None
    assert parse_args([]).clock_ms is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--clock-start", "tomorrow"],
        ["--frozen-clock", "2026-13-01T10:00"],
        ["--clock-start", "2026-10-01T10:00", "--frozen-clock", "2026-10-01T10:00"],
    ],
)
def test_a_bad_clock_flag_is_refused_naming_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--clock-start" in err or "--frozen-clock" in err
