"""actors/shard/sightings.py: the node's shared-card sightings, alone and inside VenueShard (the
flag on the decision, in the decision log and in GetPass's source), and the log record's layout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from actors.catalog import CatalogWriter, catalog_path
from actors.codec import decode_decisions, encode_batch
from actors.routing import shard_of
from actors.shard.service import decide_encoded
from actors.shard.sightings import (
    FLAG_KEEP_MS,
    MAX_FLAGS_SHOWN,
    MIN_KEEP_MS,
    SightingsStore,
    pass_key,
    sightings_path,
)
from actors.shard.venue_shard import VenueShard
from core.models import (
    AntiPassback,
    CredentialKind,
    PassRecord,
    Product,
    Province,
    Reason,
    SharedCardPolicy,
    Venue,
    VenueRule,
)
from core.records import Decision, LogRecord, Request, SharedFlag, Sighting, decoder, encode
from tests.unit.test_shard import Clock

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
NOW_MS = int(datetime(2026, 10, 1, 2, 0, tzinfo=UTC).timestamp() * 1000)  # 10:00 in Shanghai
MIN = 60_000
ALL_DAY = tuple(((0, 1440),) for _ in range(7))
HILLS, COAST = (30.2410, 120.1010), (30.2410, 120.5160)  # 40 km apart: 40 min at 60 km/h
VALID = (date(2026, 1, 1).toordinal(), date(2027, 12, 31).toordinal())
KEY_A, KEY_B = pass_key("P-A"), pass_key("P-B")


# -- the store ------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SightingsStore]:
    s = SightingsStore(sightings_path(tmp_path), 40 * MIN)
    yield s
    s.close()


def _last(store: SightingsStore, key: bytes) -> Sighting | None:
    txn = store.begin()
    try:
        return store.last(txn, key)
    finally:
        txn.abort()


def _flag(at_ms: int, venue: str = "coast") -> SharedFlag:
    return SharedFlag(at_ms, venue, "hills", at_ms - 10 * MIN, 39_866, False)


def test_pass_keys_are_fixed_size_hashes_of_the_pass_id() -> None:
    assert len(KEY_A) == 16 and KEY_A != KEY_B and pass_key("P-A") == KEY_A


def test_a_written_sighting_is_read_back_and_a_newer_one_replaces_it(
    store: SightingsStore,
) -> None:
    assert _last(store, KEY_A) is None
    store.write({KEY_A: Sighting("hills", NOW_MS)}, [], NOW_MS)
    assert _last(store, KEY_A) == Sighting("hills", NOW_MS)
    store.write({KEY_A: Sighting("coast", NOW_MS + MIN)}, [], NOW_MS + MIN)
    assert _last(store, KEY_A) == Sighting("coast", NOW_MS + MIN)
    assert _last(store, KEY_B) is None
    assert store.count() == 1


def test_old_sightings_are_purged_but_a_renewed_one_is_kept(store: SightingsStore) -> None:
    store.write({KEY_A: Sighting("hills", NOW_MS), KEY_B: Sighting("hills", NOW_MS)}, [], NOW_MS)
    store.write({KEY_B: Sighting("coast", NOW_MS + 30 * MIN)}, [], NOW_MS + 30 * MIN)
    assert store.purge(NOW_MS + 39 * MIN) == 0  # nothing older than the 40 min horizon yet
    store.purge(NOW_MS + 41 * MIN)
    assert _last(store, KEY_A) is None
    assert _last(store, KEY_B) == Sighting("coast", NOW_MS + 30 * MIN)
    assert store.count() == 1


def test_writes_purge_on_their_own(store: SightingsStore) -> None:
    store.write({KEY_A: Sighting("hills", NOW_MS)}, [], NOW_MS)
    store.write({KEY_B: Sighting("hills", NOW_MS + 50 * MIN)}, [], NOW_MS + 50 * MIN)
    assert _last(store, KEY_A) is None and store.count() == 1


def test_the_horizon_is_never_shorter_than_the_minimum(tmp_path: Path) -> None:
    tiny = SightingsStore(tmp_path / "s", 0)
    try:
        assert tiny.keep_ms == MIN_KEEP_MS
    finally:
        tiny.close()


def test_flags_newest_first_bounded_and_kept_a_week(store: SightingsStore) -> None:
    flags = [(KEY_A, _flag(NOW_MS + i * MIN)) for i in range(MAX_FLAGS_SHOWN + 5)]
    store.write({}, [*flags, (KEY_B, _flag(NOW_MS, "other"))], NOW_MS)
    shown = store.flags_of("P-A")
    assert len(shown) == MAX_FLAGS_SHOWN
    assert [f.at_ms for f in shown] == sorted((f.at_ms for _, f in flags), reverse=True)[:20]
    assert [f.venue_id for f in store.flags_of("P-B")] == ["other"]
    assert store.flags_of("P-C") == []
    store.purge(NOW_MS + FLAG_KEEP_MS + 21 * MIN)
    assert [f.at_ms for f in store.flags_of("P-A")] == [NOW_MS + i * MIN for i in (24, 23, 22)]


def test_shards_in_one_process_share_one_environment(tmp_path: Path) -> None:
    one = SightingsStore(sightings_path(tmp_path), 40 * MIN)
    two = SightingsStore(sightings_path(tmp_path), 40 * MIN)
    try:
        one.write({KEY_A: Sighting("hills", NOW_MS)}, [], NOW_MS)
        one.close()
        assert _last(two, KEY_A) == Sighting("hills", NOW_MS)  # still open for the other user
    finally:
        one.close()
        two.close()


def test_a_sighting_written_by_another_process_is_seen(
    store: SightingsStore, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from actors.shard.sightings import SightingsStore, pass_key
        from core.records import Sighting
        store = SightingsStore(Path({str(sightings_path(tmp_path))!r}), {40 * MIN})
        store.write({{pass_key("P-A"): Sighting("coast", {NOW_MS})}}, [], {NOW_MS})
        store.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert _last(store, KEY_A) == Sighting("coast", NOW_MS)


def test_the_start_up_check_drops_a_damaged_sightings_store(tmp_path: Path) -> None:
    from actors.shard.store_check import check_data_dir

    store = SightingsStore(sightings_path(tmp_path), 40 * MIN)
    store.write({KEY_A: Sighting("hills", NOW_MS)}, [], NOW_MS)
    store.close()
    data = sightings_path(tmp_path) / "data.mdb"
    check_data_dir(tmp_path, 1)
    assert data.exists()
    with data.open("r+b") as f:
        f.truncate(4096 + 100)  # inside meta page 1
    check_data_dir(tmp_path, 1)
    assert not data.exists()


# -- records --------------------------------------------------------------------------------------


def test_a_log_line_written_before_the_flag_existed_reads_as_not_flagged() -> None:
    old = [
        "log/1",
        NOW_MS,
        "r1",
        "hills",
        "hills-g1",
        "P-A",
        1,
        True,
        1,
        1,
        740000,
        600,
        -1,
        0,
        False,
    ]
    rec = decoder(LogRecord).decode(msgspec.msgpack.encode(old))
    assert (rec.request_id, rec.soft_passback, rec.shared_card) == ("r1", False, False)
    flagged = msgspec.structs.replace(rec, shared_card=True)
    assert decoder(LogRecord).decode(encode(flagged)).shared_card is True


def test_a_decision_recorded_before_the_flag_existed_reads_as_not_flagged() -> None:
    old = ["r1", True, 1, "welcome", "P-A", -1, 1, False, NOW_MS, 0, False, False, False]
    assert decoder(Decision).decode(msgspec.msgpack.encode(old)).shared_card is False


# -- inside the shard -----------------------------------------------------------------------------


def _venue(venue_id: str, location: tuple[float, float] | None) -> Venue:
    return Venue(
        venue_id=venue_id,
        name=f"Venue {venue_id}",
        city="Hangzhou",
        tz_name="Asia/Shanghai",
        tz=TZ,
        opening=ALL_DAY,
        instant_capacity=100,
        daily_capacity=1000,
        anti_passback=AntiPassback(),
        gates=frozenset({f"{venue_id}-g1", f"{venue_id}-g2"}),
        location=location,
    )


def _two_shard_venues() -> dict[str, tuple[float, float] | None]:
    """Venue ids -> location: two 40 km apart on different shards of 2, one more on each shard
    (one near 'a', one with no location)."""
    names = [f"v{i}" for i in range(40)]
    zero = [v for v in names if shard_of(v, 2) == 0]
    one = [v for v in names if shard_of(v, 2) == 1]
    return {zero[0]: HILLS, one[0]: COAST, zero[1]: (30.2415, 120.1010), one[1]: None}


def _province() -> Province:
    venues = {vid: _venue(vid, at) for vid, at in _two_shard_venues().items()}
    rules = {vid: VenueRule() for vid in venues}
    products = {
        "flag": Product("flag", "Flags", rules),
        "refuse": Product("refuse", "Refuses", rules, shared_card=SharedCardPolicy.REFUSE),
    }
    return Province("T", "Asia/Shanghai", venues, products)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert(
        [PassRecord(f"F{i}", "flag", ((CredentialKind.CARD, f"CF{i}"),), *VALID) for i in range(6)]
        + [PassRecord("R0", "refuse", ((CredentialKind.CARD, "CR0"),), *VALID)]
    )
    writer.close()
    return tmp_path


def _req(rid: str, venue: str, card: str, exit_: bool = False, dry: bool = False) -> Request:
    direction: Any = 2 if exit_ else 1
    return Request(rid, venue, f"{venue}-g1", CredentialKind.CARD, card, direction, 0, dry)


def _decide(shard: VenueShard, *reqs: Request) -> list[Decision]:
    return decode_decisions(decide_encoded(shard, encode_batch(list(reqs))))


class Node:
    """Two shards of one node over one data directory. One process opens the catalog once, so
    they take turns here; in the server each shard is its own process."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.clock = Clock()
        self.province = _province()
        self.venues = list(_two_shard_venues())  # a (shard 0), b (shard 1), near a, unlocated
        self._open: VenueShard | None = None

    def shard(self, venue: str) -> VenueShard:
        sid = shard_of(venue, 2)
        if self._open is not None and self._open.shard_id != sid:
            self._open.close()
            self._open = None
        if self._open is None:
            self._open = VenueShard(sid, 2, self.province, str(self.data), self.clock)
        return self._open

    def scan(self, rid: str, venue: str, card: str, **kw: Any) -> Decision:
        [d] = _decide(self.shard(venue), _req(rid, venue, card, **kw))
        return d

    def close(self) -> None:
        if self._open is not None:
            self._open.close()


