"""The disk row of `make bench` (bench.disk): real durable commits of the shard's store, counted
and ranked correctly."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.shard.store import ShardStore
from bench.disk import entry_batch, measure, quantile


def test_quantile_is_the_nearest_rank() -> None:
    ms = [float(i) for i in range(1, 101)]  # 1..100
    assert quantile(ms, 0.5) == 50.0
    assert quantile(ms, 0.99) == 99.0
    assert quantile(ms, 0.999) == 100.0
    assert quantile([7.0], 0.5) == 7.0


def test_measure_times_every_commit_and_counts_those_over_the_objective(tmp_path: Path) -> None:
    slow = measure(tmp_path, commits=12, every_s=0.0, objective_ms=0.0)
    assert slow.commits == 12
    assert slow.over_objective == 12  # every real commit takes some time
    qs = list(slow.quantiles_ms.values())
    assert qs == sorted(qs) and qs[0] > 0
    assert slow.max_ms >= qs[-1]
    assert "12 commits" in slow.summary() and "(100.00%) over 0 ms" in slow.summary()
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
