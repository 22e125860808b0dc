"""VenueShard: owns a set of venues; decides whole batches and commits each in one LMDB txn.

A plain class (constructed directly in tests); `actors.cluster` wraps it as a Ray actor. It holds
per-pass usage, request records (idempotency and annul), venue runtime state, reservations and the
numba capacity counters in memory, and rebuilds all of them from its LMDB store on start.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.catalog import CatalogReader, catalog_path
from actors.codec import (
    decision_from_list,
    decision_to_list,
    packb,
    request_from_list,
    unpackb,
    usage_from_list,
    usage_to_list,
)
from actors.errors import DataDirMismatch
from actors.shard_quota import QuotaOps
from actors.shard_store import BatchWrites, ShardStore, usage_key
from actors.shard_venues import Running, VenueBook
from core.clock import LocalTime, local_time
from core.counters import CapacityCounters, warm
from core.models import Direction, Province, Usage
from core.rules import decide

REQUEST_TTL_MS = 15 * 60 * 1000
COUNTER_SNAPSHOT_EVERY_MS = 1000
EV_NONE, EV_ENTRY, EV_EXIT, EV_ANNUL = 0, 1, 2, 3

_EMPTY = Usage()


def shard_of(venue_id: str, n_shards: int) -> int:
    """The one shard that owns a venue: stable across processes and restarts."""
    return zlib.crc32(venue_id.encode()) % n_shards


def layout_problem(seen: int, asked: int) -> str:
    """Venue ownership hangs on the shard count, so a data directory keeps the one it began with."""
    return (
        f"data directory holds {seen} shards; start with --shards {seen} "
        f"or a fresh --data-dir (asked for {asked})"
    )


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def shard_dir(data_dir: Path, shard_id: int) -> Path:
    return data_dir / "shards" / f"shard-{shard_id}"


class VenueShard(QuotaOps):
    def __init__(
        self,
        shard_id: int,
        n_shards: int,
        province: Province,
        data_dir: str,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.shard_id = shard_id
        self.province = province
        self._clock = clock_ms or _wall_clock_ms
        data = Path(data_dir)
        owned = [v for v in province.venues.values() if shard_of(v.venue_id, n_shards) == shard_id]
        self.catalog = CatalogReader(catalog_path(data))
        self.store = ShardStore(shard_dir(data, shard_id))
        self._check_layout(n_shards)
        max_slots = max([len(v.slots) for v in owned] + [1])
        self.counters = CapacityCounters(max(1, len(owned)), max_slots)
        self.book = VenueBook(owned, self.counters)
        self.usage: dict[bytes, Usage] = {}
        self.requests: dict[str, list[Any]] = {}
        self._req_order: deque[tuple[int, str]] = deque()
        self._last_snapshot_ms = 0
        self.batches = 0
        self.items = 0
        self.last_commit_s = 0.0
        self._commit_samples: list[float] = []
        self._restore()
        warm()
        (shard_dir(data, shard_id) / "pid").write_text(str(os.getpid()))

    # -- start-up -------------------------------------------------------------------------------

    def _check_layout(self, n_shards: int) -> None:
        seen = self.store.get_meta("n_shards")
        if seen is None:
            self.store.put_meta("n_shards", n_shards)
        elif seen != n_shards:
            raise DataDirMismatch(layout_problem(seen, n_shards))

    def _restore(self) -> None:
        # Usage is not preloaded: it is read from LMDB on first use (`_usage`), so a shard with
        # millions of usage records serves again without decoding them all first.
        now = self._clock()
        for rid, rec in self.store.iter_requests():
            if now - rec[0][8] < REQUEST_TTL_MS:
                self.requests[rid] = rec
        for rid, rec in sorted(self.requests.items(), key=lambda kv: kv[1][0][8]):
            self._req_order.append((rec[0][8], rid))
        self.book.restore(self.store)
        self._restore_counters()

    def _restore_counters(self) -> None:
        snap = self.store.counters_snapshot()
        after = 0
        if snap is not None:
            after, blob = snap
            self.counters = CapacityCounters.restore(blob)
            self.book.set_counters(self.counters)
        events = [
            (rec[2], rec[9], rec[10], rec[8], rec[11])
            for _, rec in self.store.iter_log(after)
            if rec[8] != EV_NONE
        ]
        self._apply_events(events)

    # -- the batch path -------------------------------------------------------------------------

    def decide_batch(self, payload: bytes) -> bytes:
        """Decides every request in the batch; answers after the batch's one commit."""
        now_ms = self._clock()
        rows = unpackb(payload)
        batch = _Batch(now_ms, self.book)
        self._expire_requests(now_ms, batch.writes)
        with self.catalog.begin() as txn:
            out = [self._decide_one(request_from_list(row), batch, txn) for row in rows]
        self._commit(batch, now_ms)
        self.batches += 1
        self.items += len(rows)
        return packb(out)

    def _decide_one(self, req: Any, batch: _Batch, txn: Any) -> list[Any]:
        rid = req.request_id
        rec = batch.requests.get(rid) or self.requests.get(rid)
        if rec is not None:
            return rec[0]
        venue = self.book.venue(req.venue_id)
        pass_ = None
        local: LocalTime | None = None
        if venue is not None:
            pass_ = self.catalog.lookup(txn, int(req.kind), req.value)
            local = batch.local(venue.venue_id, venue.tz, self.book)
        ukey = usage_key(req.venue_id, pass_.pass_id) if pass_ is not None else b""
        usage = batch.usage.get(ukey) or self._usage(ukey) if ukey else _EMPTY
        capacity = None
        if venue is None:
            outcome = decide(pass_, usage, venue, req, batch.now_ms, self.province)
        else:
            capacity = self.book.capacity_view(venue, pass_, local, batch.running, batch.writes)
            outcome = decide(pass_, usage, venue, req, batch.now_ms, self.province, capacity, local)
        decision = decision_to_list(outcome.decision)
        if req.dry_run:
            return decision
        reserved = capacity.reserved_slot if capacity is not None else None
        self._record(req, outcome, decision, ukey, local, batch, reserved, usage.last_entry_ms)
        return decision

    def _record(
        self,
        req: Any,
        outcome: Any,
        decision: list[Any],
        ukey: bytes,
        local: LocalTime | None,
        batch: _Batch,
        reserved: str | None,
        prev_entry_ms: int,
    ) -> None:
        event = EV_ENTRY if outcome.entered else EV_EXIT if outcome.exited else EV_NONE
        day = local.day if local else 0
        minute = local.minute if local else 0
        slot_idx = -1
        if outcome.entered and reserved is not None:
            slot_idx = self.book.consume_reservation(
                req.venue_id, day, reserved, outcome.decision.pass_id, batch.writes
            )
        if event != EV_NONE:
            batch.running.add(req.venue_id, outcome.entered, outcome.exited)
            batch.events.append((req.venue_id, day, minute, event, slot_idx))
        if outcome.usage is not None:
            batch.usage[ukey] = outcome.usage
            batch.writes.usage[ukey] = usage_to_list(outcome.usage)
        pass_id = outcome.decision.pass_id
        rec = [
            decision, req.venue_id, req.gate_id, pass_id, day, minute, slot_idx, event, False,
            prev_entry_ms,
        ]  # fmt: skip
        batch.requests[req.request_id] = rec
        batch.writes.requests[req.request_id] = rec
        batch.writes.log.append(
            [
                batch.now_ms,
                req.request_id,
                req.venue_id,
                req.gate_id,
                pass_id,
                int(req.direction),
                decision[1],
                decision[2],
                event,
                day,
                minute,
                slot_idx,
                decision[9],
                decision[10],
            ]
        )

    def _usage(self, ukey: bytes) -> Usage:
        """The usage of (venue, pass): memory first, then LMDB (committed state), else empty."""
        usage = self.usage.get(ukey)
        if usage is None:
            row = self.store.get_usage(ukey)
            if row is None:
                return _EMPTY
            usage = usage_from_list(row)
            self.usage[ukey] = usage
        return usage

    def _expire_requests(self, now_ms: int, writes: BatchWrites) -> None:
        order = self._req_order
        while order and now_ms - order[0][0] >= REQUEST_TTL_MS:
            _, rid = order.popleft()
            if self.requests.pop(rid, None) is not None:
                writes.expired_requests.append(rid)

    def _commit(self, batch: _Batch, now_ms: int) -> None:
        if now_ms - self._last_snapshot_ms >= COUNTER_SNAPSHOT_EVERY_MS and batch.events:
            # The counters as they stand before this batch; a restart replays the log after them,
            # this batch's records included.
            batch.writes.counters = self.counters.snapshot()
        if not batch.writes.empty():
            t0 = time.perf_counter()
            self.store.commit(batch.writes)
            self.last_commit_s = time.perf_counter() - t0
            if len(self._commit_samples) < 10_000:
                self._commit_samples.append(self.last_commit_s)
        if batch.writes.counters is not None:
            self._last_snapshot_ms = now_ms
        # Only after the commit does memory move on: a failed commit leaves no trace.
        self.usage.update(batch.usage)
        for rid, rec in batch.requests.items():
            self.requests[rid] = rec
            self._req_order.append((batch.now_ms, rid))
        self.book.apply_committed(batch.writes)
        self._apply_events(batch.events)

    def _apply_events(self, events: list[tuple[str, int, int, int, int]]) -> None:
        """One numba call for all of a batch's (venue_id, day, minute, kind, slot) events."""
        if not events:
            return
        venues, days, minutes, kinds, slots = zip(*events, strict=True)
        idx = [self.book.index.get(v, -1) for v in venues]
        self.counters.apply_batch(idx, days, minutes, kinds, slots)

    # -- annul ----------------------------------------------------------------------------------

    def annul(self, request_id: str, venue_id: str, gate_id: str) -> tuple[bool, str]:
        """Undoes an admitted entry (the turnstile did not turn): same gate, within 15 min."""
        now_ms = self._clock()
        rec = self.requests.get(request_id)
        problem = self._annul_problem(rec, venue_id, gate_id, now_ms)
        if problem is not None:
            return problem
        assert rec is not None
        decision = decision_from_list(rec[0])
        ukey = usage_key(venue_id, rec[3])
        usage = self._usage(ukey).copy()
        usage.entries = max(0, usage.entries - 1)
        if usage.day == rec[4]:
            usage.entries_today = max(0, usage.entries_today - 1)
        usage.inside = False
        usage.last_entry_ms = rec[9]
        usage.charges_fen = max(0, usage.charges_fen - decision.charge_fen)
        usage.free_visits = max(0, usage.free_visits - int(decision.free_visit))
        new_rec = [*rec[:8], True, rec[9]]
        writes = BatchWrites()
        writes.usage[ukey] = usage_to_list(usage)
        writes.requests[request_id] = new_rec
        event = (venue_id, rec[4], rec[5], EV_ANNUL, rec[6])
        log_row = [now_ms, request_id, venue_id, gate_id, rec[3], 0, False, 0, EV_ANNUL]
        writes.log.append([*log_row, rec[4], rec[5], rec[6], -decision.charge_fen, False])
        if rec[6] >= 0:
            self.book.restore_reservation(venue_id, rec[4], rec[6], rec[3], writes)
        self.store.commit(writes)
        self.usage[ukey] = usage
        self.requests[request_id] = new_rec
        self.book.apply_committed(writes)
        self._apply_events([event])
        return True, "entry annulled"

    @staticmethod
    def _annul_problem(
        rec: list[Any] | None, venue_id: str, gate_id: str, now_ms: int
    ) -> tuple[bool, str] | None:
        if rec is None:
            return False, "no entry with this request_id in the last 15 minutes"
        if rec[1] != venue_id or rec[2] != gate_id:
            return False, "annul must come from the gate that admitted the entry"
        if rec[7] != EV_ENTRY:
            return False, "that request did not admit an entry"
        if rec[8]:
            return True, "already annulled"
        if now_ms - rec[0][8] > REQUEST_TTL_MS:
            return False, "too late: entries can be annulled for 15 minutes"
        return None

    # -- reads ----------------------------------------------------------------------------------

    def usage_of(self, pass_id: str) -> list[list[Any]]:
        """[venue_id, *usage] for every venue of this shard the pass has used."""
        # LMDB holds every committed usage record (memory holds only those used since start).
        return [[venue_id, *row] for venue_id, row in self.store.usage_of_pass(pass_id)]

    def stored_admits(self) -> int:
        """Admitted entries not annulled, counted from the durable decision log."""
        total = 0
        for _, rec in self.store.iter_log():
            if rec[8] == EV_ENTRY:
                total += 1
            elif rec[8] == EV_ANNUL:
                total -= 1
        return total

    def stats(self) -> dict[str, Any]:
        """Counters for the ingress's periodic poll; hands over the commit samples seen since."""
        samples, self._commit_samples = self._commit_samples, []
        return {
            "commit_samples": samples,
            "shard_id": self.shard_id,
            "batches": self.batches,
            "items": self.items,
            "usage_records": len(self.usage),
            "requests": len(self.requests),
            "last_commit_s": self.last_commit_s,
        }

    def close(self) -> None:
        """Releases the LMDB environments (a process may open each only once)."""
        self.store.close()
        self.catalog.close()

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True


class _Batch:
    __slots__ = ("events", "locals", "now_ms", "requests", "running", "usage", "writes")

    def __init__(self, now_ms: int, book: VenueBook) -> None:
        self.now_ms = now_ms
        self.writes = BatchWrites()
        self.usage: dict[bytes, Usage] = {}
        self.requests: dict[str, list[Any]] = {}
        self.events: list[tuple[str, int, int, int, int]] = []
        self.running = Running(book)
        self.locals: dict[str, LocalTime] = {}

    def local(self, venue_id: str, tz: Any, book: VenueBook) -> LocalTime:
        lt = self.locals.get(venue_id)
        if lt is None:
            lt = local_time(tz, self.now_ms)
            self.locals[venue_id] = lt
            book.roll_day(venue_id, lt.day)
        return lt


__all__ = ["EV_ANNUL", "EV_ENTRY", "EV_EXIT", "EV_NONE", "Direction", "VenueShard", "shard_of"]