@pytest.fixture
def node(data: Path) -> Iterator[Node]:
    n = Node(data)
    yield n
    n.close()


def test_a_pass_40_km_away_10_minutes_later_on_the_other_shard_is_flagged(node: Node) -> None:
    a, b, _, _ = node.venues
    first = node.scan("r1", a, "CF0")
    assert first.allowed and not first.shared_card
    node.clock.ms += 10 * MIN
    second = node.scan("r2", b, "CF0")
    assert (second.allowed, second.reason, second.shared_card) == (True, Reason.OK, True)
    assert second.message == "welcome"
    shard = node.shard(b)
    log = [rec for _, rec in shard.store.iter_log()]
    assert [(r.request_id, r.shared_card) for r in log] == [("r2", True)]
    [flag] = shard.shared_flags_of("F0")
    assert (flag.venue_id, flag.other_venue_id, flag.refused) == (b, a, False)
    assert (flag.at_ms, flag.other_at_ms) == (NOW_MS + 10 * MIN, NOW_MS)
    assert 39_500 < flag.distance_m < 40_500
    # The other shard of the node sees the same flag.
    assert node.shard(a).shared_flags_of("F0") == [flag]


def test_hours_apart_a_near_venue_an_unlocated_venue_and_exits_are_not_flagged(
    node: Node,
) -> None:
    a, b, near, nowhere = node.venues
    node.scan("r1", a, "CF1")
    node.clock.ms += 3 * 60 * MIN
    assert not node.scan("r2", b, "CF1").shared_card  # hours later
    node.scan("r3", a, "CF2")
    node.clock.ms += MIN
    assert not node.scan("r4", near, "CF2").shared_card  # 55 m away, a minute later
    node.scan("r5", a, "CF3")
    assert not node.scan("r6", nowhere, "CF3").shared_card  # no location: not checked
    exit_ = node.scan("r7", b, "CF3", exit_=True)
    assert exit_.allowed and not exit_.shared_card
    # Neither the unlocated venue nor the exit moved the sighting: still at `a`.
    assert node.scan("r8", b, "CF3").shared_card


