"""Time-stamped LMDB keys: the big-endian time in milliseconds, then the key it stamps. Keys of
one table sort by time, so the oldest are one range at its front, and a purge walks that range
and stops at the first key that is not due. Used by the expiry indexes of the node's advisory
stores (signed-code claims, shared-card sightings) and by the shard's request records."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import lmdb

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
