"""loadtest.config: the clock a self-started server runs."""

from __future__ import annotations

import pytest

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from loadtest.config import LoadConfig


def test_a_self_started_server_starts_its_clock_at_the_sim_instant_and_lets_it_run() -> None:
    province = load_province(DEFAULT_CONFIG_DIR)
    cfg = LoadConfig(sim_start="2026-10-01T10:00:00+08:00")
    assert cfg.clock_args(province) == ["--clock-start", "2026-10-01T10:00:00+08:00"]
    frozen = LoadConfig(sim_start="2026-10-01T10:00:00+08:00", server_clock="frozen")
    assert frozen.clock_args(province) == ["--frozen-clock", "2026-10-01T10:00:00+08:00"]
    # The real clock ("now"), or another's server: no flag.
    assert LoadConfig(sim_start="now").clock_args(province) == []
    assert LoadConfig(target="127.0.0.1:1").clock_args(province) == []


def test_an_unknown_server_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="server clock"):
        LoadConfig(server_clock="sundial").check()
