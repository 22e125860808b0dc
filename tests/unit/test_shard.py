"""VenueShard as a plain class over a real LMDB directory: batches, durability, idempotency, annul,
capacity, reservations and restart. No Ray."""

from __future__ import annotations

import base64
import dataclasses
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.catalog import CatalogWriter, catalog_path
from actors.codec import decode_decisions, encode_batch
from actors.errors import StorageError
from actors.routing import shard_of
from actors.shard.service import decide_encoded
from actors.shard.venue_shard import VenueShard
from core import qr
from core.models import (
    AntiPassback,
    CredentialKind,
    PassbackMode,
    Product,
    Province,
    QrPolicy,
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
    return decode_decisions(decide_encoded(shard, encode_batch(list(reqs))))


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
    clock = Clock()
    shard = _shard(data_dir, clock)
    [denied] = _decide(shard, _req("r1", "museum", "C1"))
    assert denied.reason == Reason.RESERVATION_REQUIRED
    assert shard.reserve("P1", "museum", DAY, "am")[0] is True
    [ok] = _decide(shard, _req("r2", "museum", "C1"))
    assert ok.allowed is True
    _decide(shard, _req("x", "museum", "C1", exit_=True))
    # The used reservation lets its holder back in within the slot's window (core.reservations)...
    [again] = _decide(shard, _req("r3", "museum", "C1"))
    assert again.allowed is True
    # ...and no longer once the window (09:00-11:00, 30 minutes' tolerance after) has closed.
    clock.ms = NOW_MS + 90 * 60_000
    [later] = _decide(shard, _req("r4", "museum", "C1"))
    assert later.reason == Reason.RESERVATION_REQUIRED


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
    import actors.shard.venue_shard
    from core.counters import kernel_signature_counts, warm

    calls: list[int] = []

    def spy() -> None:
        calls.append(1)
        warm()

    monkeypatch.setattr(actors.shard.venue_shard, "warm", spy)
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


# -- signed QR codes ----------------------------------------------------------------------------

QR_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
QR = QrPolicy(step_seconds=30, skew_steps=1, static=True)


def _qr_province() -> Province:
    base = _province()
    covered = dict(base.products["annual"].venues)
    dynamic = Product("dynamic", "Dynamic", covered, qr=QrPolicy(30, 1, static=False))
    return dataclasses.replace(base, products={**base.products, "dynamic": dynamic})


def _write_issuer(creds: Path, key_id: str, key: Ed25519PrivateKey) -> None:
    qr_dir = creds / "qr"
    qr_dir.mkdir(parents=True, exist_ok=True)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (qr_dir / f"{key_id}.pub").write_bytes(pem)


@pytest.fixture
def qr_data(data_dir: Path) -> Path:
    """The shard fixture's catalog plus signed-code passes, and the issuer key `dev1`."""
    writer = CatalogWriter(catalog_path(data_dir))
    valid = (date(2026, 1, 1).toordinal(), date(2027, 12, 31).toordinal())
    writer.upsert(
        [PassRecord(f"D{i}", "dynamic", ((CredentialKind.QR, f"DQ{i}"),), *valid) for i in range(5)]
        + [PassRecord("S0", "annual", ((CredentialKind.QR, "SQ0"),), *valid)]
    )
    writer.close()
    _write_issuer(data_dir / "credentials", "dev1", QR_KEY)
    return data_dir


def _qr_shard(data: Path, shard_id: int = 0, n_shards: int = 1) -> VenueShard:
    creds = str(data / "credentials")
    return VenueShard(shard_id, n_shards, _qr_province(), str(data), Clock(), creds)


def _code(pass_id: str, at_ms: int = NOW_MS, key: Any = QR_KEY, key_id: str = "dev1") -> str:
    return qr.encode(key, key_id, pass_id, qr.step_at(at_ms, QR))


def _scan(rid: str, venue: str, value: str, gate: str = "g1", **kw: Any) -> Request:
    direction: Any = 2 if kw.get("exit_") else 1
    kind = kw.get("kind", CredentialKind.QR)
    return Request(rid, venue, f"{venue}-{gate}", kind, value, direction, 0, kw.get("dry", False))


def test_a_signed_code_admits_once_and_again_at_another_gate_is_a_replay(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    code = _code("D0")
    [ok] = _decide(shard, _scan("r1", "lake", code))
    assert ok.allowed and ok.reason == Reason.OK and ok.pass_id == "D0"
    [again] = _decide(shard, _scan("r2", "lake", code, gate="g2"))
    assert not again.allowed and again.reason == Reason.REPLAYED_CODE
    assert again.pass_id == "D0" and "refresh" in again.message
    # The gate's retry of its own request is answered from its record, not as a replay.
    [retry] = _decide(shard, _scan("r1", "lake", code))
    assert retry == ok
    assert shard.stored_admits() == 1


def test_one_code_twice_in_one_batch_admits_once(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    code = _code("D1")
    first, second = _decide(shard, _scan("r1", "lake", code), _scan("r1", "hard", code, gate="g2"))
    assert first.allowed and second.reason == Reason.REPLAYED_CODE
    assert shard.stored_admits() == 1


def test_a_code_used_on_one_shard_is_a_replay_on_another(tmp_path: Path) -> None:
    writer = CatalogWriter(catalog_path(tmp_path))
    valid = (date(2026, 1, 1).toordinal(), date(2027, 12, 31).toordinal())
    writer.upsert([PassRecord("D0", "dynamic", ((CredentialKind.CARD, "DC0"),), *valid)])
    writer.close()
    _write_issuer(tmp_path / "credentials", "dev1", QR_KEY)
    owners = {v: shard_of(v, 2) for v in _province().venues}
    venue_0 = next(v for v, s in owners.items() if s == 0)
    venue_1 = next(v for v, s in owners.items() if s == 1)
    code = _code("D0")
    # One process opens a catalog once, so the shards take turns here; in the server each shard
    # is its own process and they share the claims store at the same time.
    shard_0 = _qr_shard(tmp_path, 0, 2)
    [ok] = _decide(shard_0, _scan("r1", venue_0, code))
    shard_0.close()
    shard_1 = _qr_shard(tmp_path, 1, 2)
    [replay] = _decide(shard_1, _scan("r1", venue_1, code))
    assert ok.allowed and replay.reason == Reason.REPLAYED_CODE
    # Claims are stored: a restarted shard still knows the code was used.
    shard_1.close()
    [after] = _decide(_qr_shard(tmp_path, 1, 2), _scan("r2", venue_1, code, gate="g2"))
    assert after.reason == Reason.REPLAYED_CODE


def _tampered(code: str) -> str:
    body = code[len(qr.PREFIX) :]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 0x01  # one bit of the signature
    return qr.PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_bad_codes_are_invalid_and_name_no_pass(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    cases = {
        "tampered": _tampered(_code("D0")),
        "wrong key": _code("D0", key=other),
        "unknown key id": _code("D0", key_id="nope"),
        "malformed": qr.PREFIX + "AAAA",
        "unknown pass": _code("NO-SUCH-PASS"),
    }
    out = _decide(shard, *[_scan(f"r{i}", "lake", c) for i, c in enumerate(cases.values())])
    for name, d in zip(cases, out, strict=True):
        assert (d.allowed, d.reason, d.pass_id) == (False, Reason.INVALID_CODE, ""), name
    assert shard.stored_admits() == 0
    # None of them claimed anything: the genuine code still admits.
    [ok] = _decide(shard, _scan("ok", "lake", _code("D0")))
    assert ok.allowed


def test_a_code_outside_its_window_is_expired(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    old, edge, future = (_code("D0", NOW_MS + s * 30_000) for s in (-2, -1, 2))
    out = _decide(
        shard, _scan("r1", "lake", old), _scan("r2", "lake", edge), _scan("r3", "lake", future)
    )
    assert [d.reason for d in out] == [Reason.CODE_EXPIRED, Reason.OK, Reason.CODE_EXPIRED]
    assert "refresh" in out[0].message and "clock" in out[2].message


def test_static_qr_values_follow_the_products_policy(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    static_off, static_on, card = _decide(
        shard,
        _scan("r1", "lake", "DQ0"),
        _scan("r2", "lake", "SQ0"),
        _scan("r3", "lake", "C1", kind=CredentialKind.CARD),
    )
    assert static_off.reason == Reason.INVALID_CODE and static_off.pass_id == ""
    assert static_on.allowed and card.allowed


def test_a_dry_run_checks_the_claim_but_makes_none(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    code = _code("D2")
    [dry] = _decide(shard, _scan("r1", "lake", code, dry=True))
    [real] = _decide(shard, _scan("r2", "lake", code, gate="g2"))
    [dry_after] = _decide(shard, _scan("r3", "lake", code, dry=True))
    assert dry.allowed and real.allowed and dry_after.reason == Reason.REPLAYED_CODE


def test_an_exit_with_a_bad_code_lets_the_holder_out_unmatched(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    [out] = _decide(shard, _scan("x1", "small", _tampered(_code("D3")), exit_=True))
    assert out.allowed and out.pass_id == ""
    status = shard.venue_status("small")
    assert status is not None and status["unmatched_exits_today"] == 1


def test_a_key_added_for_a_rotation_is_trusted_without_a_restart(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    new = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    [before] = _decide(shard, _scan("r1", "lake", _code("D4", key=new, key_id="rot2")))
    assert before.reason == Reason.INVALID_CODE
    _write_issuer(qr_data / "credentials", "rot2", new)
    qr_dir = qr_data / "credentials" / "qr"
    stat = qr_dir.stat()  # coarse mtime ticks: make the change visible for certain
    os.utime(qr_dir, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    new_key, old_key = _decide(
        shard,
        _scan("r2", "lake", _code("D4", key=new, key_id="rot2")),
        _scan("r3", "lake", _code("D3")),
    )
    assert new_key.allowed and old_key.allowed


def test_a_request_id_reused_in_one_batch_claims_no_code(qr_data: Path) -> None:
    shard = _qr_shard(qr_data)
    code = _code("D0")
    card, reused, twin_a, twin_b = _decide(
        shard,
        _scan("r1", "lake", "C1", kind=CredentialKind.CARD),
        _scan("r1", "lake", code),
        _scan("r2", "lake", _code("D1")),
        _scan("r2", "lake", _code("D1")),
    )
    assert card.allowed and reused.invalid
    assert twin_a.allowed and twin_b == twin_a  # the same scan twice: one decision
    [elsewhere] = _decide(shard, _scan("r9", "hard", code))
    assert elsewhere.allowed  # the refused reuse did not burn the code