def test_a_product_that_refuses_gets_the_reason_and_nothing_changes(node: Node) -> None:
    a, b, _, _ = node.venues
    node.scan("r1", a, "CR0")
    node.clock.ms += 12 * MIN
    refused = node.scan("r2", b, "CR0")
    assert (refused.allowed, refused.reason, refused.shared_card) == (
        False,
        Reason.SHARED_CARD_SUSPECTED,
        True,
    )
    assert refused.message == f"card seen at Venue {a} 12 min ago, 40 km away"
    shard = node.shard(b)
    assert shard.usage_of("R0") == []  # no entry counted at b
    assert shard.stored_admits() == 0
    [log] = [rec for _, rec in shard.store.iter_log()]
    assert (log.allowed, log.reason, log.shared_card) == (False, int(refused.reason), True)
    [flag] = shard.shared_flags_of("R0")
    assert flag.refused
    # The refused scan left the sighting at `a`: the holder's return there is not suspect.
    assert not node.scan("r3", a, "CR0").shared_card


def test_a_dry_run_reports_the_flag_and_records_nothing(node: Node) -> None:
    a, b, _, _ = node.venues
    node.scan("r1", a, "CF4")
    node.clock.ms += 5 * MIN
    probe = node.scan("r2", b, "CF4", dry=True)
    assert probe.allowed and probe.shared_card
    assert node.shard(b).shared_flags_of("F4") == []
    # Nor did it move the sighting: the pass is still last seen at `a`.
    node.clock.ms += 5 * MIN
    assert not node.scan("r3", a, "CF4").shared_card


