"""The credit ledger over LMDB (actors.ledger) and the shard's side of it (actors.shard.credit):
holds across venues, annul, failed commits, restarts of either side. No Ray: the shard reaches
the ledger through the in-process client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from actors.catalog import CatalogWriter, catalog_path
from actors.errors import BadRequest, DataDirMismatch, ShardUnavailable, StorageFull
from actors.ledger.client import LocalLedgerClient
from actors.ledger.ledger import Ledger, LedgerService, check_ledger_count
from actors.ledger.store import LedgerStore, ledger_dir
from actors.shard.pipeline import CommitPipeline
from actors.shard.store import BatchWrites
from actors.shard.venue_shard import VenueShard
from core.credit import (
    Charge,
    ChargesCall,
    ChargeState,
    HoldAnswer,
    HoldAsk,
    HoldCall,
    Outcomes,
    Owner,
    decode_charges,
)
from core.keys import charge_key, request_key
from core.models import (
    AntiPassback,
    CredentialKind,
    CreditPolicy,
    CreditTier,
    Product,
    Province,
    Reason,
    Venue,
    VenueRule,
)
from core.records import Decision, PassRecord, Request, encode

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
NOW_MS = int(datetime(2026, 10, 1, 2, 0, tzinfo=UTC).timestamp() * 1000)
ALL_DAY = tuple(((0, 1440),) for _ in range(7))
PRICES = {"lake": 90_00, "hill": 300_00, "zoo": 230_00, "tiny": 10_00}


def _venue(venue_id: str) -> Venue:
    return Venue(
        venue_id=venue_id,
        name=venue_id,
        city="Hangzhou",
        tz_name="Asia/Shanghai",
        tz=TZ,
        opening=ALL_DAY,
        instant_capacity=1 if venue_id == "tiny" else 1000,
        daily_capacity=10000,
        anti_passback=AntiPassback(),
        gates=frozenset({f"{venue_id}-g1"}),
    )


def _province() -> Province:
    venues = {vid: _venue(vid) for vid in PRICES}
    rules = {vid: VenueRule(pay_later_price_fen=price) for vid, price in PRICES.items()}
    product = Product("credit", "Credit", rules, credit=CreditPolicy(debt_limit_fen=500_00))
    return Province("Test", "Asia/Shanghai", venues, {"credit": product})


def _pass(pass_id: str, debt: int = 0) -> PassRecord:
    return PassRecord(
        pass_id=pass_id,
        product_id="credit",
        credentials=((CredentialKind.CARD, f"C-{pass_id}"),),
        valid_from=date(2026, 1, 1).toordinal(),
        valid_until=date(2027, 12, 31).toordinal(),
        credit_tier=CreditTier.GOOD,
        outstanding_debt_fen=debt,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert([_pass("G1"), _pass("G2"), _pass("DEBTOR", 480_00)])
    writer.close()
    return tmp_path


@pytest.fixture
def ledger(data_dir: Path) -> Any:
    led = Ledger(LedgerStore(ledger_dir(data_dir, 0)))
    yield led
    led.close()


def _shard(data_dir: Path, client: Any) -> VenueShard:
    return VenueShard(0, 1, _province(), str(data_dir), lambda: NOW_MS, None, client)


def _req(
    rid: str, venue: str, pass_id: str = "G1", dry: bool = False, exit_: bool = False
) -> Request:
    card, direction = f"C-{pass_id}", 2 if exit_ else 1
    return Request(rid, venue, f"{venue}-g1", CredentialKind.CARD, card, direction, 0, dry)  # type: ignore[arg-type]


def _owed(ledger: Ledger, pass_id: str = "G1") -> int:
    return sum(c.amount_fen for c in ledger.charges_of(pass_id) if c.counts())


def _states(ledger: Ledger, pass_id: str = "G1") -> list[tuple[str, ChargeState]]:
    return [(c.request_id, ChargeState(c.state)) for c in ledger.charges_of(pass_id)]


# -- the ledger over LMDB -------------------------------------------------------------------------


def _ask(rid: str, amount: int, attempt: int = 1) -> HoldAsk:
    rkey = request_key("lake", "lake-g1", rid)
    key = charge_key("G1", rkey, attempt.to_bytes(12, "big"))
    return HoldAsk(key, "G1", "lake", rid, amount, 0, 500_00, NOW_MS)


def test_one_call_holds_in_order_and_survives_a_restart(data_dir: Path) -> None:
    led = Ledger(LedgerStore(ledger_dir(data_dir, 0)))
    asks = [_ask("r1", 300_00), _ask("r2", 300_00), _ask("r3", 200_00)]
    answers = led.hold(HoldCall(Owner(0, 1), asks))
    assert [a.granted for a in answers] == [True, False, True]
    led.close()
    again = Ledger(LedgerStore(ledger_dir(data_dir, 0)))
    assert _owed(again) == 500_00
    # A call retried on the restarted ledger gets the same answers and holds nothing twice.
    assert again.hold(HoldCall(Owner(0, 1), asks[:1])) == answers[:1]
    assert _owed(again) == 500_00
    again.close()


def test_a_failed_write_leaves_memory_as_stored(data_dir: Path, monkeypatch: Any) -> None:
    led = Ledger(LedgerStore(ledger_dir(data_dir, 0)))
    assert led.store is not None

    def broken(_charges: object, _fences: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(led.store, "commit", broken)
    with pytest.raises(OSError):
        led.hold(HoldCall(Owner(0, 1), [_ask("r1", 300_00)]))
    assert _owed(led) == 0
    led.close()


def test_another_ledger_count_is_refused(data_dir: Path) -> None:
    check_ledger_count(data_dir, 2)  # nothing recorded yet
    LedgerService(0, 1, str(data_dir)).ledger.close()
    assert (ledger_dir(data_dir, 0) / "pid").exists()
    with pytest.raises(DataDirMismatch, match="start with --ledgers 1"):
        check_ledger_count(data_dir, 2)
    with pytest.raises(DataDirMismatch, match="ledger shards"):
        LedgerService(0, 2, str(data_dir))


# -- the shard's side -----------------------------------------------------------------------------


def _decide(shard: VenueShard, *reqs: Request) -> list[Decision]:
    return shard.decide_requests(list(reqs))


def test_three_venues_stop_at_the_holder_wide_limit(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    lake, hill, zoo = (_decide(shard, _req(f"r-{v}", v))[0] for v in ("lake", "hill", "zoo"))
    assert lake.allowed and lake.pay_later and hill.allowed and hill.pay_later
    assert (zoo.allowed, zoo.reason) == (False, Reason.CREDIT_DENIED)
    assert zoo.message == "debt over limit: owe 390.00 of 500.00 yuan"
    assert _owed(ledger) == 390_00
    assert _states(ledger) == [("r-lake", ChargeState.SETTLED), ("r-hill", ChargeState.SETTLED)]
    assert shard.stats()["credit_outbox"] == 0
    shard.close()


def test_one_batch_asks_once_and_holds_in_order(data_dir: Path, ledger: Ledger) -> None:
    calls: list[int] = []

    class Counting(LocalLedgerClient):
        def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
            calls.append(len(asks))
            return super().hold(owner, asks)

    shard = _shard(data_dir, Counting([ledger]))
    out = _decide(shard, *(_req(f"r-{v}", v) for v in ("lake", "hill", "zoo")))
    assert [d.allowed for d in out] == [True, True, False]
    assert calls == [3]
    _decide(shard, _req("nobody", "lake", "NO-SUCH"))  # no candidate: no call
    assert calls == [3]
    shard.close()


def test_a_hopeless_debtor_is_refused_without_asking(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    [d] = _decide(shard, _req("r1", "lake", "DEBTOR"))
    assert d.reason == Reason.CREDIT_DENIED and "owe 480.00 of 500.00" in d.message
    assert shard.credit.asked == 0
    shard.close()


def test_annul_releases_the_charge(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    _decide(shard, _req("r1", "hill"))
    assert shard.annul("r1", "hill", "hill-g1", int(CredentialKind.CARD), "C-G1")[0]
    assert _owed(ledger) == 0 and _states(ledger) == [("r1", ChargeState.RELEASED)]
    # Freed: 300 + 230 no longer fits, 230 alone does.
    hill, zoo = _decide(shard, _req("r2", "zoo"), _req("r3", "hill"))
    assert hill.allowed and not zoo.allowed and _owed(ledger) == 230_00
    shard.close()


def test_a_dry_run_holds_nothing(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    [d] = _decide(shard, _req("r1", "hill", dry=True))
    assert d.allowed and d.pay_later and ledger.charges_of("G1") == []
    shard.close()


def test_a_retry_is_answered_from_its_record(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    [first] = _decide(shard, _req("r1", "hill"))
    [retry] = _decide(shard, _req("r1", "hill"))
    assert retry == first and _owed(ledger) == 300_00 and shard.credit.asked == 1
    shard.close()


class Unreachable(LocalLedgerClient):
    """A ledger that does not answer holds in time (its grants may still land late)."""

    def __init__(self, ledgers: list[Ledger]) -> None:
        super().__init__(ledgers)
        self.down = True

    def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        answers = super().hold(owner, asks)
        return None if self.down else answers


def test_an_unreachable_ledger_refuses_for_a_retry_and_releases(
    data_dir: Path, ledger: Ledger
) -> None:
    client = Unreachable([ledger])
    shard = _shard(data_dir, client)
    shard.credit.backoff_s = 0.0  # ask again at once
    [d] = _decide(shard, _req("r1", "hill"))
    assert (d.allowed, d.reason, d.message) == (
        False,
        Reason.CREDIT_DENIED,
        "credit check unavailable: please retry",
    )
    assert _owed(ledger) == 0  # the late grant was released
    assert list(shard.store.iter_log()) == []  # not recorded: the retry is decided afresh
    client.down = False
    [retry] = _decide(shard, _req("r1", "hill"))
    assert retry.allowed and retry.pay_later and _owed(ledger) == 300_00
    shard.close()


def test_a_failed_commit_releases_its_holds(
    data_dir: Path, ledger: Ledger, monkeypatch: Any
) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    real = shard.store.commit

    def broken(_writes: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(shard.store, "commit", broken)
    with pytest.raises(OSError):
        _decide(shard, _req("r1", "hill"))
    assert _owed(ledger) == 0  # released at once
    monkeypatch.setattr(shard.store, "commit", real)
    [d] = _decide(shard, _req("r1", "hill"))
    assert d.allowed and _owed(ledger) == 300_00
    assert sorted(s for _, s in _states(ledger)) == [ChargeState.SETTLED, ChargeState.RELEASED]
    shard.close()


def test_a_shard_that_dies_between_hold_and_commit_releases_on_restart(
    data_dir: Path, ledger: Ledger, monkeypatch: Any
) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))

    def killed(_writes: object) -> int:
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(shard.store, "commit", killed)
    with pytest.raises(SystemExit):
        _decide(shard, _req("r1", "hill"))
    monkeypatch.undo()
    shard.close()  # the process is gone; only what LMDB holds remains
    assert _owed(ledger) == 300_00
    restarted = _shard(data_dir, LocalLedgerClient([ledger]))
    assert restarted.credit.orphans_released == 1 and _owed(ledger) == 0
    [d] = _decide(restarted, _req("r1", "hill"))
    assert d.allowed and _owed(ledger) == 300_00
    restarted.close()


class Mute(LocalLedgerClient):
    """Takes holds, but settles and releases never arrive (the ledger died after the hold)."""

    def send(self, outcomes: dict[bytes, int]) -> None:
        pass

    def delivered(self) -> tuple[dict[bytes, int], list[bytes]]:
        return {}, []


def test_the_outbox_is_replayed_after_a_restart(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, Mute([ledger]))
    _decide(shard, _req("r1", "hill"), _req("r1", "hill"))
    _decide(shard, _req("r2", "zoo"))  # 530 > 500: refused by the ledger, nothing to tell
    assert _states(ledger) == [("r1", ChargeState.HELD)]
    assert shard.stats()["credit_outbox"] == 1
    [(replayed, _)] = list(shard.store.iter_outbox())
    shard.close()
    restarted = _shard(data_dir, LocalLedgerClient([ledger]))
    assert _states(ledger) == [("r1", ChargeState.SETTLED)] and _owed(ledger) == 300_00
    assert restarted.credit.orphans_released == 0
    _decide(restarted, _req("r3", "lake"))  # its commit deletes the replayed record
    _decide(restarted, _req("r4", "lake", "NO-SUCH"))  # and the next one the record of r3
    assert list(restarted.store.iter_outbox()) == [] != [replayed]
    assert _states(ledger) == [("r1", ChargeState.SETTLED), ("r3", ChargeState.SETTLED)]
    restarted.close()


def test_charges_of_one_pass_only(data_dir: Path, ledger: Ledger) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    _decide(shard, _req("a", "hill", "G1"), _req("b", "zoo", "G2"))
    assert [c.request_id for c in ledger.charges_of("G2")] == ["b"]
    assert all(isinstance(c, Charge) for c in ledger.charges_of("G1"))
    shard.close()


def test_an_entry_the_dry_pass_did_not_foresee_is_refused_for_a_retry(
    data_dir: Path, ledger: Ledger
) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    [first] = _decide(shard, _req("in", "tiny", "G2"))
    assert first.allowed  # "tiny" is now full
    # The exit first makes room, but the dry pass saw the venue full and asked nothing for G1.
    out, entry = _decide(shard, _req("out", "tiny", "G2", exit_=True), _req("r1", "tiny"))
    assert out.allowed and not entry.allowed
    assert entry.message == "credit check unavailable: please retry"
    assert _owed(ledger, "G2") == 10_00 and _owed(ledger, "G1") == 0
    [retry] = _decide(shard, _req("r1", "tiny"))
    assert retry.allowed and retry.pay_later and _owed(ledger, "G1") == 10_00
    shard.close()


def test_the_fence_survives_a_ledger_restart(data_dir: Path) -> None:
    led = Ledger(LedgerStore(ledger_dir(data_dir, 0)))
    assert led.hold(HoldCall(Owner(0, 1), [_ask("r1", 100_00)]))[0].granted
    assert led.recover(Owner(0, 2), Outcomes()) == 1  # r1 was never committed
    led.close()
    again = Ledger(LedgerStore(ledger_dir(data_dir, 0)))
    late = again.hold(HoldCall(Owner(0, 1), [_ask("r2", 100_00)]))
    fresh = again.hold(HoldCall(Owner(0, 2), [_ask("r3", 100_00)]))
    assert (late[0].granted, fresh[0].granted) == (False, True)
    assert _states(again) == [("r1", ChargeState.RELEASED), ("r3", ChargeState.HELD)]
    again.close()


def test_after_an_unanswered_hold_the_shard_does_not_wait_again_at_once(
    data_dir: Path, ledger: Ledger
) -> None:
    client = Unreachable([ledger])
    shard = _shard(data_dir, client)
    _decide(shard, _req("r1", "hill"))
    client.down = False  # back, but the shard does not know yet
    [d] = _decide(shard, _req("r2", "zoo"))
    assert d.message == "credit check unavailable: please retry"
    assert shard.credit.asked == 1 and shard.credit.unavailable == 2
    shard.credit._down_until = 0.0  # the back-off is over
    [ok] = _decide(shard, _req("r2", "zoo"))
    assert ok.allowed and shard.credit.asked == 2
    shard.close()


def test_pipelined_the_ledger_hears_only_of_durable_entries(data_dir: Path, ledger: Ledger) -> None:
    """Through the commit pipeline: a charge is settled only once its entry's commit returned,
    and a commit that fails releases the holds of its batch and of the batch staged behind it;
    the gates' retries are then charged once."""
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    fail_next = threading.Event()
    fail_next.set()
    release = threading.Event()

    def commit(group: list[BatchWrites], written: Callable[[], None]) -> None:
        assert release.wait(10)
        if fail_next.is_set():
            fail_next.clear()
            raise StorageFull("shard commit failed: storage full")
        shard.commit_writes(group, written)

    pipe = CommitPipeline(shard, commit=commit)

    async def body() -> None:
        first = asyncio.create_task(pipe.run(lambda: shard.decide_requests([_req("p1", "lake")])))
        second = asyncio.create_task(pipe.run(lambda: shard.decide_requests([_req("p2", "hill")])))
        for _ in range(50):
            await asyncio.sleep(0)
        # Both decided and held, neither durable: the ledger holds them, settles neither.
        assert sorted(s for _, s in _states(ledger)) == [ChargeState.HELD, ChargeState.HELD]
        release.set()
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[0], StorageFull) and isinstance(results[1], ShardUnavailable)
        assert _owed(ledger) == 0, "holds of batches that never reached the disk must go"
        [a] = await pipe.run(lambda: shard.decide_requests([_req("p1", "lake")]))
        [b] = await pipe.run(lambda: shard.decide_requests([_req("p2", "hill")]))
        assert a.allowed and a.pay_later and b.allowed and b.pay_later
        assert _owed(ledger) == a.charge_fen + b.charge_fen
        assert [s for _, s in _states(ledger)].count(ChargeState.SETTLED) == 2

    try:
        asyncio.run(asyncio.wait_for(body(), 30))
    finally:
        release.set()
        pipe.close()
        shard.close()


