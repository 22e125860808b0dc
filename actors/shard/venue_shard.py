"""VenueShard: owns a set of venues; decides whole batches and commits each in one LMDB txn.

A plain class over typed records (constructed directly in tests); `actors.shard.service` wraps it
for Ray and owns the bytes. It holds per-pass usage, request records (idempotency and annul), venue
runtime state, reservations and the numba capacity counters in memory, and rebuilds all of them
from its LMDB store on start.

Every item of a batch is checked on its own before it is decided (`core.limits`), so a malformed
item gets its own `invalid` decision and changes nothing, while its neighbours commit.

Signed QR codes (`core.qr`) are screened before anything is decided: signature (cached by the
code's text), pass, window, then one claim transaction for all of the batch's codes in the node's
shared claims store (`actors.shard.code_claims`), before the shard's own commit. A failing code is
refused with INVALID_CODE, CODE_EXPIRED or REPLAYED_CODE; at an exit it only makes the exit
unmatched (nobody is kept inside). A retried request_id is answered from its record, never
claimed again.

Every write goes through `_write`: durably at once (the plain API: a call returns after its
commit, and a failed commit leaves memory untouched), or, inside `staged` (the Ray shard's
`actors.shard.pipeline.CommitPipeline`), handed to the pipeline while memory moves on, so that
the next batch is decided while this one commits; `reload` rebuilds memory from LMDB when such a
commit fails.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from actors.catalog import CatalogReader, catalog_path
from actors.errors import DataDirMismatch, StorageError
from actors.ledger.client import LedgerClient
from actors.routing import shard_of
from actors.shard.code_claims import (
    Claim,
    CodeClaims,
    IssuerKeys,
    claim_owner,
    codes_path,
    issuer_dir,
)
from actors.shard.credit import BatchCredit, ShardCredit
from actors.shard.quota_ops import QuotaOps
from actors.shard.sightings import SharedCards, Unwritten
from actors.shard.store import BatchWrites, ShardStore
from actors.shard.usage_cache import UsageCache
from actors.shard.venues import RESERVATION_KEEP_DAYS, Running, VenueBook
from core.clock import LocalTime, local_time
from core.counters import CapacityCounters, warm
from core.keys import fingerprint, request_key, usage_key
from core.labels import LABELS
from core.limits import CREDENTIAL_VALUE, text_problem
from core.models import (
    UNLIMITED,
    AlertLevel,
    CredentialKind,
    Direction,
    Outcome,
    PassRecord,
    Province,
    QrPolicy,
    Reason,
    Venue,
)
from core.qr import UNKNOWN_KEY, Token, Verifier, claim_expiry_ms, is_signed, window_problem
from core.records import (
    EV_ANNUL,
    EV_ENTRY,
    EV_EXIT,
    EV_EXIT_UNMATCHED,
    EV_NONE,
    Decision,
    LogRecord,
    Request,
    RequestRecord,
    SharedFlag,
    Usage,
)
from core.rules import decide

REQUEST_TTL_MS = 15 * 60 * 1000
COUNTER_SNAPSHOT_EVERY_MS = 1000
DAY_MS = 24 * 3_600_000
_COUNTED = (EV_ENTRY, EV_EXIT, EV_ANNUL)
_KINDS = (1, 2, 3)
_DIRECTIONS = (1, 2)
_REUSED = "request_id: already used by this gate for a different scan; use a new request_id"
_QR = CredentialKind.QR
_EXIT = Direction.EXIT
_DEFAULT_QR = QrPolicy()
_INVALID_CODE = (Reason.INVALID_CODE, LABELS[Reason.INVALID_CODE])
_REPLAYED = (Reason.REPLAYED_CODE, LABELS[Reason.REPLAYED_CODE])
# How often the issuer-key directory is looked at while signed codes arrive (a key named by a
# code but not yet known is looked for at once).
KEY_CHECK_S = 5.0

_EMPTY = Usage()
_T = TypeVar("_T")


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


def request_problem(req: Request) -> str | None:
    """Why a request that reached the shard cannot be decided (the ingress checks the same)."""
    for name in ("request_id", "venue_id", "gate_id"):
        problem = text_problem(getattr(req, name))
        if problem is not None:
            return f"{name}: {problem}"
    if req.kind not in _KINDS:
        return "credential.kind: unknown value"
    problem = text_problem(req.value, CREDENTIAL_VALUE)
    if problem is not None:
        return f"credential.value: {problem}"
    if req.direction not in _DIRECTIONS:
        return "direction: unknown value"
    return None


def invalid(request_id: str, problem: str, now_ms: int) -> Decision:
    return Decision(
        request_id, False, Reason.UNSPECIFIED, problem, decided_at_ms=now_ms, invalid=True
    )


class VenueShard(QuotaOps):
    def __init__(
        self,
        shard_id: int,
        n_shards: int,
        province: Province,
        data_dir: str,
        clock_ms: Callable[[], int] | None = None,
        credentials_dir: str | None = None,
        ledger: LedgerClient | None = None,
        *,
        recover_ledger: bool = True,
    ) -> None:
        """`recover_ledger` False: the caller awaits `credit.recover_async()` before the first
        call (the Ray shard, whose event loop must not block)."""
        self.shard_id = shard_id
        self.province = province
        self._clock = clock_ms or _wall_clock_ms
        data = Path(data_dir)
        owned = [v for v in province.venues.values() if shard_of(v.venue_id, n_shards) == shard_id]
        self._owned = owned
        self._store_path = shard_dir(data, shard_id)
        # Open while the pipeline stages a call: `_write` collects here instead of committing.
        self._staging: list[BatchWrites] | None = None
        # The batch's read transaction on the shard store while it is decided (else None).
        self._reading: Any = None
        self.catalog = CatalogReader(catalog_path(data))
        self.store = ShardStore(shard_dir(data, shard_id))
        self._check_layout(n_shards)
        self.claims = CodeClaims(codes_path(data))
        self.sharing = SharedCards(data, province)  # shared-card sightings of the node
        creds = Path(credentials_dir) if credentials_dir else None
        self.issuers = IssuerKeys(province.qr_keys, issuer_dir(data, creds))
        self.verifier = Verifier(self.issuers.keys)
        self._next_key_check = 0.0
        self.batches = 0
        self.items = 0
        self.last_commit_s = 0.0
        self._commit_samples: list[float] = []
        self._drop_expired_requests()
        self._restore()
        self._drop_old_reservations()
        self.credit = ShardCredit(
            shard_id, self.store, ledger, province, recover_now=recover_ledger
        )
        warm()
        (shard_dir(data, shard_id) / "pid").write_text(str(os.getpid()))

    # -- start-up -------------------------------------------------------------------------------

    def _check_layout(self, n_shards: int) -> None:
        seen = self.store.get_meta("n_shards")
        if seen is None:
            self.store.put_meta("n_shards", n_shards)
        elif seen != n_shards:
            raise DataDirMismatch(layout_problem(seen, n_shards))

    def reload(self) -> None:
        """Rebuilds memory from LMDB (reopened) as a restart would: after a pipelined commit
        failed, memory holds batches that never reached the disk."""
        self.store.close()
        self.store = ShardStore(self._store_path)
        # The holds of the batches that never reached the disk were released as their commits
        # failed (`abandon_outbox`); the credit side keeps its incarnation and reads the new store.
        self.credit.store = self.store
        self._restore()

    def _drop_expired_requests(self) -> None:
        """Request records live REQUEST_TTL_MS; those the last stop left behind older than that
        go at start. On a full disk they stay until a later start (reading skips them)."""
        with contextlib.suppress(StorageError):
            self.store.drop_requests_before(self._oldest_live_ms())

    def _drop_old_reservations(self) -> None:
        """Reservations past their keep (`RESERVATION_KEEP_DAYS`) leave memory and LMDB at start,
        in one transaction; on a full disk they leave LMDB with a later write."""
        now_ms = self._clock()
        for venue in self._owned:
            day = local_time(venue.tz, now_ms).day
            self.book.drop_reservations(venue.venue_id, day - RESERVATION_KEEP_DAYS)
        stale = self.book.take_stale()
        if stale:
            try:
                self.store.commit(BatchWrites(reservations_del=stale))
            except StorageError:
                self.book.requeue_stale(stale)

    def _oldest_live_ms(self) -> int:
        """The decision time of the oldest request record still live (REQUEST_TTL_MS) now."""
        return self._clock() - REQUEST_TTL_MS + 1

    def _restore(self) -> None:
        """Builds memory afresh from LMDB (at start, and in `reload`)."""
        max_slots = max([len(v.slots) for v in self._owned] + [1])
        self.counters = CapacityCounters(max(1, len(self._owned)), max_slots)
        self.book = VenueBook(self._owned, self.counters)
        self.usage = UsageCache()
        self.requests: dict[bytes, RequestRecord] = {}
        self._req_order: deque[tuple[int, bytes]] = deque()
        self._last_snapshot_ms = 0
        # Usage is not preloaded: it is read from LMDB on first use (`_usage`), so a shard with
        # millions of usage records serves again without decoding them all first.
        for key, rec in self.store.iter_requests(self._oldest_live_ms()):  # oldest first
            self.requests[key] = rec
            self._req_order.append((rec.decision.decided_at_ms, key))
        self.book.restore(self.store)
        self._restore_counters()

    def _restore_counters(self) -> None:
        snap = self.store.counters_snapshot()
        after = 0
        if snap is not None:
            after = snap.seq
            self.counters = CapacityCounters.restore(snap.blob)
            self.book.set_counters(self.counters)
        events = [
            (rec.venue_id, rec.day, rec.minute, rec.event, rec.slot_idx)
            for _, rec in self.store.iter_log(after)
            if rec.event in _COUNTED
        ]
        self._apply_events(events)

    # -- the batch path -------------------------------------------------------------------------

    def decide_requests(self, items: list[Request | str]) -> list[Decision]:
        """Decides a batch, waiting for the credit ledger's holds in place (plain callers; the
        Ray shard awaits them between `plan_batch` and `decide_planned`)."""
        plan = self.plan_batch(items)
        self.credit.hold_now(plan.credit)
        return self.decide_planned(plan)

    def plan_batch(self, items: list[Request | str]) -> BatchPlan:
        """What a batch needs before it is decided: each item's problem, its signed code claimed,
        and the credit dry pass's holds to ask for (`plan.credit.asks`)."""
        now_ms = self._clock()
        with self.catalog.begin() as txn, self.store.reader() as self._reading:
            try:
                problems = [req if isinstance(req, str) else request_problem(req) for req in items]
                codes = self._screen_codes(items, problems, now_ms, txn)
                probe = _Batch(now_ms, self.book)
                credit = self.credit.screen(self, items, problems, codes, txn, probe)
            finally:
                self._reading = None
            known = Known(txn.id(), probe.looked_up)
        return BatchPlan(items, problems, codes, now_ms, credit, known)

    def decide_planned(self, plan: BatchPlan, hand_over: bool = False) -> list[Decision]:
        """Decides a planned batch with the ledger's answers and commits it (or stages it, inside
        `staged`). Should it fail, the batch's credit holds are released. `hand_over`: the
        batch's shared-card sightings are left in `plan.sightings` for the caller to record
        (`SharedCards.record`) once it has answered, instead of written here."""
        plan.entered = True
        try:
            return self._decide_planned(plan, hand_over)
        except Exception:  # not on the way out of the process: a restart recovers its holds
            self.credit.abandon(plan.credit)
            raise

    def _decide_planned(self, plan: BatchPlan, hand_over: bool) -> list[Decision]:
        items, now_ms = plan.items, plan.now_ms
        batch = _Batch(now_ms, self.book)
        batch.credit = plan.credit
        self.sharing.begin(now_ms)
        self._expire_requests(now_ms, batch.writes)
        out: list[Decision] = []
        with self.catalog.begin() as txn, self.store.reader() as self._reading:
            try:
                codes = plan.known.codes_in(txn, plan.codes)
                for i, req in enumerate(items):
                    problem = plan.problems[i]
                    if problem is None:
                        assert not isinstance(req, str)
                        out.append(self._decide_one(req, batch, txn, codes.get(i), i))
                    else:
                        rid = "" if isinstance(req, str) else req.request_id
                        out.append(
                            invalid(rid if text_problem(rid) is None else "", problem, now_ms)
                        )
            finally:
                self._reading = None
        self._commit(batch, now_ms)
        if hand_over:
            plan.sightings = self.sharing.hand_over()
        else:
            self.sharing.commit()
        self.batches += 1
        self.items += len(items)
        return out

    def _decide_one(
        self, req: Request, batch: _Batch, txn: Any, code: _Code | None, i: int = -1
    ) -> Decision:
        rkey = request_key(req.venue_id, req.gate_id, req.request_id)
        fp = fingerprint(req.kind, req.value)
        rec = batch.requests.get(rkey) or self.requests.get(rkey)
        if rec is not None:
            if rec.fingerprint == fp and rec.direction == req.direction:
                return rec.decision
            return invalid(req.request_id, _REUSED, batch.now_ms)
        venue = self.book.venue(req.venue_id)
        pass_ = None
        local: LocalTime | None = None
        refusal: tuple[Reason, str] | None = None
        if venue is not None:
            pass_, refusal = self._credential(req, txn, code)
            local = batch.local(venue.venue_id, venue.tz, self.book)
            if refusal is not None and req.direction == _EXIT:
                pass_, refusal = None, None  # let them out; an unknown exit is never subtracted
        ukey = usage_key(req.venue_id, pass_.pass_id) if pass_ is not None else b""
        usage = (batch.usage.get(ukey) or self._usage(ukey)) if ukey else _EMPTY
        capacity = None
        if venue is None:
            outcome = decide(pass_, usage, venue, req, batch.now_ms, self.province)
        else:
            capacity = self.book.capacity_view(venue, pass_, local, batch.running, batch.writes)
            if refusal is not None and req.gate_id in venue.gates:
                outcome = Outcome(_refuse_code(req, pass_, refusal, batch.now_ms, capacity.alert))
            else:
                verdict = self.credit.verdict(batch.credit, i)
                outcome = decide(
                    pass_, usage, venue, req, batch.now_ms, self.province, capacity, local, verdict
                )
                if pass_ is not None:
                    outcome = self.sharing.check(req, pass_, venue, outcome)
        # After every check (a shared card refused releases its credit hold).
        if req.dry_run or not self.credit.keep(batch.credit, i, rkey, outcome, batch.writes):
            return outcome.decision
        reserved = capacity.reserved_slot if capacity is not None else None
        self._record(req, rkey, fp, outcome, ukey, local, batch, reserved, usage.last_entry_ms)
        return outcome.decision

    def _record(
        self,
        req: Request,
        rkey: bytes,
        fp: bytes,
        outcome: Outcome,
        ukey: bytes,
        local: LocalTime | None,
        batch: _Batch,
        reserved: str | None,
        prev_entry_ms: int,
    ) -> None:
        decision = outcome.decision
        event = _event_of(outcome)
        day = local.day if local else 0
        minute = local.minute if local else 0
        slot_idx = -1
        if outcome.entered and reserved is not None:
            slot_idx = self.book.consume_reservation(
                req.venue_id, day, reserved, decision.pass_id, batch.writes
            )
        if event in _COUNTED:
            batch.running.add(req.venue_id, outcome.entered, outcome.exited)
            batch.events.append((req.venue_id, day, minute, event, slot_idx))
        elif event == EV_EXIT_UNMATCHED:
            self.book.stage_unmatched_exit(req.venue_id, day, batch.writes)
        if outcome.usage is not None:
            batch.usage[ukey] = outcome.usage
            batch.writes.usage[ukey] = outcome.usage
        rec = RequestRecord(
            decision, req.venue_id, req.gate_id, fp, int(req.direction), decision.pass_id,
            day, minute, slot_idx, event, False, prev_entry_ms,
        )  # fmt: skip
        batch.requests[rkey] = rec
        batch.writes.requests[rkey] = rec
        batch.writes.log.append(
            LogRecord(
                batch.now_ms, req.request_id, req.venue_id, req.gate_id, decision.pass_id,
                int(req.direction), decision.allowed, int(decision.reason), event, day, minute,
                slot_idx, decision.charge_fen, decision.soft_passback, decision.shared_card,
            )
        )  # fmt: skip

    def _credential(
        self, req: Request, txn: Any, code: _Code | None
    ) -> tuple[PassRecord | None, tuple[Reason, str] | None]:
        """The pass behind the credential, and why its code is refused (None: not refused)."""
        if code is not None:
            return code.pass_, code.refusal
        pass_ = self.catalog.lookup(txn, req.kind, req.value)
        if pass_ is not None and req.kind == _QR and not self._qr_policy(pass_).static:
            return None, _INVALID_CODE  # this product takes signed codes only
        return pass_, None

    def planned_credential(
        self, req: Request, txn: Any, code: _Code | None, probe: _Batch, i: int
    ) -> tuple[PassRecord | None, tuple[Reason, str] | None]:
        """`_credential` while a batch is planned; the answer is kept for its decision, which
        uses it while the catalog has not changed (`Known`)."""
        found = self._credential(req, txn, code)
        if code is None:
            probe.looked_up[i] = _Code(*found)
        return found

    # -- signed QR codes ------------------------------------------------------------------------

    def _screen_codes(
        self, items: list[Request | str], problems: list[str | None], now_ms: int, txn: Any
    ) -> dict[int, _Code]:
        """Checks the batch's signed codes and claims the good ones in ONE claims transaction, so
        that two scans of one code anywhere on the node cannot both pass."""
        found: dict[int, _Code] = {}
        pending: list[tuple[int, Claim]] = []
        # (venue, gate, request_id) of the items before: the batch records them first.
        earlier: set[tuple[str, str, str]] = set()
        for i, req in enumerate(items):
            if problems[i] is not None or isinstance(req, str):
                continue
            scope = (req.venue_id, req.gate_id, req.request_id)
            seen = scope in earlier
            if not req.dry_run:
                earlier.add(scope)
            if req.kind != _QR or not is_signed(req.value):
                continue
            rkey = request_key(req.venue_id, req.gate_id, req.request_id)
            # A record answers this request_id (a retry, or a reuse refused): claim nothing.
            if seen or rkey in self.requests:
                continue
            code = self._check_code(req, rkey, now_ms, txn)
            if code is None:
                continue
            found[i] = code
            if code.claim is not None:
                pending.append((i, code.claim))
        if pending:
            replayed = self.claims.claim([claim for _, claim in pending], now_ms)
            for (i, _), again in zip(pending, replayed, strict=True):
                if again:
                    found[i] = _Code(found[i].pass_, _REPLAYED)
        return found

    def _check_code(self, req: Request, rkey: bytes, now_ms: int, txn: Any) -> _Code | None:
        """What a signed code says; None when something else answers first (an unknown venue or
        gate), so that such a scan claims nothing."""
        venue: Venue | None = self.book.venue(req.venue_id)
        if venue is None or req.gate_id not in venue.gates:
            return None
        token = self._verify(req.value)
        if not isinstance(token, Token):
            return _Code(None, _INVALID_CODE)
        pass_ = self.catalog.lookup_id(txn, token.pass_id)
        if pass_ is None:
            return _Code(None, _INVALID_CODE)
        policy = self._qr_policy(pass_)
        problem = window_problem(token.step, now_ms, policy)
        if problem is not None:
            return _Code(pass_, problem)
        expiry = claim_expiry_ms(token.step, policy)
        claim = Claim(token.claim_key(), claim_owner(rkey), expiry, bool(req.dry_run))
        return _Code(pass_, None, claim)

    def _verify(self, text: str) -> Token | str:
        self._refresh_issuers(force=False)
        result = self.verifier.check(text)
        if result == UNKNOWN_KEY and self._refresh_issuers(force=True):
            result = self.verifier.check(text)
        return result

    def _refresh_issuers(self, force: bool) -> bool:
        """Re-reads the issuer keys when their directory changed; True when the keys changed."""
        now = time.monotonic()
        if not force and now < self._next_key_check:
            return False
        self._next_key_check = now + KEY_CHECK_S
        if not self.issuers.refresh():
            return False
        self.verifier.replace_keys(self.issuers.keys)
        return True

    def _qr_policy(self, pass_: PassRecord) -> QrPolicy:
        product = self.province.products.get(pass_.product_id)
        return product.qr if product is not None else _DEFAULT_QR

    def _usage(self, ukey: bytes) -> Usage:
        """The usage of (venue, pass): memory first, then LMDB (committed state), else empty."""
        usage = self.usage.get(ukey)
        if usage is None:
            usage = self.store.get_usage(ukey, self._reading)
            if usage is None:
                return _EMPTY
            self.usage[ukey] = usage
        return usage

    def _expire_requests(self, now_ms: int, writes: BatchWrites) -> None:
        order = self._req_order
        while order and now_ms - order[0][0] >= REQUEST_TTL_MS:
            _, key = order.popleft()
            rec = self.requests.pop(key, None)
            if rec is not None:
                writes.expired_requests.append((key, rec.decision.decided_at_ms))

    def _commit(self, batch: _Batch, now_ms: int) -> None:
        # Lines past the province's retention leave the decision log with this commit.
        batch.writes.log_before_ms = now_ms - self.province.decision_log_days * DAY_MS
        if now_ms - self._last_snapshot_ms >= COUNTER_SNAPSHOT_EVERY_MS and batch.events:
            # The counters as they stand before this batch; a restart replays the log after them,
            # this batch's records included.
            batch.writes.counters = self.counters.snapshot()
        self.credit.stage(batch.credit, batch.writes)
        writes = batch.writes
        held = None
        if not writes.empty():
            # The ledger hears of settles and releases once they are on disk; should a pipelined
            # commit never get there, the batch's holds go (a failed plain commit raises, and
            # `decide_planned` releases them).
            held = self._write(
                writes,
                durable=lambda: self.credit.committed(writes),
                lost=lambda: self.credit.abandon_outbox(writes),
            )
        if batch.writes.counters is not None:
            self._last_snapshot_ms = now_ms
        # Only after the commit (or, pipelined, once staged) does memory move on: a failed
        # commit leaves no trace (pipelined: the pipeline reloads memory from LMDB).
        self.usage.remember(batch.usage, held)
        for key, rec in batch.requests.items():
            self.requests[key] = rec
            self._req_order.append((batch.now_ms, key))
        self.book.apply_committed(batch.writes)
        self._apply_events(batch.events)

    # -- commits ----------------------------------------------------------------------------------

    def _write(
        self,
        writes: BatchWrites,
        durable: Callable[[], None] | None = None,
        lost: Callable[[], None] | None = None,
    ) -> BatchWrites | None:
        """One transaction's writes: committed durably now (returns None), or held for the
        pipeline's stage (returns them). `durable` runs once they are on disk (now, or after the
        pipeline's commit); `lost` if a held commit fails or is skipped."""
        writes.reservations_del.extend(self.book.take_stale())
        if self._staging is None:
            self.commit_writes([writes])
            if durable is not None:
                durable()
            return None
        self._staging.append(writes)
        if durable is not None:
            writes.on_durable.append(durable)
        if lost is not None:
            writes.on_failed.append(lost)
        return writes

    def commit_writes(
        self, group: list[BatchWrites], written: Callable[[], None] | None = None
    ) -> None:
        """Commits writes, in order, in one durable transaction (the pipeline calls it in its
        commit thread; `written` once the puts are done, before the syncs)."""
        t0 = time.perf_counter()
        if len(group) == 1 and written is None:
            self.store.commit(group[0])
        else:
            self.store.commit_group(group, written)
        self.last_commit_s = time.perf_counter() - t0
        if len(self._commit_samples) < 10_000:
            self._commit_samples.append(self.last_commit_s)

    def staged(self, step: Callable[[], _T], held: list[BatchWrites]) -> _T:
        """Runs one call (a batch, an annul, a quota change...) with its writes appended to `held`
        instead of committed; memory moves on as if they had been. The caller commits them in
        order and answers only after that commit. Should `step` raise after holding writes,
        memory is ahead of the disk and the caller must `reload`."""
        self._staging = held
        try:
            return step()
        finally:
            self._staging = None

    def _apply_events(self, events: list[tuple[str, int, int, int, int]]) -> None:
        """One numba call for all of a batch's (venue_id, day, minute, kind, slot) events."""
        if not events:
            return
        venues, days, minutes, kinds, slots = zip(*events, strict=True)
        idx = [self.book.index.get(v, -1) for v in venues]
        self.counters.apply_batch(idx, days, minutes, kinds, slots)

    # -- annul ----------------------------------------------------------------------------------

    def annul(
        self, request_id: str, venue_id: str, gate_id: str, kind: int, value: str
    ) -> tuple[bool, str]:
        """Undoes an admitted entry (the turnstile did not turn): same gate, same credential,
        within 15 min."""
        now_ms = self._clock()
        rkey = request_key(venue_id, gate_id, request_id)
        rec = self.requests.get(rkey)
        problem = _annul_problem(rec, fingerprint(kind, value), now_ms)
        if problem is not None:
            return problem
        assert rec is not None
        decision = rec.decision
        ukey = usage_key(venue_id, rec.pass_id)
        usage = self._usage(ukey).copy()
        usage.entries = max(0, usage.entries - 1)
        if usage.day == rec.day:
            usage.entries_today = max(0, usage.entries_today - 1)
        usage.inside = False
        usage.last_entry_ms = rec.prev_entry_ms
        usage.charges_fen = max(0, usage.charges_fen - decision.charge_fen)
        usage.free_visits = max(0, usage.free_visits - int(decision.free_visit))
        annulled = RequestRecord(
            decision, rec.venue_id, rec.gate_id, rec.fingerprint, rec.direction, rec.pass_id,
            rec.day, rec.minute, rec.slot_idx, rec.event, True, rec.prev_entry_ms,
        )  # fmt: skip
        writes = BatchWrites()
        writes.usage[ukey] = usage
        writes.requests[rkey] = annulled
        writes.log.append(
            LogRecord(
                now_ms, request_id, venue_id, gate_id, rec.pass_id, 0, False, 0, EV_ANNUL,
                rec.day, rec.minute, rec.slot_idx, -decision.charge_fen, False,
            )
        )  # fmt: skip
        if rec.slot_idx >= 0:
            self.book.restore_reservation(venue_id, rec.day, rec.slot_idx, rec.pass_id, writes)
        if decision.charge_fen > 0:
            self.credit.annul(rkey, writes)
        held = self._write(writes, durable=lambda: self.credit.committed(writes, staged=False))
        self.usage.remember({ukey: usage}, held)
        self.requests[rkey] = annulled
        self.book.apply_committed(writes)
        self._apply_events([(venue_id, rec.day, rec.minute, EV_ANNUL, rec.slot_idx)])
        return True, "entry annulled"

    # -- reads ----------------------------------------------------------------------------------

    def usage_of(self, pass_id: str) -> list[tuple[str, Usage]]:
        """(venue_id, usage) for every venue of this shard the pass has used."""
        # LMDB holds every committed usage record (memory holds only those used since start).
        return list(self.store.usage_of_pass(pass_id))

    def shared_flags_of(self, pass_id: str) -> list[SharedFlag]:
        """The pass's recent shared-card flags on this node (every shard of a node sees them)."""
        return self.sharing.flags_of(pass_id)

    def stored_admits(self) -> int:
        """Admitted entries not annulled, counted from the durable decision log (and what the
        trimmed lines of it held)."""
        total = self.store.log_trim().admits
        for _, rec in self.store.iter_log():
            if rec.event == EV_ENTRY:
                total += 1
            elif rec.event == EV_ANNUL:
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
            "codes_verified": self.verifier.verified,
            **self.store.figures(),
            **self.credit.stats(),
        }

    def close(self) -> None:
        """Releases the LMDB environments (a process may open each only once)."""
        self.credit.close()
        self.store.close()
        self.catalog.close()
        self.claims.close()
        self.sharing.close()

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True