def test_two_entries_in_one_batch_see_each_other(node: Node) -> None:
    a, _, near, _ = node.venues
    # `near` is 55 m from `a`: 3.3 s at 60 km/h, so the same instant is already suspect.
    first, second = _decide(node.shard(a), _req("r1", a, "CF5"), _req("r2", near, "CF5"))
    assert (first.shared_card, second.shared_card) == (False, True)
    assert second.allowed


def test_a_retry_returns_the_recorded_decision_and_flags_nothing_new(node: Node) -> None:
    a, b, _, _ = node.venues
    node.scan("r1", a, "CF0")
    node.clock.ms += MIN
    flagged = node.scan("r2", b, "CF0")
    assert node.scan("r2", b, "CF0") == flagged
    assert len(node.shard(b).shared_flags_of("F0")) == 1


def test_a_failing_sightings_store_never_fails_the_committed_batch(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors.errors import StorageFull

    a, b, _, _ = node.venues
    shard = node.shard(a)

    def full(*_args: object) -> None:
        raise StorageFull("sightings write failed: storage full")

    monkeypatch.setattr(shard.sharing.store, "write", full)
    first = node.scan("r1", a, "CF0")
    assert first.allowed and shard.stored_admits() == 1
    # Nothing was recorded, so the far entry has nothing to be suspected against.
    assert not node.scan("r2", b, "CF0").shared_card


def _planned(shard: VenueShard, *reqs: Request) -> Any:
    plan = shard.plan_batch(list(reqs))
    shard.credit.hold_now(plan.credit)
    return plan


def test_a_handed_over_sighting_is_seen_by_its_shard_at_once_and_by_the_node_once_recorded(
    node: Node,
) -> None:
    # The Ray shard records a batch's sightings once its answer is on its way.
    a, _, near, _ = node.venues
    shard = node.shard(a)
    first_plan = _planned(shard, _req("r1", a, "CF1"))
    [first] = shard.decide_planned(first_plan, hand_over=True)
    assert first.allowed and first_plan.sightings is not None
    assert _last(shard.sharing.store, pass_key("F1")) is None  # not on the node's store yet
    second_plan = _planned(shard, _req("r2", near, "CF1"))
    [second] = shard.decide_planned(second_plan, hand_over=True)
    assert second.shared_card  # the shard's next batch saw it all the same
    shard.sharing.record(first_plan.sightings)
    assert _last(shard.sharing.store, pass_key("F1")) == Sighting(a, NOW_MS)
    shard.sharing.record(second_plan.sightings)
    assert _last(shard.sharing.store, pass_key("F1")) == Sighting(near, NOW_MS)
    [flag] = shard.shared_flags_of("F1")
    assert (flag.venue_id, flag.other_venue_id) == (near, a)


def test_a_discarded_sighting_is_neither_written_nor_seen(node: Node) -> None:
    # A batch whose commit failed after its decision: nobody entered.
    a, _, near, _ = node.venues
    shard = node.shard(a)
    plan = _planned(shard, _req("r1", a, "CF2"))
    shard.decide_planned(plan, hand_over=True)
    shard.sharing.discard(plan.sightings)
    assert _last(shard.sharing.store, pass_key("F2")) is None
    [later] = _decide(shard, _req("r2", near, "CF2"))
    assert later.allowed and not later.shared_card
