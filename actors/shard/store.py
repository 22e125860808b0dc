"""A shard's LMDB environment: usage, request records, decision log, venue state, reservations.

Every batch is written whole in one write transaction (group commit; the commit pipeline may put
several consecutive batches in one) with LMDB's durable commit (data sync, then meta sync), and
the shard acknowledges only after that commit returns. On start the shard rebuilds its memory from
here. Values are tagged `core.records` types; keys come from `core.keys` (length-prefixed, never
separator-joined).

Request records are stored under their decision time, then their request key: a batch's new
records land at the end of the table and expired ones leave from its start, so a commit writes a
few pages of it instead of one page per record (random request keys touch a leaf page each, and
every page touched is written and synced).

Usage records are keyed by pass, then venue (`core.keys.usage_key`), so `GetPass` reads one pass's
usage as one key range. A store from before that layout has them under venue first; they move at
open (`_move_table`).
"""

from __future__ import annotations

import logging
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from actors.errors import storage_error
from actors.shard.stamps import STAMP, purge_index, stamp_key
from core.credit import CreditLink, OutboxRecord
from core.keys import (
    split_reservation_key,
    split_usage_key,
    split_venue_first_usage_key,
    usage_key,
    usage_prefix,
)
from core.records import (
    EV_ANNUL,
    EV_ENTRY,
    CountersSnapshot,
    LogRecord,
    LogTrim,
    RequestRecord,
    Usage,
    VenueState,
    decoder,
    encode,
)

log = logging.getLogger("passgate.store")

# The most the store may grow to: address space only (the file grows as it fills), so the data
# disk is what bounds it. 32 GiB before: a busy province's decision log could reach that first.
SHARD_MAP_SIZE = 1 << 40
_SEQ = struct.Struct(">Q")
_COUNTERS_KEY = b"counters"
_LOG_TRIM_KEY = b"log_trim"
# Decision-log lines trimmed per commit at most: twice what the batch adds, so that a backlog
# (a retention just shortened, a store from before retention) shrinks while the log grows, in
# steps that never make one commit long.
LOG_TRIM_MIN = 256
_USAGE = decoder(Usage)
_REQUEST = decoder(RequestRecord)
_LOG = decoder(LogRecord)
_VENUE = decoder(VenueState)
_COUNTERS = decoder(CountersSnapshot)
_INT = decoder(int)
_OUTBOX = decoder(OutboxRecord)
_LINK = decoder(CreditLink)
_LOG_TRIM = decoder(LogTrim)


@dataclass
class BatchWrites:
    """Everything one batch changes, written in one transaction."""

    usage: dict[bytes, Usage] = field(default_factory=dict)
    requests: dict[bytes, RequestRecord] = field(default_factory=dict)
    # (request key, decided_at_ms) of the records to delete.
    expired_requests: list[tuple[bytes, int]] = field(default_factory=list)
    log: list[LogRecord] = field(default_factory=list)
    venues: dict[str, VenueState] = field(default_factory=dict)
    reservations_put: dict[bytes, int] = field(default_factory=dict)
    reservations_del: list[bytes] = field(default_factory=list)
    counters: bytes | None = None
    # Credit ledger (`actors.shard.credit`): outcomes still to tell the ledger, outcomes it has
    # taken, and the charge behind each pay-later entry (by request key).
    outbox: dict[bytes, int] = field(default_factory=dict)
    outbox_done: list[bytes] = field(default_factory=list)
    credit_links: dict[bytes, CreditLink] = field(default_factory=dict)
    # Decision-log lines decided before this go with these writes (0: none); never a line after
    # the last counters snapshot, which a restart replays.
    log_before_ms: int = 0
    # Pipelined (`actors.shard.pipeline`): what to do once these writes are durable.
    on_durable: list[Callable[[], None]] = field(default_factory=list)
    # Pipelined: what to do if they never become durable (their commit failed or was skipped).
    on_failed: list[Callable[[], None]] = field(default_factory=list)

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
            or self.outbox
            or self.outbox_done
            or self.credit_links
        )


