"""The shard's side of the holder-wide credit ledger (`core.credit`, `actors.ledger`).

For a batch, a dry pass finds the pay-later candidates: entries that would admit on credit
against the committed state. The ledger is asked to hold their charges in ONE call per ledger
shard (none at all for a batch without candidates); the Ray shard awaits that call on its event
loop (`hold`), plain callers block on it (`hold_now`). The real pass decides with the answers:
granted admits on credit, refused is CREDIT_DENIED naming the holder-wide debt. An item the dry
pass did not foresee (rare: an exit earlier in the batch made room) and the candidates of a batch
whose ledger did not answer in time are refused for a retry and not recorded, so the gate's retry
with the same request_id is decided afresh.

What the ledger must still hear goes into an outbox in the shard's LMDB, committed in the same
transaction as the entries: settle for an admitted entry, release for a hold whose entry was
refused after all, was annulled, or whose answer came too late. It is sent right after the commit
without waiting; a record is deleted (in a later commit) once its ledger call returned. A restart
replays the outbox and fences off the earlier incarnation (see `core.credit`).
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from actors.ledger.client import LedgerClient, LocalLedgerClient
from actors.ledger.ledger import Ledger
from actors.shard.store import BatchWrites, ShardStore
from actors.shard.venues import Running
from core.credit import (
    PROBE,
    RELEASE,
    SETTLE,
    UNCHECKED,
    CreditLink,
    HoldAnswer,
    HoldAsk,
    Owner,
    fits,
    refusal_message,
)
from core.enums import CreditTier, Direction, Reason
from core.keys import charge_key, request_key, usage_key
from core.models import Outcome, Province, Request
from core.rules import decide

if TYPE_CHECKING:
    from actors.shard.venue_shard import VenueShard

_ATTEMPT = struct.Struct(">IQ")
# After a hold call that was not answered in time, pay-later entries are refused for a retry
# without asking for this long.
LEDGER_BACKOFF_S = 1.0
_EXIT = Direction.EXIT
_DENIED = Reason.CREDIT_DENIED
_UNAVAILABLE = refusal_message(UNCHECKED)


class BatchCredit:
    """One batch's verdicts by item index, and the charge keys of its granted holds."""

    __slots__ = ("asks", "held", "outcomes", "verdicts")

    def __init__(self) -> None:
        self.verdicts: dict[int, HoldAnswer] = {}
        self.held: dict[int, bytes] = {}
        self.outcomes: dict[bytes, int] = {}
        # The holds still to ask for, by item index (`ShardCredit.hold` or `hold_now`).
        self.asks: list[tuple[int, HoldAsk]] = []


