"""The holder-wide credit ledger's arithmetic: holds, settles and releases of pay-later charges.

A pay-later entry may admit only while the holder's whole debt (the debt imported with the pass
plus every charge still counted, at every venue of every shard) stays within the product's limit.
A shard asks for a *hold* before it decides the entry; the charge counts from that moment. After
the shard's commit the hold is *settled* (the entry stands) or *released* (the entry was refused
after all, annulled, or never committed). Released is final.

`CreditBook` is the ledger's state in memory: pure data and arithmetic, no clock, no I/O. The
ledger actor (`actors.ledger`) persists every change it returns, one LMDB transaction per call.

Charges are keyed by `core.keys.charge_key`: the pass, the entry's request key and the attempt
(the asking shard's incarnation and batch number). Asking again for the same key returns the same
answer, so a call that Ray retries on a restarted ledger holds nothing twice; a new attempt of the
same request (a batch retried after a shard restart) gets a new key, so a late hold of an abandoned
attempt can never revive a released charge.

Each hold names its owner (shard id, incarnation). A restarted shard *recovers*: it replays the
settles and releases of its outbox, fences off its older incarnations (their late holds are
refused) and releases their holds that are still open: no committed entry justifies them, since a
committed entry's settle was in the outbox.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

from core.keys import charge_pass_id

SETTLE, RELEASE = 1, 2  # outbox actions


class ChargeState(IntEnum):
    """Mirrors passes.proto ChargeState."""

    UNSPECIFIED = 0
    HELD = 1
    SETTLED = 2
    RELEASED = 3


_HELD = ChargeState.HELD
_SETTLED = ChargeState.SETTLED
_RELEASED = ChargeState.RELEASED


class Charge(msgspec.Struct, array_like=True, tag="charge/1", gc=False):
    """One pay-later charge of one pass, as the ledger keeps it."""

    amount_fen: int
    venue_id: str
    request_id: str
    at_ms: int
    state: int
    shard_id: int
    incarnation: int
    # Holder-wide debt before this charge when it was granted: a repeated ask gets this answer.
    owed_before_fen: int = 0

    def counts(self) -> bool:
        return self.state != _RELEASED


class HoldAsk(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A shard asks: may this pass owe `amount_fen` more for this entry?"""

    key: bytes
    pass_id: str
    venue_id: str
    request_id: str
    amount_fen: int
    # What the pass record says the holder already owed when imported (the card centre's figure).
    baseline_fen: int
    limit_fen: int
    at_ms: int
    # A dry run: answer without holding anything.
    peek: bool = False


