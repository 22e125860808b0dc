"""Test helpers: a shard store rewritten as an older passgate kept it, and the named tables of an
LMDB environment. No Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lmdb

from actors.shard.store import SHARD_MAP_SIZE
from actors.shard.venue_shard import shard_dir


def table_names(path: Path) -> set[bytes]:
    """The named tables of the LMDB environment at `path`."""
    env = lmdb.open(str(path), map_size=SHARD_MAP_SIZE, max_dbs=10)
    with env.begin() as txn:
        names = {bytes(k) for k in txn.cursor().iternext(keys=True, values=False)}
    env.close()
    return names


def to_old_table(data: Path, new: bytes, old: bytes, old_key: Callable[[bytes], bytes]) -> int:
    """Moves every record of shard 0's table `new` into table `old` under `old_key(key)`, and
    drops `new`; returns how many moved."""
    env = lmdb.open(str(shard_dir(data, 0)), map_size=SHARD_MAP_SIZE, max_dbs=10)
    with env.begin(write=True) as txn:
        new_db = env.open_db(new, txn=txn)
        old_db = env.open_db(old, txn=txn)
        moved = 0
        for key, raw in txn.cursor(db=new_db):
            txn.put(old_key(bytes(key)), bytes(raw), db=old_db)
            moved += 1
        txn.drop(new_db, delete=True)
    env.close()
    return moved