# Tables of older layouts, moved at open (`ShardStore._move_table`): request records keyed by
# request key alone, and usage keyed by venue, then pass.
_OLD_REQUESTS = b"req"
_OLD_USAGE = b"usage"
_MOVE_REQUESTS = "request records to their time-keyed table"
_MOVE_USAGE = "usage records to their pass-first table"
# Records of an old table moved per transaction: a store of millions never needs one huge
# transaction, and a move cut short by a crash goes on from where it stopped.
MOVE_CHUNK = 50_000


def stored_request_key(request_key: bytes, decided_at_ms: int) -> bytes:
    """A request record's key in LMDB: stamped with its decision time (a time before the epoch,
    from a clock set wrong, sorts as the epoch). With no request key: where that time starts."""
    return stamp_key(max(0, decided_at_ms), request_key)


def _request_by_time(key: bytes, raw: bytes) -> bytes:
    return stored_request_key(key, _REQUEST.decode(raw).decision.decided_at_ms)


def _usage_pass_first(key: bytes, _raw: bytes) -> bytes:
    return usage_key(*split_venue_first_usage_key(key))


class ShardStore:
    def __init__(self, path: Path, *, sync: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(path), map_size=SHARD_MAP_SIZE, max_dbs=10, sync=sync, metasync=sync
            )
        except lmdb.Error as exc:
            raise storage_error(f"cannot open shard store at {path}", exc) from exc
        self._usage = self._env.open_db(b"usage_by_pass")
        self._req = self._env.open_db(b"req_by_time")
        self._log = self._env.open_db(b"log")
        self._venue = self._env.open_db(b"venue")
        self._resv = self._env.open_db(b"resv")
        self._meta = self._env.open_db(b"meta")
        self._outbox = self._env.open_db(b"outbox")
        self._links = self._env.open_db(b"credit_link")
        self.next_seq = self._last_seq() + 1
        snapshot = self.counters_snapshot()
        self._snapshot_seq = snapshot.seq if snapshot is not None else 0
        # No decision-log line is older than this (as far as this process knows): trimming
        # looks at the log only once the retention's edge passes it.
        self._log_oldest_ms = 0
        # Stores written before request records were keyed by time, or usage by pass first.
        self._move_table(_OLD_REQUESTS, self._req, _request_by_time, _MOVE_REQUESTS)
        self._move_table(_OLD_USAGE, self._usage, _usage_pass_first, _MOVE_USAGE)

    def _move_table(
        self, old_name: bytes, new_db: Any, new_key: Callable[[bytes, bytes], bytes], what: str
    ) -> int:
        """A table of an older layout, when the store has one: its records move to `new_db`, each
        under `new_key(old key, value)`, MOVE_CHUNK records per transaction (each chunk put and
        deleted at once), and the old table goes with the last chunk. Returns how many moved."""
        with self._env.begin() as txn:
            if txn.get(old_name) is None:  # named databases are keys of the main one
                return 0
        moved, done = 0, False
        try:
            old = self._env.open_db(old_name)
            while not done:
                with self._env.begin(write=True) as txn:
                    cur = txn.cursor(db=old)
                    for _ in range(MOVE_CHUNK):
                        if not cur.first():
                            break
                        key, value = cur.key(), cur.value()
                        txn.put(new_key(key, value), value, db=new_db)
                        cur.delete()
                        moved += 1
                    done = not cur.first()
                    if done:
                        txn.drop(old, delete=True)
                log.info("%s: %d moved", what, moved)
        except lmdb.Error as exc:
            raise storage_error(f"cannot move {what}", exc) from exc
        return moved

    def _last_seq(self) -> int:
        with self._env.begin(db=self._log) as txn:
            cur = txn.cursor()
            return int(_SEQ.unpack(cur.key())[0]) if cur.last() else 0

    def commit(self, w: BatchWrites) -> int:
        """Writes the batch durably; returns the log sequence of its last record."""
        return self.commit_group([w])

    def commit_group(
        self, group: list[BatchWrites], written: Callable[[], None] | None = None
    ) -> int:
        """Writes several batches, in order, in ONE durable transaction (group commit): all of
        them or none. `written` is called once the puts are done, before the commit's syncs.
        Returns the log sequence of the last record."""
        seq = self.next_seq
        snapshot = None
        try:
            with self._env.begin(write=True) as txn:
                for w in group:
                    if w.counters is not None:
                        snapshot = seq - 1
                    seq = self._put(txn, w, seq)
                if written is not None:
                    written()
        except lmdb.Error as exc:
            raise storage_error("shard commit failed", exc) from exc
        self.next_seq = seq
        if snapshot is not None:
            self._snapshot_seq = snapshot
        return seq - 1

    def _put(self, txn: lmdb.Transaction, w: BatchWrites, seq: int) -> int:
        put = txn.put
        if w.counters is not None:
            # The snapshot precedes this batch's log: tag it with the last seq before.
            put(_COUNTERS_KEY, encode(CountersSnapshot(seq - 1, w.counters)), db=self._meta)
        for key, usage in w.usage.items():
            put(key, encode(usage), db=self._usage)
        for key, rec in w.requests.items():
            put(stored_request_key(key, rec.decision.decided_at_ms), encode(rec), db=self._req)
        for key, at_ms in w.expired_requests:
            txn.delete(stored_request_key(key, at_ms), db=self._req)
            txn.delete(key, db=self._links)
        for log in w.log:
            put(_SEQ.pack(seq), encode(log), db=self._log, append=True)
            seq += 1
        if w.log_before_ms > self._log_oldest_ms:
            self._trim_log(txn, w.log_before_ms, max(LOG_TRIM_MIN, 2 * len(w.log)))
        for venue_id, state in w.venues.items():
            put(venue_id.encode(), encode(state), db=self._venue)
        for key, status in w.reservations_put.items():
            put(key, encode(status), db=self._resv)
        for key in w.reservations_del:
            txn.delete(key, db=self._resv)
        self._put_credit(txn, w)
        return seq

    def _trim_log(self, txn: lmdb.Transaction, before_ms: int, most: int) -> None:
        """Deletes up to `most` decision-log lines decided before `before_ms` from the front of
        the log, never one after the last counters snapshot, and adds them to the trim record."""
        cur = txn.cursor(db=self._log)
        trimmed = admits = 0
        while trimmed < most:
            if not cur.first():
                self._log_oldest_ms = before_ms  # the log is empty
                break
            line = _LOG.decode(cur.value())
            if line.at_ms >= before_ms:
                self._log_oldest_ms = line.at_ms  # nothing to trim until the edge passes it
                break
            if _SEQ.unpack(cur.key())[0] > self._snapshot_seq:
                break  # a restart replays it: it waits for the next snapshot
            admits += (line.event == EV_ENTRY) - (line.event == EV_ANNUL)
            cur.delete()
            trimmed += 1
        if trimmed:
            was = self._log_trim(txn)
            total = LogTrim(was.records + trimmed, was.admits + admits)
            txn.put(_LOG_TRIM_KEY, encode(total), db=self._meta)

    def _log_trim(self, txn: lmdb.Transaction) -> LogTrim:
        raw = txn.get(_LOG_TRIM_KEY, db=self._meta)
        return LogTrim() if raw is None else _LOG_TRIM.decode(raw)

    def log_trim(self) -> LogTrim:
        """What has been trimmed off the decision log so far."""
        with self._env.begin() as txn:
            return self._log_trim(txn)

    def figures(self) -> dict[str, int]:
        """For the metrics poll, cheaply (LMDB's own page and entry counts, not a scan): bytes
        the store's file uses, decision-log lines it holds and lines trimmed so far."""
        page = int(self._env.stat()["psize"])
        with self._env.begin() as txn:
            used_pages = int(self._env.info()["last_pgno"]) + 1
            return {
                "store_bytes": used_pages * page,
                "log_lines": int(txn.stat(self._log)["entries"]),
                "log_lines_trimmed": self._log_trim(txn).records,
            }

    def _put_credit(self, txn: Any, w: BatchWrites) -> None:
        for key in w.outbox_done:
            txn.delete(key, db=self._outbox)
        for key, action in w.outbox.items():
            txn.put(key, encode(OutboxRecord(action)), db=self._outbox)
        for key, link in w.credit_links.items():
            txn.put(key, encode(link), db=self._links)

    def iter_outbox(self) -> Iterator[tuple[bytes, int]]:
        with self._env.begin(db=self._outbox, buffers=True) as txn:
            for key, raw in txn.cursor():
                yield bytes(key), _OUTBOX.decode(raw).action

    def credit_link(self, request_key: bytes) -> CreditLink | None:
        with self._env.begin(db=self._links, buffers=True) as txn:
            raw = txn.get(request_key)
            return None if raw is None else _LINK.decode(raw)

    def usage_of_pass(self, pass_id: str) -> Iterator[tuple[str, Usage]]:
        """(venue_id, usage) of one pass: its own key range, whatever else the table holds."""
        prefix = usage_prefix(pass_id)
        with self._env.begin(db=self._usage) as txn:
            cur = txn.cursor()
            if not cur.set_range(prefix):
                return
            for key, raw in cur:
                if not key.startswith(prefix):
                    return
                yield split_usage_key(key)[0], _USAGE.decode(raw)

    def get_usage(self, key: bytes, txn: lmdb.Transaction | None = None) -> Usage | None:
        """One usage record; inside `txn` (a batch's `reader()`) when given, else in its own."""
        if txn is not None:
            raw = txn.get(key, db=self._usage)
            return None if raw is None else _USAGE.decode(raw)
        with self._env.begin(db=self._usage, buffers=True) as own:
            raw = own.get(key)
            return None if raw is None else _USAGE.decode(raw)

    def reader(self) -> lmdb.Transaction:
        """A read transaction for one batch's lookups (a `with` block): one snapshot instead of a
        transaction per item. Records committed meanwhile are in the shard's memory already."""
        return self._env.begin(buffers=True)

    def iter_requests(self, since_ms: int = 0) -> Iterator[tuple[bytes, RequestRecord]]:
        """(request key, record) of the records decided at `since_ms` or later, oldest first."""
        with self._env.begin(db=self._req, buffers=True) as txn:
            cur = txn.cursor()
            if not cur.set_range(stored_request_key(b"", since_ms)):
                return
            for key, raw in cur:
                yield bytes(key[STAMP.size :]), _REQUEST.decode(raw)

    def drop_requests_before(self, before_ms: int) -> int:
        """Deletes the records decided before `before_ms`, with their credit links, in one
        transaction: those a shard stopped before they expired. Returns how many."""
        try:
            with self._env.begin(write=True) as txn:
                # The record table is its own expiry index; the links are keyed by request key.
                return purge_index(txn, self._req, self._links, before_ms - 1, sys.maxsize)
        except lmdb.Error as exc:
            raise storage_error("cannot drop expired request records", exc) from exc

    def iter_venues(self) -> Iterator[tuple[str, VenueState]]:
        with self._env.begin(db=self._venue, buffers=True) as txn:
            for key, raw in txn.cursor():
                yield bytes(key).decode(), _VENUE.decode(raw)

    def iter_reservations(self) -> Iterator[tuple[bytes, int]]:
        with self._env.begin(db=self._resv, buffers=True) as txn:
            for raw_key, raw in txn.cursor():
                key = bytes(raw_key)
                split_reservation_key(key)  # a key of another layout fails loudly here
                yield key, _INT.decode(raw)

    def counters_snapshot(self) -> CountersSnapshot | None:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(_COUNTERS_KEY)
            return None if raw is None else _COUNTERS.decode(raw)

    def iter_log(self, after_seq: int = 0) -> Iterator[tuple[int, LogRecord]]:
        with self._env.begin(db=self._log, buffers=True) as txn:
            cur = txn.cursor()
            if not cur.set_range(_SEQ.pack(after_seq + 1)):
                return
            for key, raw in cur:
                yield int(_SEQ.unpack(key)[0]), _LOG.decode(raw)

    def get_meta(self, key: str) -> Any:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(key.encode())
            return None if raw is None else msgspec.msgpack.decode(raw)

    def put_meta(self, key: str, value: Any) -> None:
        try:
            with self._env.begin(write=True, db=self._meta) as txn:
                txn.put(key.encode(), encode(value))
        except lmdb.Error as exc:
            raise storage_error("shard meta write failed", exc) from exc

    def close(self) -> None:
        self._env.close()