class ShardCredit:
    def __init__(
        self,
        shard_id: int,
        store: ShardStore,
        client: LedgerClient | None,
        province: Province,
        *,
        recover_now: bool = True,
    ) -> None:
        """`recover_now`: replay the outbox to the ledger here, blocking; else the caller awaits
        `recover_async` before the first batch (an asyncio actor must not block its loop)."""
        self.store = store
        # Only entries at these venues can be pay-later: the others cost the batch nothing here.
        self.venues = frozenset(
            venue_id
            for product in province.products.values()
            if product.credit is not None
            for venue_id, rule in product.venues.items()
            if rule.pay_later_price_fen > 0
        )
        # Without a ledger (unit tests of other parts of the shard), an in-memory one.
        self.client: LedgerClient = client or LocalLedgerClient([Ledger()])
        incarnation = int(store.get_meta("incarnation") or 0) + 1
        store.put_meta("incarnation", incarnation)
        self.owner = Owner(shard_id, incarnation)
        self._seq = 0
        self.outbox: dict[bytes, int] = dict(store.iter_outbox())
        self._sent: dict[bytes, int] = {}
        self._done: list[bytes] = []
        self._orphans: dict[bytes, int] = {}
        self.asked = self.granted = self.refused = self.unavailable = 0
        self._down_until = 0.0
        self.backoff_s = LEDGER_BACKOFF_S
        self.orphans_released = 0
        self.recovered = False
        if recover_now:
            self._recovered(self.client.recover(self.owner, dict(self.outbox)))

    async def recover_async(self) -> None:
        """At start, before anything is decided: replays the outbox, fences the earlier
        incarnations' holds and releases their orphans (`LedgerClient.recover`)."""
        if not self.recovered:
            self._recovered(await self.client.recover_async(self.owner, dict(self.outbox)))

    def _recovered(self, orphans_released: int) -> None:
        self.orphans_released = orphans_released
        # The ledger has taken the whole outbox: drop it in the first commit.
        self._done = list(self.outbox)
        self.outbox = {}
        self.recovered = True

    # -- the batch ------------------------------------------------------------------------------

    def screen(
        self,
        shard: VenueShard,
        items: list[Any],
        problems: list[str | None],
        codes: Any,
        txn: Any,
        batch: Any,
    ) -> BatchCredit | None:
        """The dry pass: the batch's verdicts so far and the holds to ask for (`found.asks`);
        None for a batch without pay-later entries."""
        self.tick()
        found = BatchCredit()
        asks: list[tuple[int, HoldAsk]] = []
        seen: set[bytes] = set()
        attempt = _ATTEMPT.pack(self.owner.incarnation, self._seq + 1)
        venues = self.venues
        for i, req in enumerate(items):
            if (
                problems[i] is None
                and isinstance(req, Request)
                and req.venue_id in venues
                and req.direction != _EXIT
            ):
                ask = self._probe(shard, req, txn, codes.get(i), batch, seen, attempt, found, i)
                if ask is not None:
                    asks.append((i, ask))
        if not found.verdicts:
            return None
        if asks:
            self._seq += 1
            if time.monotonic() < self._down_until:
                # The ledger just failed to answer: refuse pay-later for a retry at once, so that
                # the shard's other entries are not held up behind it while it restarts.
                self.unavailable += len(asks)
                found.held.clear()
            else:
                found.asks = asks
        return found

    def _probe(
        self,
        shard: VenueShard,
        req: Request,
        txn: Any,
        code: Any,
        batch: Any,
        seen: set[bytes],
        attempt: bytes,
        found: BatchCredit,
        i: int,
    ) -> HoldAsk | None:
        rkey = request_key(req.venue_id, req.gate_id, req.request_id)
        if rkey in seen or rkey in shard.requests:
            return None  # answered by the item before it, or by its record
        seen.add(rkey)
        venue = shard.book.venue(req.venue_id)
        if venue is None or req.gate_id not in venue.gates:
            return None
        pass_, refusal = shard.planned_credential(req, txn, code, batch, i)
        if pass_ is None or refusal is not None:
            return None
        product = shard.province.products.get(pass_.product_id)
        rule = product.venues.get(venue.venue_id) if product is not None else None
        credit = product.credit if product is not None else None
        if rule is None or credit is None or rule.pay_later_price_fen <= 0:
            return None
        if CreditTier(pass_.credit_tier) not in credit.pay_later_tiers:
            return None
        price, limit, baseline = (
            rule.pay_later_price_fen,
            credit.debt_limit_fen,
            pass_.outstanding_debt_fen,
        )
        found.verdicts[i] = UNCHECKED
        if not fits(baseline, price, limit):  # hopeless whatever the other venues say
            found.verdicts[i] = HoldAnswer(False, baseline, limit)
            return None
        local = batch.local(venue.venue_id, venue.tz, shard.book)
        usage = shard._usage(usage_key(req.venue_id, pass_.pass_id))
        capacity = shard.book.capacity_view(venue, pass_, local, Running(shard.book), batch.writes)
        probe = decide(
            pass_, usage, venue, req, batch.now_ms, shard.province, capacity, local, PROBE
        )
        if not probe.decision.pay_later:
            return None
        key = charge_key(pass_.pass_id, rkey, attempt)
        if not req.dry_run:
            found.held[i] = key
        return HoldAsk(
            key, pass_.pass_id, req.venue_id, req.request_id, price, baseline, limit,
            batch.now_ms, bool(req.dry_run),
        )  # fmt: skip

    async def hold(self, found: BatchCredit | None) -> None:
        """Asks the ledger for the batch's holds without blocking the event loop."""
        if found is not None and found.asks:
            asks = [ask for _, ask in found.asks]
            self._answered(found, await self.client.hold_async(self.owner, asks))

    def hold_now(self, found: BatchCredit | None) -> None:
        """Asks the ledger for the batch's holds and waits for the answer (plain callers)."""
        if found is not None and found.asks:
            asks = [ask for _, ask in found.asks]
            self._answered(found, self.client.hold(self.owner, asks))

    def _answered(self, found: BatchCredit, answers: list[HoldAnswer] | None) -> None:
        asks, found.asks = found.asks, []
        self.asked += 1
        if answers is None:
            self._down_until = time.monotonic() + self.backoff_s
            self.unavailable += len(asks)
            # The ledger may still grant them late: release them all (the outbox keeps trying).
            for i, _ask in asks:
                key = found.held.pop(i, None)
                if key is not None:
                    found.outcomes[key] = RELEASE
            return
        for (i, _ask), answer in zip(asks, answers, strict=True):
            found.verdicts[i] = answer
            if answer.granted:
                self.granted += 1
            else:
                self.refused += 1
                found.held.pop(i, None)

    def verdict(self, found: BatchCredit | None, i: int) -> HoldAnswer:
        """Item i's verdict; an item that reaches pay-later without one is refused for a retry
        (never admitted on the debt one venue knows of)."""
        return UNCHECKED if found is None else found.verdicts.get(i, UNCHECKED)

    def keep(
        self, found: BatchCredit | None, i: int, rkey: bytes, outcome: Outcome, writes: BatchWrites
    ) -> bool:
        """Settles or releases item i's hold; False when its decision must not be recorded
        (a credit check that could not be made: the gate retries)."""
        decision = outcome.decision
        key = None if found is None else found.held.pop(i, None)
        if found is not None and key is not None:
            if decision.pay_later:
                found.outcomes[key] = SETTLE
                writes.credit_links[rkey] = CreditLink(key, decision.charge_fen)
            else:
                found.outcomes[key] = RELEASE
        return not (decision.reason == _DENIED and decision.message == _UNAVAILABLE)

    def stage(self, found: BatchCredit | None, writes: BatchWrites) -> None:
        """Puts the batch's outcomes, earlier orphans and delivered records into its commit."""
        if found is not None:
            # Holds of items the real pass never reached with a hold go back (a retry answered
            # from the record its first attempt left while this batch waited for the ledger).
            for key in found.held.values():
                found.outcomes[key] = RELEASE
            found.held.clear()
            writes.outbox.update(found.outcomes)
        writes.outbox.update(self._orphans)
        writes.outbox_done.extend(self._done)

    def committed(self, writes: BatchWrites, staged: bool = True) -> None:
        """After a commit (a batch's, `staged`, or an annul's): sends what it put in the outbox."""
        if staged:
            # Exactly what this commit carried: with the commit pipeline, later batches may
            # have been staged (with more) before this one became durable.
            for key in writes.outbox:
                self._orphans.pop(key, None)
            if writes.outbox_done:
                carried = set(writes.outbox_done)
                self._done = [key for key in self._done if key not in carried]
        if writes.outbox:
            self.outbox.update(writes.outbox)
            self._send(writes.outbox)

    def abandon_outbox(self, writes: BatchWrites) -> None:
        """A pipelined batch's commit failed or was skipped: every hold it settled or released
        is released (at once, and again by the next durable commit's outbox)."""
        releases = dict.fromkeys(writes.outbox, RELEASE)
        if releases:
            self._orphans.update(releases)
            self._send(releases)

    def abandon(self, found: BatchCredit | None) -> None:
        """The commit failed: nothing of the batch stands, so its holds must go."""
        if found is not None:
            orphans = dict.fromkeys((*found.held.values(), *found.outcomes), RELEASE)
            self._orphans.update(orphans)
            # At once, so that the gate's retry is not refused for its own abandoned hold; the
            # next commit's outbox keeps them in case this is lost.
            self._send(orphans)

    # -- annul ----------------------------------------------------------------------------------

    def annul(self, rkey: bytes, writes: BatchWrites) -> None:
        link = self.store.credit_link(rkey)
        if link is not None:
            writes.outbox[link.charge_key] = RELEASE
            # Its settle record may wait for deletion: the release must not go with it.
            self._done = [key for key in self._done if key != link.charge_key]

    # -- delivery -------------------------------------------------------------------------------

    def _send(self, outcomes: dict[bytes, int]) -> None:
        self._sent.update(outcomes)
        self.client.send(dict(outcomes))

    def tick(self) -> None:
        """Notes what the ledger has taken (deleted with the next commit) and re-sends what
        failed or was never sent."""
        done, failed = self.client.delivered()
        for key, action in done.items():
            if self._sent.get(key) == action:
                del self._sent[key]
            if self.outbox.get(key) == action:
                del self.outbox[key]
                self._done.append(key)
        for key in failed:
            self._sent.pop(key, None)
        unsent = {k: a for k, a in self.outbox.items() if self._sent.get(k) != a}
        if unsent:
            self._send(unsent)

    def stats(self) -> dict[str, int]:
        if self.recovered:  # before its recovery a shard sends the ledger nothing
            self.tick()
        return {
            "credit_hold_calls": self.asked,
            "credit_holds_granted": self.granted,
            "credit_holds_refused": self.refused,
            "credit_holds_unavailable": self.unavailable,
            "credit_outbox": len(self.outbox),
        }

    def close(self) -> None:
        self.client.close()
