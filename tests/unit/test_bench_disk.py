"""The disk row of `make bench` (bench.disk): real durable commits of the shard's store, counted
and ranked correctly."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.shard.store import ShardStore
from bench.disk import as_dict, entry_batch, measure


def test_measure_times_every_commit_and_counts_those_over_the_objective(tmp_path: Path) -> None:
    slow = measure(tmp_path, commits=12, every_s=0.0, objective_ms=0.0)
    assert slow.commits == 12
    assert slow.over_objective == 12  # every real commit takes some time
    f = slow.figures_ms
    qs = [f["p50"], f["p90"], f["p99"], f["p99_9"], f["max"]]
    assert qs == sorted(qs) and qs[0] > 0
    assert "12 commits" in slow.summary() and "(100.00%) over 0 ms" in slow.summary()
    # The load test's report reads the same names as its own latencies.
    assert {"commits", "p50", "p99", "p99_9", "max", "over_objective"} <= set(as_dict(slow))
    fast = measure(tmp_path, commits=3, every_s=0.0, objective_ms=60_000.0)
    assert fast.over_objective == 0
    assert list(tmp_path.iterdir()) == []  # its store is gone


def test_the_timedentry_batch_is_what_a_shard_commits(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "s")
    try:
        store.commit(entry_batch(0, 50))
        assert len(list(store.iter_requests())) == 50
        assert len(list(store.iter_log())) == 50
    finally:
        store.close()


def test_measure_refuses_no_commits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commits"):
        measure(tmp_path, commits=0)