class _Code:
    """What screening found for one signed code: its pass, a refusal, or a claim to make."""

    __slots__ = ("claim", "pass_", "refusal")

    def __init__(
        self,
        pass_: PassRecord | None,
        refusal: tuple[Reason, str] | None,
        claim: Claim | None = None,
    ) -> None:
        self.pass_ = pass_
        self.refusal = refusal
        self.claim = claim


def _refuse_code(
    req: Request,
    pass_: PassRecord | None,
    refusal: tuple[Reason, str],
    now_ms: int,
    alert: AlertLevel,
) -> Decision:
    # The pass is named only when the code's signature proved it (expired, replayed).
    pass_id = pass_.pass_id if pass_ is not None else ""
    reason, message = refusal
    return Decision(
        req.request_id, False, reason, message, pass_id, UNLIMITED, alert, False, now_ms
    )


def _event_of(outcome: Outcome) -> int:
    if outcome.entered:
        return EV_ENTRY
    if outcome.exited:
        return EV_EXIT
    if outcome.unmatched_exit:
        return EV_EXIT_UNMATCHED
    return EV_NONE


def _annul_problem(rec: RequestRecord | None, fp: bytes, now_ms: int) -> tuple[bool, str] | None:
    # The same answer whether the id is unknown at this gate or names another credential's entry:
    # an annul reveals nothing about other scans.
    if rec is None or rec.fingerprint != fp:
        return False, "no entry with this request_id and credential at this gate in 15 minutes"
    if rec.event != EV_ENTRY:
        return False, "that request did not admit an entry"
    if rec.annulled:
        return True, "already annulled"
    if now_ms - rec.decision.decided_at_ms > REQUEST_TTL_MS:
        return False, "too late: entries can be annulled for 15 minutes"
    return None


