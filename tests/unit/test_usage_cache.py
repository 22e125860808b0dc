"""The shard's usage cache is bounded: committed records leave memory and are read back from
LMDB, and a record whose staged write is not yet durable never leaves (LMDB still holds the
value before it). No Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.shard import usage_cache
from actors.shard.pipeline import CommitPipeline
from actors.shard.venue_shard import VenueShard
from core.keys import usage_key
from core.models import Reason
from tests.unit.test_pipelined_commit import GatedCommit, _batch, _run, _scan, _settle, data_dir
from tests.unit.test_shard import Clock, _decide, _req, _shard

__all__ = ["data_dir"]  # the fixture


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_cache, "USAGE_CACHE_MAX", 2)
    monkeypatch.setattr(usage_cache, "USAGE_EVICT_STEP", 0)


@pytest.mark.usefixtures("small_cache")
def test_committed_records_leave_memory_and_still_decide(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    for i in range(1, 7):
        [admitted] = _decide(shard, _req(f"r{i}", "hard", f"C{i}"))
        assert admitted.allowed
    assert len(shard.usage) <= 2
    assert usage_key("hard", "P1") not in shard.usage
    clock.ms += 60_000
    # P1 entered "hard" a minute ago (hard anti-passback, 30 minutes): LMDB says so.
    [again] = _decide(shard, _req("r7", "hard", "C1"))
    assert again.reason == Reason.ANTI_PASSBACK
    assert [(v, u.entries) for v, u in shard.usage_of("P1")] == [("hard", 1)]
    shard.close()


@pytest.mark.usefixtures("small_cache")
def test_a_record_staged_and_not_yet_durable_stays_in_memory(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        # The cache holds 2: the third record written makes it trim, oldest first.
        first = _batch(pipe, shard, _scan("a1", "hard", "C1"))
        await gated.wait_started()  # P1's entry is staged; its commit is held open
        other = _batch(pipe, shard, _scan("b1", "lake", "C2"), _scan("b2", "lake", "C3"))
        await _settle()
        assert usage_key("hard", "P1") in shard.usage and shard.usage.pending() == 3
        # Read from LMDB, P1 would not have entered "hard" yet and would be let in twice.
        again = _batch(pipe, shard, _scan("a2", "hard", "C1"))
        await _settle()
        gated.open_all()
        [entered], _, [refused] = await first, await other, await again
        assert entered.allowed
        assert refused.reason == Reason.ANTI_PASSBACK
        assert shard.usage.pending() == 0
        assert shard.stored_admits() == 3

    _run(data_dir, body)
