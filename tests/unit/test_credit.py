"""core.credit: the holder-wide ledger's arithmetic, without LMDB or Ray."""

from __future__ import annotations

import random

import pytest

from core.credit import (
    PROBE,
    UNCHECKED,
    Charge,
    ChargeState,
    CreditBook,
    HoldAnswer,
    HoldAsk,
    Outcomes,
    Owner,
    fits,
    refusal_message,
)
from core.keys import charge_key, charge_pass_id, request_key
from core.models import CreditTier, Decision, Reason, Usage, VenueRule
from core.rules import decide
from proto.passgate.v1 import passes_pb2
from tests.unit import test_rules as tr

LIMIT = 500_00
SHARD_0 = Owner(0, 1)
SHARD_1 = Owner(1, 1)


def _ask(pass_id: str, rid: str, amount: int, attempt: int = 1, **kw: object) -> HoldAsk:
    venue = str(kw.pop("venue", "lake"))
    key = charge_key(pass_id, request_key(venue, f"{venue}-g1", rid), attempt.to_bytes(12, "big"))
    fields: dict[str, object] = {"baseline_fen": 0, "limit_fen": LIMIT, "at_ms": 1, **kw}
    return HoldAsk(key, pass_id, venue, rid, amount, **fields)  # type: ignore[arg-type]


def _hold(book: CreditBook, owner: Owner, ask: HoldAsk) -> HoldAnswer:
    return book.hold(owner, ask, {})


def test_fits_is_inclusive() -> None:
    assert fits(400_00, 100_00, LIMIT)
    assert not fits(400_01, 100_00, LIMIT)


def test_three_venues_on_two_shards_stop_at_the_limit() -> None:
    book = CreditBook()
    a = _hold(book, SHARD_0, _ask("P", "r1", 90_00, venue="lake"))
    b = _hold(book, SHARD_1, _ask("P", "r2", 300_00, venue="hill"))
    c = _hold(book, SHARD_0, _ask("P", "r3", 230_00, venue="zoo"))
    assert (a.granted, b.granted, c.granted) == (True, True, False)
    assert (c.owed_fen, c.limit_fen) == (390_00, LIMIT)
    assert refusal_message(c) == "debt over limit: owe 390.00 of 500.00 yuan"
    assert book.counted("P") == 390_00


def test_the_imported_debt_counts() -> None:
    book = CreditBook()
    answer = _hold(book, SHARD_0, _ask("P", "r1", 30_00, baseline_fen=480_00))
    assert not answer.granted and answer.owed_fen == 480_00


@pytest.mark.parametrize("seed", range(5))
def test_interleaved_holds_never_exceed_the_limit(seed: int) -> None:
    rnd = random.Random(seed)
    book = CreditBook()
    owners = [Owner(s, 1) for s in range(3)]
    held: list[tuple[bytes, int]] = []
    for n in range(300):
        step = rnd.random()
        if step < 0.6 or not held:
            ask = _ask("P", f"r{n}", rnd.choice((30_00, 90_00, 230_00)), attempt=n)
            if _hold(book, rnd.choice(owners), ask).granted:
                held.append((ask.key, ask.amount_fen))
        else:
            key, _ = held.pop(rnd.randrange(len(held)))
            if step < 0.8:
                book.settle(key, {})
                held.append((key, 0))  # settled: stays counted, never released here
            else:
                book.release(key, {})
        counted = sum(c.amount_fen for c in book.charges.values() if c.counts())
        assert counted == book.counted("P") <= LIMIT


def test_the_same_key_gets_the_same_answer_and_is_held_once() -> None:
    book = CreditBook()
    ask = _ask("P", "r1", 300_00)
    first = _hold(book, SHARD_0, ask)
    again = _hold(book, SHARD_0, ask)
    assert first == again and first.granted
    assert book.counted("P") == 300_00 and book.granted == 1


def test_release_frees_and_is_final() -> None:
    book = CreditBook()
    ask = _ask("P", "r1", 300_00)
    _hold(book, SHARD_0, ask)
    book.release(ask.key, {})
    book.settle(ask.key, {})  # a late settle does not bring a released charge back
    assert book.counted("P") == 0
    assert not _hold(book, SHARD_0, ask).granted  # nor does a late hold
    assert _hold(book, SHARD_0, _ask("P", "r2", 500_00)).granted


def test_a_release_before_its_hold_leaves_a_tombstone() -> None:
    book = CreditBook()
    ask = _ask("P", "r1", 300_00)
    book.release(ask.key, {})
    assert not _hold(book, SHARD_0, ask).granted
    assert book.counted("P") == 0
    assert book.charges_of("P") == []  # tombstones are not charges


