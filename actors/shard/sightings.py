"""Shared-card sightings: where each pass was last admitted, shared by the shards of one node.

One LMDB environment, `<data-dir>/sightings/`, opened by every shard process on the node (like
the signed-code claims, `actors.shard.code_claims`). A shard reads the last sighting of each pass
it admits from one read transaction per batch, judges the entry with `core.travel`, and after
its own commit writes the batch's admitted entries (and any flags) in ONE write transaction. So a
pass admitted by one shard is seen by every other shard of the node, with no extra round trip on
the hot path. The Ray shard writes them once the batch's answer is on its way (`hand_over`, then
`record`), off the gates' wait; meanwhile its own next batches see them from memory.

Keys are a hash of the pass id, not of the credential: a card and a QR code of one pass are one
holder ("card-code unification"), and a signed code's text changes every step.

Advisory, so cheap: the environment is not fsynced, a failed write is logged and dropped (the
batch is already committed), and reads and writes race across shards only within one batch's
time and the moment its answer takes to leave. Bounded: a sighting is dropped once no venue
pair of the province is far enough apart for it to matter (`core.travel.horizon_ms`); a flag is
kept FLAG_KEEP_MS for `GetPass`. Both are purged through expiry indexes, at most PURGE_MAX per
purge. Detection covers ONE node: shards on other nodes of a Ray cluster keep their own
sightings (a multi-node deployment needs a shared store).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import NamedTuple

import lmdb

from actors.errors import storage_error
from actors.shard import node_env, stamps
from core.models import (
    Direction,
    Outcome,
    PassRecord,
    Province,
    Reason,
    SharedCardPolicy,
    Venue,
)
from core.records import Request, SharedFlag, Sighting, decoder, encode
from core.travel import Location, Suspicion, describe, horizon_ms, judge, suspect

log = logging.getLogger("passgate.sightings")

SIGHTINGS_MAP_SIZE = 1 << 30  # sparse; a sighting with its index entry takes about 100 bytes
PURGE_EVERY_MS = 10_000
PURGE_MAX = 10_000
FLAG_KEEP_MS = 7 * 24 * 3_600_000
MAX_FLAGS_SHOWN = 20
# Sightings are kept at least this long, whatever the province's geometry.
MIN_KEEP_MS = 60_000
# A failing store (a full disk) is reported at most this often, not once per batch.
WARN_EVERY_S = 60.0

_PASS_KEY = 16
_SIGHTING = decoder(Sighting)
_FLAG = decoder(SharedFlag)
_OK = Reason.OK
_EXIT = Direction.EXIT


def sightings_path(data_dir: Path) -> Path:
    return data_dir / "sightings"


def pass_key(pass_id: str) -> bytes:
    return hashlib.blake2b(pass_id.encode(), digest_size=_PASS_KEY).digest()


class SightingsStore:
    """The node's last sighting per pass and its recent shared-card flags."""

    def __init__(self, path: Path, keep_ms: int) -> None:
        self._path = path
        self.keep_ms = max(MIN_KEEP_MS, keep_ms)
        self._env = node_env.acquire(path, SIGHTINGS_MAP_SIZE, 4, "sightings")
        self._last = self._env.open_db(b"last")  # pass key -> Sighting
        self._expiry = self._env.open_db(b"expiry")  # at_ms + pass key -> b""
        self._flags = self._env.open_db(b"flags")  # pass key + at_ms + venue -> SharedFlag
        self._flag_expiry = self._env.open_db(b"flag_expiry")  # at_ms + flag key -> b""
        self._next_purge_ms = 0
        self._closed = False

    def begin(self) -> lmdb.Transaction:
        """A read transaction (the caller aborts it)."""
        return self._env.begin(buffers=False)

    def last(self, txn: lmdb.Transaction, key: bytes) -> Sighting | None:
        raw = txn.get(key, db=self._last)
        return None if raw is None else _SIGHTING.decode(raw)

    def write(
        self, seen: dict[bytes, Sighting], flags: list[tuple[bytes, SharedFlag]], now_ms: int
    ) -> None:
        """Records a batch's admitted entries and flags in one transaction (and purges, now and
        then, what has expired)."""
        purge = now_ms >= self._next_purge_ms
        try:
            with self._env.begin(write=True) as txn:
                for key, sighting in seen.items():
                    txn.put(key, encode(sighting), db=self._last)
                    txn.put(stamps.stamp_key(sighting.at_ms, key), b"", db=self._expiry)
                for key, flag in flags:
                    fkey = key + stamps.STAMP.pack(flag.at_ms) + flag.venue_id.encode()
                    txn.put(fkey, encode(flag), db=self._flags)
                    txn.put(stamps.stamp_key(flag.at_ms, fkey), b"", db=self._flag_expiry)
                if purge:
                    self._purge(txn, now_ms)
        except lmdb.Error as exc:
            raise storage_error("sightings write failed", exc) from exc
        if purge:
            self._next_purge_ms = now_ms + PURGE_EVERY_MS

    def _purge(self, txn: lmdb.Transaction, now_ms: int) -> int:
        # A sighting rewritten since (a newer one of the pass) is kept; flags are never rewritten.
        before_ms = now_ms - self.keep_ms
        done = stamps.purge_index(
            txn, self._expiry, self._last, before_ms, PURGE_MAX,
            lambda raw: _SIGHTING.decode(raw).at_ms <= before_ms,
        )  # fmt: skip
        flags_before_ms = now_ms - FLAG_KEEP_MS
        return done + stamps.purge_index(
            txn, self._flag_expiry, self._flags, flags_before_ms, PURGE_MAX
        )

    def purge(self, now_ms: int) -> int:
        """Purges expired sightings and flags now (tests and tools; writes purge on their own)."""
        try:
            with self._env.begin(write=True) as txn:
                return self._purge(txn, now_ms)
        except lmdb.Error as exc:
            raise storage_error("sightings write failed", exc) from exc

    def flags_of(self, pass_id: str) -> list[SharedFlag]:
        """The pass's most recent flags on this node, newest first."""
        key = pass_key(pass_id)
        found: list[SharedFlag] = []
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._flags)
            if cur.set_range(key):
                for fkey, raw in cur:
                    if not fkey.startswith(key):
                        break
                    found.append(_FLAG.decode(raw))
        found.sort(key=lambda f: f.at_ms, reverse=True)
        return found[:MAX_FLAGS_SHOWN]

    def count(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._last)["entries"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            node_env.release(self._path)


class Unwritten(NamedTuple):
    """A batch's sightings and flags, handed over to be written."""

    seen: dict[bytes, Sighting]
    flags: list[tuple[bytes, SharedFlag]]
    now_ms: int


class SharedCards:
    """A shard's shared-card check: one read transaction per batch, one write after its commit.

    `begin` starts a batch, `check` judges each decided entry, `commit` records the batch's
    admitted entries; the shard decides one batch at a time, so the batch state lives here.
    """

    def __init__(self, data_dir: Path, province: Province) -> None:
        self._venues = province.venues
        self._speed = province.travel_speed_kmh
        self._policies = {p.product_id: p.shared_card for p in province.products.values()}
        self._where: dict[str, Location] = {
            v.venue_id: v.location for v in province.venues.values() if v.location is not None
        }
        self.store = SightingsStore(
            sightings_path(data_dir), horizon_ms(self._where.values(), self._speed)
        )
        self._txn: lmdb.Transaction | None = None
        self._now_ms = 0
        self._seen: dict[bytes, Sighting] = {}
        self._flags: list[tuple[bytes, SharedFlag]] = []
        # Sightings of batches handed over and not yet written (`hand_over`, `record`).
        self._unwritten: dict[bytes, Sighting] = {}
        self._next_warning = 0.0

    def begin(self, now_ms: int) -> None:
        self._end_read()  # a batch that raised may have left its reader open
        self._now_ms = now_ms
        self._seen = {}
        self._flags = []

    def check(self, req: Request, pass_: PassRecord, venue: Venue, outcome: Outcome) -> Outcome:
        """The outcome of a decided scan once its pass's last entry on the node is considered."""
        decision = outcome.decision
        here = venue.location
        if here is None or not decision.allowed or decision.reason != _OK or req.direction == _EXIT:
            return outcome
        key = pass_key(pass_.pass_id)
        last = self._seen.get(key) or self._unwritten.get(key) or self._read(key)
        found = self._suspect(last, venue, here) if last is not None else None
        if found is not None:
            outcome = self._judged(outcome, found, pass_, venue, req.dry_run, key)
        if outcome.decision.allowed and not req.dry_run:
            self._seen[key] = Sighting(venue.venue_id, self._now_ms)
        return outcome

    def _suspect(self, last: Sighting, venue: Venue, here: Location) -> Suspicion | None:
        there = self._where.get(last.venue_id)
        if there is None:
            return None
        return suspect(
            last.venue_id, last.at_ms, there, venue.venue_id, here, self._now_ms, self._speed
        )

    def _judged(
        self,
        outcome: Outcome,
        found: Suspicion,
        pass_: PassRecord,
        venue: Venue,
        dry_run: bool,
        key: bytes,
    ) -> Outcome:
        other = self._venues.get(found.other_venue_id)
        message = describe(found, other.name if other is not None else found.other_venue_id)
        policy = self._policies.get(pass_.product_id, SharedCardPolicy.FLAG)
        judged = judge(outcome, found, policy, message)
        if not dry_run:
            flag = SharedFlag(
                self._now_ms,
                venue.venue_id,
                found.other_venue_id,
                found.other_at_ms,
                round(found.distance_km * 1000),
                not judged.decision.allowed,
            )
            self._flags.append((key, flag))
        return judged

    def _read(self, key: bytes) -> Sighting | None:
        try:
            if self._txn is None:
                self._txn = self.store.begin()
            return self.store.last(self._txn, key)
        except lmdb.Error as exc:
            self._warn(f"sightings read failed: {type(exc).__name__}")
            self._end_read()
            return None

    def _end_read(self) -> None:
        if self._txn is not None:
            txn, self._txn = self._txn, None
            with contextlib.suppress(lmdb.Error):
                txn.abort()

    def commit(self) -> None:
        """After the shard's commit: records the batch's admitted entries and flags now."""
        self.record(self.hand_over())

    def hand_over(self) -> Unwritten:
        """Ends the batch: its sightings and flags, to `record` later (the Ray shard records them
        once the batch's answer is on its way). Until then this shard's next batches see them."""
        self._end_read()
        due = Unwritten(self._seen, self._flags, self._now_ms)
        self._unwritten.update(due.seen)
        self._seen = {}
        self._flags = []
        return due

    def record(self, due: Unwritten) -> None:
        """Writes handed-over sightings and flags. A failure is logged, never raised: the batch
        is committed, and sightings are advisory."""
        self.discard(due)
        if not due.seen and not due.flags:
            return
        try:
            self.store.write(due.seen, due.flags, due.now_ms)
        except Exception as exc:  # advisory: never fail a committed batch
            self._warn(f"sightings not recorded: {exc}")

    def discard(self, due: Unwritten) -> None:
        """Forgets handed-over sightings (written, or their batch never committed)."""
        for key, sighting in due.seen.items():
            if self._unwritten.get(key) is sighting:
                del self._unwritten[key]  # a later batch's newer sighting of the pass stays

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + WARN_EVERY_S
            log.warning("%s (shared-card detection is advisory; entries go on)", text)

    def flags_of(self, pass_id: str) -> list[SharedFlag]:
        return self.store.flags_of(pass_id)

    def close(self) -> None:
        self._end_read()
        self.store.close()