class Known:
    """The credentials a batch's plan looked up (item index -> pass and refusal), and the catalog
    snapshot they were read in. Its decision uses them only while the catalog is that snapshot
    still: one more commit of the catalog (an import, a revocation) and it looks up afresh."""

    __slots__ = ("catalog_txn", "looked_up")

    def __init__(self, catalog_txn: int, looked_up: dict[int, _Code]) -> None:
        self.catalog_txn = catalog_txn
        self.looked_up = looked_up

    def codes_in(self, txn: Any, codes: dict[int, _Code]) -> dict[int, _Code]:
        """The screened signed codes, plus the plan's lookups when `txn` reads their snapshot."""
        if not self.looked_up or txn.id() != self.catalog_txn:
            return codes
        return {**self.looked_up, **codes}


class BatchPlan:
    """A batch between `plan_batch` and `decide_planned`: the items, each one's problem (None:
    none), the screened signed codes by index, the clock reading, the credit dry pass and the
    credentials it looked up."""

    __slots__ = ("codes", "credit", "entered", "items", "known", "now_ms", "problems", "sightings")

    def __init__(
        self,
        items: list[Request | str],
        problems: list[str | None],
        codes: dict[int, _Code],
        now_ms: int,
        credit: BatchCredit | None,
        known: Known,
    ) -> None:
        self.items = items
        self.problems = problems
        self.codes = codes
        self.now_ms = now_ms
        self.credit = credit
        self.known = known
        self.entered = False  # decide_planned began (from then on it releases holds on failure)
        self.sightings: Unwritten | None = None  # handed over by decide_planned, to record


class _Batch:
    __slots__ = (
        "credit", "events", "locals", "looked_up", "now_ms", "requests", "running", "usage",
        "writes",
    )  # fmt: skip

    def __init__(self, now_ms: int, book: VenueBook) -> None:
        self.now_ms = now_ms
        self.writes = BatchWrites()
        self.usage: dict[bytes, Usage] = {}
        self.requests: dict[bytes, RequestRecord] = {}
        self.events: list[tuple[str, int, int, int, int]] = []
        self.running = Running(book)
        self.locals: dict[str, LocalTime] = {}
        self.credit: BatchCredit | None = None
        self.looked_up: dict[int, _Code] = {}  # a plan's lookups (`VenueShard.planned_credential`)

    def local(self, venue_id: str, tz: Any, book: VenueBook) -> LocalTime:
        lt = self.locals.get(venue_id)
        if lt is None:
            lt = local_time(tz, self.now_ms)
            self.locals[venue_id] = lt
            book.roll_day(venue_id, lt.day)
        return lt


__all__ = [
    "EV_ANNUL",
    "EV_ENTRY",
    "EV_EXIT",
    "EV_EXIT_UNMATCHED",
    "EV_NONE",
    "Direction",
    "VenueShard",
    "shard_of",
]
