"""Usage records in LMDB: keyed by pass, then venue, so that one pass's usage (`GetPass`) is one
key range; a store of the venue-first layout has them moved at open. No Ray."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from actors.errors import StorageError
from actors.shard import store as shard_store
from actors.shard.store import SHARD_MAP_SIZE, BatchWrites, ShardStore
from actors.shard.venue_shard import shard_dir
from core.keys import split_usage_key, split_venue_first_usage_key, usage_key
from core.models import Reason
from core.records import Usage
from tests.unit import test_shard
from tests.unit.old_layouts import table_names, to_old_table
from tests.unit.test_shard import Clock, _decide, _req, _shard

data_dir = test_shard.data_dir  # the shard tests' catalog, as a fixture of this module too


def test_usage_of_a_pass_is_its_own_key_range(tmp_path: Path) -> None:
    """Pass ids that are prefixes of one another, and venues on both sides of them in key order,
    never leak into each other's answer."""
    store = ShardStore(tmp_path, sync=False)
    writes = BatchWrites()
    for n, (venue, pass_id) in enumerate(
        [("a", "P1"), ("z", "P1"), ("m", "P10"), ("a", "P"), ("b", "P1x"), ("c", "Q1")], 1
    ):
        writes.usage[usage_key(venue, pass_id)] = Usage(entries=n)
    store.commit(writes)
    assert [(v, u.entries) for v, u in store.usage_of_pass("P1")] == [("a", 1), ("z", 2)]
    assert [(v, u.entries) for v, u in store.usage_of_pass("P10")] == [("m", 3)]
    assert [(v, u.entries) for v, u in store.usage_of_pass("P")] == [("a", 4)]
    assert list(store.usage_of_pass("P2")) == []
    assert split_usage_key(usage_key("venue", "pass")) == ("venue", "pass")
    store.close()


def _venue_first(key: bytes) -> bytes:
    """A usage key as the layout before the pass-first keys had it: venue, then pass."""
    venue_id, pass_id = split_usage_key(key)
    old_key = usage_key(pass_id, venue_id)  # the same two parts, the venue first
    assert split_venue_first_usage_key(old_key) == (venue_id, pass_id)
    return old_key


def _to_venue_first(data: Path) -> int:
    """Rewrites a shard store's usage as a version before the pass-first keys kept it: `usage`,
    by venue, then pass."""
    return to_old_table(data, b"usage_by_pass", b"usage", _venue_first)


def _tables(data: Path) -> set[bytes]:
    return table_names(shard_dir(data, 0))


def test_a_store_of_the_venue_first_layout_has_its_usage_moved_once(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    _decide(shard, _req("r1", "hard", "C1"), _req("r2", "lake", "C1"), _req("r3", "lake", "C2"))
    before = {p: shard.usage_of(p) for p in ("P1", "P2")}
    shard.close()
    assert _to_venue_first(data_dir) == 3
    assert b"usage" in _tables(data_dir) and b"usage_by_pass" not in _tables(data_dir)
    again = _shard(data_dir, clock)
    assert {p: again.usage_of(p) for p in ("P1", "P2")} == before
    clock.ms += 60_000
    # The moved usage still decides: P1 entered "hard" a minute ago (hard anti-passback).
    [refused] = _decide(again, _req("r4", "hard", "C1"))
    assert refused.reason == Reason.ANTI_PASSBACK
    again.close()
    assert b"usage" not in _tables(data_dir)
    third = _shard(data_dir, clock)  # nothing left to move
    assert {p: third.usage_of(p) for p in ("P1", "P2")} == before
    third.close()


def test_a_move_cut_short_goes_on_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk moves and leaves in one transaction: a move that fails part way loses and
    doubles nothing, and the next open finishes it."""
    env = lmdb.open(str(tmp_path), map_size=SHARD_MAP_SIZE, max_dbs=10)
    old = env.open_db(b"usage")
    with env.begin(write=True) as txn:
        for i in range(7):
            txn.put(usage_key(f"P{i}", "lake"), shard_store.encode(Usage(entries=i)), db=old)
    env.close()
    monkeypatch.setattr(shard_store, "MOVE_CHUNK", 2)
    calls = 0
    real = shard_store.split_venue_first_usage_key

    def failing(key: bytes) -> tuple[str, str]:
        nonlocal calls
        calls += 1
        if calls == 5:  # in the third chunk
            raise lmdb.Error("disk went away")
        return real(key)

    monkeypatch.setattr(shard_store, "split_venue_first_usage_key", failing)
    with pytest.raises(StorageError):
        ShardStore(tmp_path, sync=False)
    monkeypatch.setattr(shard_store, "split_venue_first_usage_key", real)
    store = ShardStore(tmp_path, sync=False)
    found = {p: [(v, u.entries) for v, u in store.usage_of_pass(p)] for p in
             (f"P{i}" for i in range(7))}  # fmt: skip
    assert found == {f"P{i}": [("lake", i)] for i in range(7)}
    store.close()
    assert b"usage" not in table_names(tmp_path)