def test_settled_charges_stay_counted() -> None:
    book = CreditBook()
    ask = _ask("P", "r1", 300_00)
    _hold(book, SHARD_0, ask)
    changed: dict[bytes, Charge] = {}
    book.settle(ask.key, changed)
    assert changed[ask.key].state == ChargeState.SETTLED
    assert book.counted("P") == 300_00
    assert not _hold(book, SHARD_1, _ask("P", "r2", 300_00)).granted


def test_a_peek_holds_nothing() -> None:
    book = CreditBook()
    answer = _hold(book, SHARD_0, _ask("P", "r1", 300_00, peek=True))
    assert answer.granted and book.counted("P") == 0 and not book.charges


def test_recovery_replays_the_outbox_then_releases_orphans_and_fences() -> None:
    book = CreditBook()
    committed = _ask("P", "r1", 100_00)
    orphan = _ask("P", "r2", 200_00)
    other_shard = _ask("P", "r3", 50_00)
    for ask, owner in ((committed, SHARD_0), (orphan, SHARD_0), (other_shard, SHARD_1)):
        _hold(book, owner, ask)
    restarted = Owner(0, 2)
    released = book.recover(restarted, Outcomes(settle=[committed.key]), {})
    assert released == [orphan.key]
    states = {c.request_id: ChargeState(c.state) for c in book.charges_of("P")}
    assert states == {
        "r1": ChargeState.SETTLED,
        "r2": ChargeState.RELEASED,
        "r3": ChargeState.HELD,
    }
    assert book.counted("P") == 150_00
    # A hold the dead incarnation sent before it died, arriving late, is refused.
    late = _hold(book, SHARD_0, _ask("P", "r4", 10_00))
    assert not late.granted and book.counted("P") == 150_00
    assert _hold(book, restarted, _ask("P", "r5", 10_00)).granted


def test_passes_are_apart() -> None:
    book = CreditBook()
    assert _hold(book, SHARD_0, _ask("P1", "r1", 500_00)).granted
    assert _hold(book, SHARD_0, _ask("P12", "r1", 500_00)).granted
    assert charge_pass_id(_ask("P12", "r1", 1).key) == "P12"


def test_probe_and_unchecked_verdicts() -> None:
    assert PROBE.granted and not UNCHECKED.granted
    assert refusal_message(UNCHECKED) == "credit check unavailable: please retry"


def test_charge_states_mirror_the_proto() -> None:
    names = {s.name: s.value for s in ChargeState}
    proto = {
        name.removeprefix("CHARGE_STATE_"): value for name, value in passes_pb2.ChargeState.items()
    }
    assert names == proto


# -- decide() with the ledger's verdict ------------------------------------------------------------


def _decide_with(verdict: HoldAnswer | None, usage: Usage | None = None) -> Decision:
    venue = tr._venue()
    province = tr._province(venue, VenueRule(pay_later_price_fen=5_000), tr.CREDIT)
    good = tr._pass(credit_tier=CreditTier.GOOD)
    outcome = decide(good, usage or Usage(), venue, tr._request(), tr.NOW, province, ledger=verdict)
    return outcome.decision


@pytest.mark.parametrize(
    ("verdict", "allowed", "message"),
    [
        (HoldAnswer(True, 4_000, 10_000), True, "welcome: pay later 50.00 yuan"),
        (HoldAnswer(False, 6_000, 10_000), False, "debt over limit: owe 60.00 of 100.00 yuan"),
        (UNCHECKED, False, "credit check unavailable: please retry"),
        (PROBE, True, "welcome: pay later 50.00 yuan"),
    ],
    ids=["granted", "refused", "unchecked", "probe"],
)
def test_decide_follows_the_ledger(verdict: HoldAnswer, allowed: bool, message: str) -> None:
    d = _decide_with(verdict)
    assert (d.allowed, d.pay_later, d.message) == (allowed, allowed, message)
    assert d.reason == (Reason.OK if allowed else Reason.CREDIT_DENIED)


def test_the_venues_own_charges_do_not_overrule_the_ledger() -> None:
    # This venue alone has seen 90 yuan of the 100-yuan limit; the ledger knows the holder owes
    # nothing elsewhere either, and says yes: the ledger decides.
    assert _decide_with(HoldAnswer(True, 0, 10_000), Usage(charges_fen=9_000)).allowed
    # Without a ledger only this venue's view counts (callers that have none).
    assert not _decide_with(None, Usage(charges_fen=9_000)).allowed
