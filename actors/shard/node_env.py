"""The node's shared, advisory LMDB environments (signed-code claims, shared-card sightings): one
open per process, counted, because LMDB allows a process to open an environment only once and
shards constructed side by side in one process (unit tests, benchmarks) share it. Neither store
is fsynced: a claim or a sighting lost in a power cut costs a replay window or a flag, never an
entry."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from actors.errors import storage_error


class _Shared:
    __slots__ = ("env", "users")

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.users = 0


_OPEN: dict[str, _Shared] = {}


def acquire(path: Path, map_size: int, max_dbs: int, what: str) -> lmdb.Environment:
    """Opens (or shares) the environment at `path`; `what` names it in an error."""
    path.mkdir(parents=True, exist_ok=True)
    name = str(path.resolve())
    shared = _OPEN.get(name)
    if shared is None:
        try:
            env = lmdb.open(
                name,
                map_size=map_size,
                max_dbs=max_dbs,
                sync=False,
                metasync=False,
                readahead=False,
                max_readers=1024,
            )
        except lmdb.Error as exc:
            raise storage_error(f"cannot open {what} at {path}", exc) from exc
        shared = _OPEN[name] = _Shared(env)
    shared.users += 1
    return shared.env


def release(path: Path) -> None:
    """Closes the environment once its last user in this process lets go."""
    name = str(path.resolve())
    shared = _OPEN.get(name)
    if shared is None:
        return
    shared.users -= 1
    if shared.users == 0:
        del _OPEN[name]
        shared.env.close()


# An expiry index's keys: the big-endian time, then the key of the entry it stamps.
STAMP = struct.Struct(">Q")


def stamp_key(at_ms: int, key: bytes) -> bytes:
    return STAMP.pack(at_ms) + key


def purge_index(
    txn: lmdb.Transaction,
    index: Any,
    db: Any,
    before_ms: int,
    limit: int,
    still_due: Callable[[bytes | memoryview], bool] | None = None,
) -> int:
    """Deletes up to `limit` entries of `db` stamped in `index` at or before `before_ms`, oldest
    first, with their stamps; returns how many stamps went. With `still_due`, an entry is deleted
    only if it says so of the entry's value (one rewritten since keeps its place)."""
    cur = txn.cursor(db=index)
    done = 0
    if not cur.first():
        return 0
    while done < limit:
        ikey = cur.key()
        if not ikey or STAMP.unpack_from(ikey)[0] > before_ms:
            break
        key = bytes(ikey[STAMP.size :])
        raw = txn.get(key, db=db)
        if raw is not None and (still_due is None or still_due(raw)):
            txn.delete(key, db=db)
        done += 1
        if not cur.delete():
            break
    return done