class HoldAnswer(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The ledger's verdict on one ask; `owed_fen` is the holder-wide debt before the charge."""

    granted: bool
    owed_fen: int
    limit_fen: int
    # The ledger could not be asked (a refusal to retry, never recorded).
    unavailable: bool = False


class Owner(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The shard instance that asks; a restart begins a new incarnation."""

    shard_id: int
    incarnation: int


class HoldCall(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One shard batch's asks to one ledger shard: a single call, a single transaction."""

    owner: Owner
    asks: list[HoldAsk]


class Outcomes(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Charge keys to settle (their entries are committed) and to release."""

    settle: list[bytes] = []
    release: list[bytes] = []


class LedgerCall(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One call on a shard's channel to a ledger shard: a hold (answered with its
    `list[HoldAnswer]`) or outcomes to apply (answered with nothing); exactly one of the two."""

    hold: HoldCall | None = None
    outcomes: Outcomes | None = None


class ChargesCall(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The ingress's read of one pass's charges (GetPass), a call frame on its channel to the
    pass's ledger shard; answered with the encoded `list[Charge]` (`decode_charges`)."""

    pass_id: str


class OutboxRecord(msgspec.Struct, array_like=True, tag="outbox/1", gc=False):
    """A shard's note, committed with its entries, of what the ledger must still hear about one
    charge: settle (the entry stands) or release. Deleted once the ledger has taken it."""

    action: int


class Fence(msgspec.Struct, array_like=True, tag="fence/1", gc=False):
    """The newest incarnation of a shard the ledger has seen recover; older ones are stale."""

    incarnation: int


class CreditLink(msgspec.Struct, array_like=True, tag="credit-link/1", gc=False):
    """The ledger charge behind a committed pay-later entry (by request key), for annul."""

    charge_key: bytes
    amount_fen: int


# The dry pass of a shard batch decides with this verdict to learn which items would admit on
# credit; `UNCHECKED` is the verdict of an item the dry pass did not foresee (retry it).
PROBE = HoldAnswer(True, 0, 0)
UNCHECKED = HoldAnswer(False, 0, 0, unavailable=True)


def decode_charges(payload: bytes) -> list[Charge]:
    return msgspec.msgpack.decode(payload, type=list[Charge])


def fits(owed_fen: int, amount_fen: int, limit_fen: int) -> bool:
    return owed_fen + amount_fen <= limit_fen


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def refusal_message(answer: HoldAnswer) -> str:
    """What a gate shows when the ledger refuses: the holder-wide debt against the limit."""
    if answer.unavailable:
        return "credit check unavailable: please retry"
    return f"debt over limit: owe {yuan(answer.owed_fen)} of {yuan(answer.limit_fen)} yuan"


class CreditBook:
    """Charges by key, the counted debt per pass, and the fence of each shard."""

    def __init__(self) -> None:
        self.charges: dict[bytes, Charge] = {}
        self.owed: dict[str, int] = {}
        self.by_pass: dict[str, list[bytes]] = {}
        self.fences: dict[int, int] = {}
        self.granted = 0
        self.refused = 0

    def load(self, key: bytes, charge: Charge) -> None:
        """Takes one stored charge back into memory (at start)."""
        self.charges[key] = charge
        pass_id = charge_pass_id(key)
        self.by_pass.setdefault(pass_id, []).append(key)
        if charge.counts():
            self.owed[pass_id] = self.owed.get(pass_id, 0) + charge.amount_fen

    def counted(self, pass_id: str) -> int:
        """The charges that count against the pass now (held and settled)."""
        return self.owed.get(pass_id, 0)

    # -- changes: each returns the charges to persist --------------------------------------------

    def hold(self, owner: Owner, ask: HoldAsk, changed: dict[bytes, Charge]) -> HoldAnswer:
        """Grants and records the charge when it fits under the limit; idempotent by key."""
        known = self.charges.get(ask.key)
        if known is not None:
            granted = known.state != _RELEASED
            return HoldAnswer(granted, known.owed_before_fen, ask.limit_fen)
        owed = ask.baseline_fen + self.counted(ask.pass_id)
        stale = owner.incarnation < self.fences.get(owner.shard_id, 0)
        granted = not stale and fits(owed, ask.amount_fen, ask.limit_fen)
        if ask.peek:
            return HoldAnswer(granted, owed, ask.limit_fen)
        if not granted:
            self.refused += 1
            return HoldAnswer(False, owed, ask.limit_fen)
        charge = Charge(
            ask.amount_fen, ask.venue_id, ask.request_id, ask.at_ms, _HELD,
            owner.shard_id, owner.incarnation, owed,
        )  # fmt: skip
        self._put(ask.key, charge, changed)
        self.granted += 1
        return HoldAnswer(True, owed, ask.limit_fen)

    def settle(self, key: bytes, changed: dict[bytes, Charge]) -> None:
        """The entry is committed: a held charge stays counted for good."""
        charge = self.charges.get(key)
        if charge is not None and charge.state == _HELD:
            self._put(key, _with_state(charge, _SETTLED), changed)

    def release(self, key: bytes, changed: dict[bytes, Charge]) -> None:
        """The entry was refused, annulled or never committed: the charge stops counting.
        An unknown key leaves a released tombstone, so a late hold for it is refused."""
        charge = self.charges.get(key)
        if charge is None:
            charge = Charge(0, "", "", 0, _RELEASED, -1, 0)
            self._put(key, charge, changed)
        elif charge.state != _RELEASED:
            self._put(key, _with_state(charge, _RELEASED), changed)

    def recover(
        self, owner: Owner, outcomes: Outcomes, changed: dict[bytes, Charge]
    ) -> list[bytes]:
        """A restarted shard: its outbox first, then the fence, then its orphaned holds go.
        Returns the keys released as orphans."""
        self.apply(outcomes, changed)
        if owner.incarnation > self.fences.get(owner.shard_id, 0):
            self.fences[owner.shard_id] = owner.incarnation
        orphans = [
            key
            for key, c in self.charges.items()
            if c.state == _HELD
            and c.shard_id == owner.shard_id
            and c.incarnation < owner.incarnation
        ]
        for key in orphans:
            self.release(key, changed)
        return orphans

    def apply(self, outcomes: Outcomes, changed: dict[bytes, Charge]) -> None:
        for key in outcomes.settle:
            self.settle(key, changed)
        for key in outcomes.release:
            self.release(key, changed)

    def charges_of(self, pass_id: str) -> list[Charge]:
        """Every charge of one pass (released ones included), oldest first."""
        found = [self.charges[key] for key in self.by_pass.get(pass_id, ())]
        return sorted((c for c in found if c.shard_id >= 0), key=lambda c: c.at_ms)

    def _put(self, key: bytes, charge: Charge, changed: dict[bytes, Charge]) -> None:
        before = self.charges.get(key)
        pass_id = charge_pass_id(key)
        if before is None:
            self.by_pass.setdefault(pass_id, []).append(key)
        delta = (charge.amount_fen if charge.counts() else 0) - (
            before.amount_fen if before is not None and before.counts() else 0
        )
        if delta:
            self.owed[pass_id] = self.owed.get(pass_id, 0) + delta
        self.charges[key] = charge
        changed[key] = charge


def _with_state(charge: Charge, state: ChargeState) -> Charge:
    return msgspec.structs.replace(charge, state=state)
