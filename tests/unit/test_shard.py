"""VenueShard as a plain class over a real LMDB directory: batches, durability, idempotency, annul,
capacity, reservations and restart. No Ray."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from actors.catalog import CatalogWriter, catalog_path
from actors.codec import decode_decisions, encode_batch
from actors.errors import StorageError
from actors.shard import VenueShard
from core.models import (
    AntiPassback,
    CredentialKind,
    PassbackMode,
    Product,
    Province,
    Reason,
    Slot,
    Venue,
    VenueRule,
)
from core.records import Decision, PassRecord, Request

TZ = ZoneInfo("Asia/Shanghai")
# 2026-10-01 10:00 in Shanghai.
NOW_MS = int(datetime(2026, 10, 1, 2, 0, tzinfo=UTC).timestamp() * 1000)
DAY = date(2026, 10, 1).toordinal()
ALL_DAY = tuple(((0, 1440),) for _ in range(7))


def _venue(venue_id: str, instant: int = 100, daily: int = 1000, **kw: Any) -> Venue:
    return Venue(
        venue_id=venue_id,
        name=venue_id,
        city="Hangzhou",
        tz_name="Asia/Shanghai",
        tz=TZ,
        opening=ALL_DAY,
        instant_capacity=instant,
        daily_capacity=daily,
        anti_passback=kw.pop("anti_passback", AntiPassback()),
        gates=frozenset({f"{venue_id}-g1", f"{venue_id}-g2"}),
        **kw,
    )


def _province() -> Province:
    venues = {
        "lake": _venue("lake"),
        "small": _venue("small", instant=3, daily=10),
        "museum": _venue(
            "museum",
            reservation_required=True,
            slots=(Slot("am", 540, 660, 2), Slot("noon", 660, 780, 2)),
        ),
        "hard": _venue("hard", anti_passback=AntiPassback(PassbackMode.HARD, 30)),
    }
    product = Product("annual", "Annual", {vid: VenueRule() for vid in venues})
    return Province("Test", "Asia/Shanghai", venues, {"annual": product})


def _pass(i: int) -> PassRecord:
    return PassRecord(
        pass_id=f"P{i}",
        product_id="annual",
        credentials=((CredentialKind.CARD, f"C{i}"),),
        valid_from=date(2026, 1, 1).toordinal(),
        valid_until=date(2027, 12, 31).toordinal(),
    )


class Clock:
    def __init__(self) -> None:
        self.ms = NOW_MS

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert(_pass(i) for i in range(50))
    writer.close()
    return tmp_path


def _shard(data_dir: Path, clock: Clock | None = None) -> VenueShard:
    return VenueShard(0, 1, _province(), str(data_dir), clock or Clock())


def _req(
    rid: str, venue: str, card: str, exit_: bool = False, dry: bool = False, gate: str = "g1"
) -> Request:
    direction: Any = 2 if exit_ else 1
    return Request(rid, venue, f"{venue}-{gate}", CredentialKind.CARD, card, direction, 0, dry)


def _decide(shard: VenueShard, *reqs: Request) -> list[Decision]:
    """Through the bytes the Ray wrapper sees, as the ingress sends them."""
    return decode_decisions(shard.decide_batch(encode_batch(list(reqs))))


def _annul(shard: VenueShard, rid: str, venue: str, gate: str, card: str) -> tuple[bool, str]:
    return shard.annul(rid, venue, gate, int(CredentialKind.CARD), card)


def test_admit_is_stored_and_survives_restart(data_dir: Path) -> None:
    shard = _shard(data_dir)
    [d] = _decide(shard, _req("r1", "lake", "C1"))
    assert d.allowed is True and d.reason == Reason.OK and d.pass_id == "P1"
    shard.close()
    again = _shard(data_dir)
    assert again.stored_admits() == 1
    [(venue, usage)] = again.usage_of("P1")
    assert venue == "lake" and usage.entries == 1
    [retry] = _decide(again, _req("r1", "lake", "C1"))
    assert retry == d
    assert again.stored_admits() == 1


def test_duplicate_request_in_one_batch_counts_once(data_dir: Path) -> None:
    shard = _shard(data_dir)
    a, b = _decide(shard, _req("r1", "lake", "C1"), _req("r1", "lake", "C1"))
    assert a == b
    assert shard.stored_admits() == 1


def test_dry_run_changes_nothing(data_dir: Path) -> None:
    shard = _shard(data_dir)
    [d] = _decide(shard, _req("r1", "lake", "C1", dry=True))
    assert d.allowed is True
    assert shard.stored_admits() == 0
    assert shard.usage_of("P1") == []
    assert list(shard.store.iter_log()) == []
    [real] = _decide(shard, _req("r1", "lake", "C1"))
    assert real.allowed is True and shard.stored_admits() == 1


def test_denials_are_logged_too(data_dir: Path) -> None:
    shard = _shard(data_dir)
    [d] = _decide(shard, _req("r1", "lake", "NO-SUCH-CARD"))
    assert d.allowed is False and d.reason == Reason.UNKNOWN_CREDENTIAL
    [(_, rec)] = list(shard.store.iter_log())
    assert rec.request_id == "r1" and rec.reason == Reason.UNKNOWN_CREDENTIAL


def test_instant_capacity_is_exact_and_an_exit_frees_one_place(data_dir: Path) -> None:
    shard = _shard(data_dir)
    out = _decide(shard, *[_req(f"r{i}", "small", f"C{i}") for i in range(6)])
    assert [d.allowed for d in out] == [True, True, True, False, False, False]
    assert {d.reason for d in out[3:]} == {Reason.VENUE_FULL}
    _decide(shard, _req("x1", "small", "C0", exit_=True))
    out = _decide(shard, _req("r10", "small", "C10"), _req("r11", "small", "C11"))
    assert [d.allowed for d in out] == [True, False]
    assert int(shard.counters.occupancy[shard.book.index["small"]]) == 3


def test_annul_gives_the_place_back_once(data_dir: Path) -> None:
    shard = _shard(data_dir)
    _decide(shard, *[_req(f"r{i}", "small", f"C{i}") for i in range(3)])
    assert _annul(shard, "r0", "small", "small-g2", "C0")[0] is False  # another gate
    assert _annul(shard, "r0", "small", "small-g1", "C1")[0] is False  # another credential
    assert _annul(shard, "r0", "small", "small-g1", "C0")[0] is True
    assert _annul(shard, "r0", "small", "small-g1", "C0") == (True, "already annulled")
    assert shard.stored_admits() == 2
    assert shard.usage_of("P0")[0][1].entries == 0
    [d] = _decide(shard, _req("r9", "small", "C9"))
    assert d.allowed is True


def test_annul_too_late_is_refused(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    _decide(shard, _req("r1", "lake", "C1"))
    clock.ms += 16 * 60 * 1000
    ok, _ = _annul(shard, "r1", "lake", "lake-g1", "C1")
    assert ok is False
    assert shard.stored_admits() == 1


def test_failed_commit_leaves_no_trace(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shard = _shard(data_dir)

    def broken(_writes: object) -> int:
        raise StorageError("disk full")

    monkeypatch.setattr(shard.store, "commit", broken)
    with pytest.raises(StorageError):
        _decide(shard, _req("r1", "small", "C1"))
    monkeypatch.undo()
    assert shard.usage_of("P1") == []
    assert int(shard.counters.occupancy[shard.book.index["small"]]) == 0
    [d] = _decide(shard, _req("r1", "small", "C1"))
    assert d.allowed is True and shard.stored_admits() == 1


def test_hard_passback_then_counters_restored_after_restart(data_dir: Path) -> None:
    shard = _shard(data_dir)
    first, second = _decide(shard, _req("r1", "hard", "C1"), _req("r2", "hard", "C1"))
    assert first.allowed is True
    assert second.reason == Reason.ANTI_PASSBACK
    shard.close()
    again = _shard(data_dir)
    i = again.book.index["hard"]
    assert int(again.counters.occupancy[i]) == 1
    assert int(again.counters.entries_today[i]) == 1
    [d] = _decide(again, _req("r3", "hard", "C1"))
    assert d.reason == Reason.ANTI_PASSBACK


def test_reservation_required_then_reserved_entry_consumes_it(data_dir: Path) -> None:
    shard = _shard(data_dir)
    [denied] = _decide(shard, _req("r1", "museum", "C1"))
    assert denied.reason == Reason.RESERVATION_REQUIRED
    assert shard.reserve("P1", "museum", DAY, "am")[0] is True
    [ok] = _decide(shard, _req("r2", "museum", "C1"))
    assert ok.allowed is True
    _decide(shard, _req("x", "museum", "C1", exit_=True))
    [again] = _decide(shard, _req("r3", "museum", "C1"))
    assert again.reason == Reason.RESERVATION_REQUIRED


def test_slot_is_never_overbooked_and_survives_restart(data_dir: Path) -> None:
    shard = _shard(data_dir)
    answers = [shard.reserve(f"P{i}", "museum", DAY, "noon")[0] for i in range(5)]
    assert answers == [True, True, False, False, False]
    assert shard.cancel_reservation("P0", "museum", DAY, "noon")[0] is True
    assert shard.reserve("P3", "museum", DAY, "noon")[0] is True
    shard.close()
    again = _shard(data_dir)
    assert again.reserve("P4", "museum", DAY, "noon")[:2] == (False, "slot full")


def test_quota_and_pause_persist(data_dir: Path) -> None:
    shard = _shard(data_dir)
    problems, _ = shard.set_quota("lake", 500, 600, {}, None, False)
    assert problems and problems[0][0] == "instant_capacity"
    problems, status = shard.set_quota("lake", 500, 2, {}, (50, 60, 70), False)
    assert problems == [] and status is not None and status["instant_capacity"] == 2
    shard.set_paused("small", True)
    shard.close()
    again = _shard(data_dir)
    out = _decide(again, *[_req(f"r{i}", "lake", f"C{i}") for i in range(3)])
    assert [d.allowed for d in out] == [True, True, False]
    [paused] = _decide(again, _req("p", "small", "C40"))
    assert paused.reason == Reason.VENUE_PAUSED


def test_layout_mismatch_is_refused(data_dir: Path) -> None:
    _shard(data_dir).close()
    with pytest.raises(Exception, match="shards"):
        VenueShard(0, 2, _province(), str(data_dir), Clock())


def test_first_decision_after_start_does_not_compile(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import actors.shard
    from core.counters import kernel_signature_counts, warm

    calls: list[int] = []

    def spy() -> None:
        calls.append(1)
        warm()

    monkeypatch.setattr(actors.shard, "warm", spy)
    shard = _shard(data_dir)
    assert calls == [1], "the shard must warm the kernels while it starts"
    warmed = kernel_signature_counts()
    assert all(n >= 1 for n in warmed.values()), warmed
    _decide(shard, _req("r1", "lake", "C1"), _req("x1", "small", "C2", exit_=True))
    _annul(shard, "r1", "lake", "lake-g1", "C1")
    shard.reserve("P3", "museum", DAY, "am")
    shard.venue_status("lake")
    shard.all_status()
    assert kernel_signature_counts() == warmed


def test_start_up_refuses_a_data_dir_of_another_shard_count(data_dir: Path) -> None:
    from actors.cluster import check_layout

    check_layout(data_dir, 3)  # nothing recorded yet: any count is fine
    _shard(data_dir).close()  # shard 0 of 1 records the count
    check_layout(data_dir, 1)
    with pytest.raises(Exception, match="start with --shards 1"):
        check_layout(data_dir, 2)


def test_a_poisoned_item_fails_alone_and_its_neighbours_commit(data_dir: Path) -> None:
    """Even when the ingress check is bypassed, the shard checks each item before deciding it."""
    shard = _shard(data_dir)
    emoji = "\U0001f600" * 128  # 512 bytes: over LMDB's key limit
    out = _decide(
        shard,
        _req("r1", "lake", "C1"),
        _req(emoji, "lake", "C2"),
        _req("r3", "lake\x00evil", "C3"),
        _req("r4", "lake", "C4"),
    )
    assert [d.allowed for d in out] == [True, False, False, True]
    assert out[1].invalid and out[1].message.startswith("request_id:") and out[1].request_id == ""
    assert out[2].invalid and out[2].message == "venue_id: contains a control character"
    assert shard.stored_admits() == 2


def test_a_reused_request_id_is_refused_without_revealing_the_first(data_dir: Path) -> None:
    shard = _shard(data_dir)
    [first] = _decide(shard, _req("r1", "lake", "C1"))
    [retry, forged, exit_] = _decide(
        shard,
        _req("r1", "lake", "C1"),
        _req("r1", "lake", "NOPE"),
        _req("r1", "lake", "C1", exit_=True),
    )
    assert retry == first
    assert forged.invalid and exit_.invalid and forged.pass_id == ""
    [elsewhere] = _decide(shard, _req("r1", "lake", "C2", gate="g2"))
    assert elsewhere.allowed and elsewhere.pass_id == "P2"  # another gate's scope
    assert shard.stored_admits() == 2


def test_unmatched_exits_are_counted_apart_and_survive_restart(data_dir: Path) -> None:
    shard = _shard(data_dir)
    _decide(shard, *[_req(f"r{i}", "small", f"C{i}") for i in range(3)])
    out = _decide(
        shard, _req("x1", "small", "NOPE", exit_=True), _req("x2", "small", "C9", exit_=True)
    )
    assert all(d.allowed for d in out)
    status = shard.venue_status("small")
    assert status is not None
    assert (status["occupancy"], status["exits_today"], status["unmatched_exits_today"]) == (
        3,
        0,
        2,
    )
    shard.close()
    again = _shard(data_dir)
    status = again.venue_status("small")
    assert status is not None
    assert (status["occupancy"], status["unmatched_exits_today"]) == (3, 2)
    [full] = _decide(again, _req("r9", "small", "C9"))
    assert full.reason == Reason.VENUE_FULL


def test_stored_records_carry_their_version(data_dir: Path) -> None:
    """A record of an unknown layout fails loudly instead of being misread."""
    import msgspec

    from core.records import LogRecord, decoder, encode

    shard = _shard(data_dir)
    _decide(shard, _req("r1", "lake", "C1"))
    [(_, rec)] = list(shard.store.iter_log())
    raw = msgspec.msgpack.decode(encode(rec))
    assert raw[0] == "log/1"
    with pytest.raises(msgspec.ValidationError):
        decoder(LogRecord).decode(msgspec.msgpack.encode(["log/2", *raw[1:]]))
