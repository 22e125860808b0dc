"""A shard's LMDB environment: usage, request records, decision log, venue state, reservations.

Every batch is written with one write transaction (group commit) and the shard acknowledges only
after `commit` returns. On start the shard rebuilds its memory from here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from actors.codec import packb, unpackb
from actors.errors import StorageError

SHARD_MAP_SIZE = 32 << 30  # sparse
_SEQ = struct.Struct(">Q")
_COUNTERS_KEY = b"counters"


def usage_key(venue_id: str, pass_id: str) -> bytes:
    return f"{venue_id}\x00{pass_id}".encode()


def split_usage_key(key: bytes) -> tuple[str, str]:
    venue_id, pass_id = bytes(key).decode().split("\x00", 1)
    return venue_id, pass_id


def reservation_key(venue_id: str, day: int, slot_id: str, pass_id: str) -> bytes:
    return f"{venue_id}\x00{day}\x00{slot_id}\x00{pass_id}".encode()


@dataclass
class BatchWrites:
    """Everything one batch changes, written in one transaction."""

    usage: dict[bytes, list[Any]] = field(default_factory=dict)
    requests: dict[str, list[Any]] = field(default_factory=dict)
    expired_requests: list[str] = field(default_factory=list)
    log: list[list[Any]] = field(default_factory=list)
    venues: dict[str, dict[str, Any]] = field(default_factory=dict)
    reservations_put: dict[bytes, int] = field(default_factory=dict)
    reservations_del: list[bytes] = field(default_factory=list)
    counters: bytes | None = None

    def empty(self) -> bool:
        return not (
            self.usage
            or self.requests
            or self.expired_requests
            or self.log
            or self.venues
            or self.reservations_put
            or self.reservations_del
            or self.counters is not None
        )


class ShardStore:
    def __init__(self, path: Path, *, sync: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(path), map_size=SHARD_MAP_SIZE, max_dbs=8, sync=sync, metasync=sync
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open shard store at {path}: {exc}") from exc
        self._usage = self._env.open_db(b"usage")
        self._req = self._env.open_db(b"req")
        self._log = self._env.open_db(b"log")
        self._venue = self._env.open_db(b"venue")
        self._resv = self._env.open_db(b"resv")
        self._meta = self._env.open_db(b"meta")
        self.next_seq = self._last_seq() + 1

    def _last_seq(self) -> int:
        with self._env.begin(db=self._log) as txn:
            cur = txn.cursor()
            return _SEQ.unpack(cur.key())[0] if cur.last() else 0

    def commit(self, w: BatchWrites) -> int:
        """Writes the batch durably; returns the log sequence of its last record."""
        seq = self.next_seq
        try:
            with self._env.begin(write=True) as txn:
                for key, row in w.usage.items():
                    txn.put(key, packb(row), db=self._usage)
                for rid, rec in w.requests.items():
                    txn.put(rid.encode(), packb(rec), db=self._req)
                for rid in w.expired_requests:
                    txn.delete(rid.encode(), db=self._req)
                for rec in w.log:
                    txn.put(_SEQ.pack(seq), packb(rec), db=self._log, append=True)
                    seq += 1
                for venue_id, state in w.venues.items():
                    txn.put(venue_id.encode(), packb(state), db=self._venue)
                for key, status in w.reservations_put.items():
                    txn.put(key, packb(status), db=self._resv)
                for key in w.reservations_del:
                    txn.delete(key, db=self._resv)
                if w.counters is not None:
                    # The snapshot precedes this batch's log: tag it with the last seq before.
                    txn.put(_COUNTERS_KEY, packb([self.next_seq - 1, w.counters]), db=self._meta)
        except lmdb.Error as exc:
            raise StorageError(f"shard commit failed: {exc}") from exc
        self.next_seq = seq
        return seq - 1

    def usage_of_pass(self, pass_id: str) -> Iterator[tuple[str, list[Any]]]:
        """(venue_id, usage row) of one pass: a key scan that decodes only the matches."""
        suffix = b"\x00" + pass_id.encode()
        with self._env.begin(db=self._usage) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                raw = txn.get(key) if key.endswith(suffix) else None
                if raw is not None:
                    yield key[: -len(suffix)].decode(), unpackb(raw)

    def get_usage(self, key: bytes) -> list[Any] | None:
        with self._env.begin(db=self._usage, buffers=True) as txn:
            raw = txn.get(key)
            return None if raw is None else unpackb(raw)

    def iter_requests(self) -> Iterator[tuple[str, list[Any]]]:
        with self._env.begin(db=self._req, buffers=True) as txn:
            for key, raw in txn.cursor():
                yield bytes(key).decode(), unpackb(raw)

    def iter_venues(self) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._env.begin(db=self._venue, buffers=True) as txn:
            for key, raw in txn.cursor():
                yield bytes(key).decode(), unpackb(raw)

    def iter_reservations(self) -> Iterator[tuple[str, int, str, str, int]]:
        with self._env.begin(db=self._resv, buffers=True) as txn:
            for key, raw in txn.cursor():
                venue_id, day, slot_id, pass_id = bytes(key).decode().split("\x00")
                yield venue_id, int(day), slot_id, pass_id, unpackb(raw)

    def counters_snapshot(self) -> tuple[int, bytes] | None:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(_COUNTERS_KEY)
            if raw is None:
                return None
            seq, blob = unpackb(raw)
            return int(seq), bytes(blob)

    def iter_log(self, after_seq: int = 0) -> Iterator[tuple[int, list[Any]]]:
        with self._env.begin(db=self._log, buffers=True) as txn:
            cur = txn.cursor()
            if not cur.set_range(_SEQ.pack(after_seq + 1)):
                return
            for key, raw in cur:
                yield _SEQ.unpack(key)[0], unpackb(raw)

    def get_meta(self, key: str) -> Any:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(key.encode())
            return None if raw is None else unpackb(raw)

    def put_meta(self, key: str, value: Any) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            txn.put(key.encode(), packb(value))

    def close(self) -> None:
        self._env.close()
