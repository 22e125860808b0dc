"""Request records in LMDB: keyed by decision time, expired from the front, and moved once from a
store written before that layout. No Ray."""

from __future__ import annotations

from pathlib import Path

import lmdb

from actors.shard.store import SHARD_MAP_SIZE
from actors.shard.venue_shard import REQUEST_TTL_MS, VenueShard, shard_dir
from tests.unit import test_shard
from tests.unit.old_layouts import to_old_table
from tests.unit.test_shard import Clock, _decide, _req, _shard

data_dir = test_shard.data_dir  # the shard tests' catalog, as a fixture of this module too


def _stored(shard: VenueShard) -> dict[str, int]:
    """request_id -> decided_at_ms of the records in LMDB."""
    return {rec.decision.request_id: rec.decision.decided_at_ms for _, rec in
            shard.store.iter_requests()}  # fmt: skip


def test_records_leave_lmdb_once_expired_and_are_read_back_oldest_first(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    t0 = clock.ms
    _decide(shard, _req("b", "lake", "C1"))
    clock.ms += 1000
    _decide(shard, _req("a", "lake", "C2"))
    assert list(_stored(shard).items()) == [("b", t0), ("a", t0 + 1000)]
    clock.ms = t0 + REQUEST_TTL_MS + 1
    _decide(shard, _req("c", "lake", "C3"))  # the batch expires "b"
    assert list(_stored(shard)) == ["a", "c"]
    shard.close()
    again = _shard(data_dir, clock)
    assert list(_stored(again)) == ["a", "c"]
    assert set(again.requests) == {k for k, _ in again.store.iter_requests()}


def test_a_request_id_decided_again_after_expiry_keeps_its_new_record(data_dir: Path) -> None:
    """Expiry and the new decision fall in one batch: the new record survives a restart, so a
    retry of it is answered, not decided (and counted) a second time."""
    clock = Clock()
    shard = _shard(data_dir, clock)
    _decide(shard, _req("r1", "lake", "C1"))
    clock.ms += REQUEST_TTL_MS + 1
    [second] = _decide(shard, _req("r1", "lake", "C1"))
    assert second.decided_at_ms == clock.ms
    assert _stored(shard) == {"r1": clock.ms}
    shard.close()
    again = _shard(data_dir, clock)
    admits = again.stored_admits()
    clock.ms += 1000
    [retry] = _decide(again, _req("r1", "lake", "C1"))
    assert retry == second
    assert again.stored_admits() == admits


def _to_old_layout(data: Path) -> int:
    """Rewrites a shard store as a version before time keys kept it: `req`, by request key."""
    return to_old_table(data, b"req_by_time", b"req", lambda key: key[8:])


def test_a_store_of_the_old_layout_has_its_records_moved_once(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    first = _decide(shard, _req("r1", "lake", "C1"), _req("r2", "small", "C2"))
    shard.close()
    assert _to_old_layout(data_dir) == 2
    again = _shard(data_dir, clock)
    assert _decide(again, _req("r1", "lake", "C1"), _req("r2", "small", "C2")) == first
    assert again.stored_admits() == 2
    assert set(_stored(again)) == {"r1", "r2"}
    again.close()
    env = lmdb.open(str(shard_dir(data_dir, 0)), map_size=SHARD_MAP_SIZE, max_dbs=10)
    with env.begin() as txn:
        assert txn.get(b"req") is None and txn.get(b"req_by_time") is not None
    env.close()


def test_records_a_stop_left_behind_expire_at_the_next_start(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    _decide(shard, _req("old", "lake", "C1"))
    clock.ms += 60_000
    _decide(shard, _req("young", "lake", "C2"))
    shard.close()
    clock.ms += REQUEST_TTL_MS - 30_000  # "old" is past its time, "young" is not
    again = _shard(data_dir, clock)
    assert list(_stored(again)) == ["young"]
    assert list(again.requests) == [k for k, _ in again.store.iter_requests()]
    [retry] = _decide(again, _req("young", "lake", "C2"))  # still answered from its record
    assert retry.decided_at_ms == clock.ms - REQUEST_TTL_MS + 30_000
