"""The decision log's retention: lines older than the province's decision_log_days leave the log
with later commits, in bounded steps, never a line a restart still replays, and the totals the
log answers for (stored admits, counters after a restart) stay whole. No Ray."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from actors.shard import store as shard_store
from actors.shard.venue_shard import DAY_MS, VenueShard
from core.records import Request
from tests.unit import test_shard
from tests.unit.test_shard import Clock, _annul, _decide, _province, _req

data_dir = test_shard.data_dir  # the shard tests' catalog, as a fixture of this module too


def _kept_for(days: int, data: Path, clock: Clock) -> VenueShard:
    province = dataclasses.replace(_province(), decision_log_days=days)
    return VenueShard(0, 1, province, str(data), clock)


def _lines(shard: VenueShard) -> list[str]:
    return [line.request_id for _, line in shard.store.iter_log()]


def test_lines_past_the_retention_leave_and_the_totals_stay_whole(data_dir: Path) -> None:
    clock = Clock()
    shard = _kept_for(1, data_dir, clock)
    _decide(shard, _req("a1", "lake", "C1"), _req("a2", "lake", "C2"), _req("a3", "lake", "C3"))
    assert _annul(shard, "a2", "lake", "lake-g1", "C2")[0]
    old = _lines(shard)
    assert len(old) == 4 and shard.stored_admits() == 2
    clock.ms += DAY_MS + 60_000
    _decide(shard, _req("b1", "lake", "C4"))  # its snapshot covers the old lines
    assert _lines(shard)[: len(old)] == old  # kept until a snapshot already on disk covers them
    clock.ms += 2_000
    _decide(shard, _req("b2", "lake", "C5"))
    assert _lines(shard) == ["b1", "b2"]
    trim = shard.store.log_trim()
    assert (trim.records, trim.admits) == (4, 2)
    assert shard.stored_admits() == 4  # a1, a3, b1, b2
    status = shard.venue_status("lake")
    shard.close()
    again = _kept_for(1, data_dir, clock)  # counters: the snapshot, then the log after it
    assert again.venue_status("lake") == status
    assert again.stored_admits() == 4
    assert again.stats()["log_lines_trimmed"] == 4 and again.stats()["log_lines"] == 2
    again.close()


def test_a_backlog_leaves_in_bounded_steps(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most twice what a commit adds (and LOG_TRIM_MIN) goes per commit, oldest first."""
    monkeypatch.setattr(shard_store, "LOG_TRIM_MIN", 2)
    clock = Clock()
    shard = _kept_for(1, data_dir, clock)
    _decide(shard, *(_req(f"old{i}", "lake", f"C{i}") for i in range(1, 11)))
    clock.ms += 2 * DAY_MS
    _decide(shard, _req("n0", "small", "C1"))  # snapshot after the old lines, none trimmed yet
    trimmed = []
    for i in range(1, 4):
        clock.ms += 2_000
        _decide(shard, _req(f"n{i}", "small", f"C{i + 1}"))
        trimmed.append(shard.store.log_trim().records)
    assert trimmed == [2, 4, 6]
    assert _lines(shard)[:4] == ["old7", "old8", "old9", "old10"]
    shard.close()


def test_a_young_log_is_left_alone(data_dir: Path) -> None:
    clock = Clock()
    shard = _kept_for(90, data_dir, clock)
    reqs: list[Request] = [_req(f"r{i}", "lake", f"C{i}") for i in range(1, 6)]
    for req in reqs:
        clock.ms += 3_600_000
        _decide(shard, req)
    clock.ms += 80 * DAY_MS
    _decide(shard, _req("late", "lake", "C6"))
    assert _lines(shard) == [r.request_id for r in reqs] + ["late"]
    assert shard.store.log_trim().records == 0
    shard.close()