def _counting_lookups(shard: VenueShard, monkeypatch: Any) -> list[str]:
    looked: list[str] = []
    lookup = shard.catalog.lookup

    def counted(txn: Any, kind: int, value: str) -> PassRecord | None:
        looked.append(value)
        return lookup(txn, kind, value)

    monkeypatch.setattr(shard.catalog, "lookup", counted)
    return looked


def test_the_plan_looks_a_credential_up_once_for_the_batch(
    data_dir: Path, ledger: Ledger, monkeypatch: Any
) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    looked = _counting_lookups(shard, monkeypatch)
    out = _decide(shard, _req("r1", "lake"), _req("r2", "hill", "G2"))
    assert [d.allowed for d in out] == [True, True]
    assert looked == ["C-G1", "C-G2"]  # the credit dry pass's lookups serve the decision too
    shard.close()


def _revoke_elsewhere(data_dir: Path, pass_id: str) -> None:
    """Revokes a pass from another process, as the catalog actor does (LMDB will not open one
    environment twice in a process)."""
    script = textwrap.dedent(
        f"""
        import msgspec
        from pathlib import Path
        from actors.catalog import CatalogWriter, catalog_path
        from core.models import PassStatus
        from tests.unit.test_ledger import _pass
        writer = CatalogWriter(catalog_path(Path({str(data_dir)!r})))
        writer.upsert([msgspec.structs.replace(_pass({pass_id!r}), status=PassStatus.REVOKED)])
        writer.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-500:]


def test_a_revocation_between_plan_and_decision_is_seen(
    data_dir: Path, ledger: Ledger, monkeypatch: Any
) -> None:
    shard = _shard(data_dir, LocalLedgerClient([ledger]))
    looked = _counting_lookups(shard, monkeypatch)
    plan = shard.plan_batch([_req("r1", "lake"), _req("r2", "hill", "G2")])
    shard.credit.hold_now(plan.credit)
    _revoke_elsewhere(data_dir, "G2")
    first, second = shard.decide_planned(plan)
    assert first.allowed
    assert (second.allowed, second.reason) == (False, Reason.REVOKED)
    assert looked == ["C-G1", "C-G2", "C-G1", "C-G2"]  # the catalog moved on: looked up afresh
    shard.close()


def test_an_ingress_reads_a_pass_charges_as_a_call_frame(data_dir: Path) -> None:
    """GetPass's charges: a `ChargesCall` frame on the ledger's channel, not a Ray call."""
    svc = LedgerService(0, 1, str(data_dir))
    try:
        svc.ledger.hold(HoldCall(Owner(0, 1), [_ask("r1", 120_00)]))

        async def read(payload: bytes) -> list[Charge]:
            return decode_charges(await svc.serve_read(payload))

        held = asyncio.run(read(encode(ChargesCall("G1"))))
        assert [(c.request_id, c.amount_fen, ChargeState(c.state)) for c in held] == [
            ("r1", 120_00, ChargeState.HELD)
        ]
        assert asyncio.run(read(encode(ChargesCall("NOBODY")))) == []
        with pytest.raises(BadRequest) as err:
            asyncio.run(svc.serve_read(b"\x01"))
        assert err.value.field == "ledger read"
    finally:
        svc.ledger.close()
