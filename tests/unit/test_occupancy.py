"""core/occupancy.py and the estimate in core/counters.py: the stay model, the per-minute estimate
(known series, decay, the everyone-out time, the cache), counted venues unchanged, and a shard
whose venue without exit readers fills up and admits again once its visitors have left."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from actors.catalog import CatalogWriter, catalog_path
from actors.shard.venue_shard import VenueShard
from core.counters import (
    ANNUL,
    ENTRY,
    EXIT,
    MINUTES_PER_DAY,
    TAIL,
    CapacityCounters,
    kernel_signature_counts,
    warm,
)
from core.models import (
    AlertLevel,
    AntiPassback,
    CredentialKind,
    PassRecord,
    Product,
    Province,
    Reason,
    StayModel,
    Venue,
    VenueRule,
)
from core.occupancy import (
    STAY_SIGMA,
    TRUNCATE_STAYS,
    estimate,
    rounded,
    survival,
    survival_table,
)
from core.records import Request
from tests.unit.test_shard import Clock

DAY = date(2026, 10, 1).toordinal()
WIDTH = TAIL + MINUTES_PER_DAY
# The 90th percentile of a log-normal stay: exp(sigma * z_0.9) typical stays.
Z_90 = 1.2815515655446004


# -- the stay model -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_stays", "share"),
    [
        pytest.param(0.0, 1.0, id="just-entered"),
        pytest.param(1.0, 0.5, id="median"),
        pytest.param(math.exp(STAY_SIGMA * Z_90), 0.1, id="90th-percentile"),
        pytest.param(math.exp(-STAY_SIGMA * Z_90), 0.9, id="10th-percentile"),
        pytest.param(TRUNCATE_STAYS, 0.0, id="truncated"),
    ],
)
def test_survival_is_a_log_normal_with_median_the_typical_stay(
    age_stays: float, share: float
) -> None:
    for typical in (30, 90, 150):
        assert survival(age_stays * typical, typical) == pytest.approx(share, abs=1e-9)


def test_survival_falls_steadily_to_zero() -> None:
    table = survival_table(150, WIDTH)
    assert table[0] == 1.0
    assert np.all(np.diff(table) <= 0)
    cut = TRUNCATE_STAYS * 150
    assert table[cut - 1] > 0 and not table[cut:].any()
    # Little is dropped by the cut: the share still inside just before it.
    assert table[cut - 1] < 0.005


def test_survival_rejects_a_non_positive_stay() -> None:
    with pytest.raises(ValueError):
        survival(10, 0)


def test_rounded_halves_go_up() -> None:
    assert [rounded(x) for x in (0.0, 0.49, 0.5, 2.5, 7.51)] == [0, 0, 1, 3, 8]


# -- the reference sum --------------------------------------------------------------------------


def _series(**at: int) -> list[int]:
    """Entries per minute of a day from {"m600": n, ...}."""
    entries = [0] * MINUTES_PER_DAY
    for key, n in at.items():
        entries[int(key[1:])] = n
    return entries


def test_known_series_gives_the_expected_estimate() -> None:
    # 100 in at 10:00 and 40 at 11:00, typical stay 60 minutes.
    entries = _series(m600=100, m660=40)
    assert estimate(entries, 599, 60) == 0
    assert estimate(entries, 600, 60) == 100
    # 11:00: the first group is at its median, the second has just come in.
    assert estimate(entries, 660, 60) == pytest.approx(100 * 0.5 + 40)
    # 12:00: the second group at its median, the first one stay past it.
    expected = 100 * survival(120, 60) + 40 * 0.5
    assert estimate(entries, 720, 60) == pytest.approx(expected)
    # Four typical stays after the last group nobody is left.
    assert estimate(entries, 660 + TRUNCATE_STAYS * 60, 60) == 0


def test_everyone_out_drops_earlier_entries() -> None:
    entries = _series(m600=100, m1090=7)
    late = estimate(entries, 1079, 300, everyone_out_min=1080)
    assert late == pytest.approx(100 * survival(479, 300)) and late > 10
    assert estimate(entries, 1080, 300, everyone_out_min=1080) == 0
    # Someone let in after the time counts again.
    assert estimate(entries, 1090, 300, everyone_out_min=1080) == 7


# -- the numba estimate -------------------------------------------------------------------------


def _counters(typical: int = 60, out: int | None = None) -> CapacityCounters:
    """Venue 0 counted, venue 1 estimated."""
    c = CapacityCounters(2, max_slots=1)
    c.set_stay(1, survival_table(typical, WIDTH), out)
    return c


def _enter(c: CapacityCounters, v: int, minute: int, n: int = 1, kind: int = ENTRY) -> None:
    c.apply_batch([v] * n, [DAY] * n, [minute] * n, [kind] * n, [-1] * n)


def test_counters_match_the_reference_on_a_random_day() -> None:
    rng = random.Random(7)
    entries = [rng.randrange(0, 30) if 420 <= m < 1020 else 0 for m in range(MINUTES_PER_DAY)]
    c = _counters(typical=150, out=1110)
    for m, n in enumerate(entries):
        if n:
            _enter(c, 1, m, n)
    for minute in (0, 420, 421, 600, 777, 1019, 1109, 1110, 1200, 1439):
        want = estimate(entries, minute, 150, everyone_out_min=1110)
        assert c.estimate(1, minute) == pytest.approx(want, rel=1e-12, abs=1e-9), minute
        assert c.live_occupancy(1, minute) == rounded(want)


def test_estimate_decays_monotonically_without_entries() -> None:
    c = _counters(typical=60)
    for m in range(600, 660):
        _enter(c, 1, m, 10)
    seen = [c.estimate(1, m) for m in range(660, 660 + TRUNCATE_STAYS * 60 + 2)]
    assert seen[0] > 0
    assert all(b <= a for a, b in itertools.pairwise(seen))
    assert seen[-1] == 0


def test_the_current_minute_counts_in_full_and_at_once() -> None:
    c = _counters()
    _enter(c, 1, 600, 3)
    assert c.live_occupancy(1, 600) == 3  # fills the per-minute cache
    _enter(c, 1, 600, 2)
    assert c.live_occupancy(1, 600) == 5


def test_an_annul_of_an_earlier_minute_lowers_the_cached_estimate() -> None:
    c = _counters()
    _enter(c, 1, 590, 10)
    before = c.estimate(1, 600)
    _enter(c, 1, 590, 1, kind=ANNUL)
    assert c.estimate(1, 600) == pytest.approx(before * 9 / 10)


def test_exits_do_not_move_the_estimate() -> None:
    c = _counters()
    _enter(c, 1, 600, 10)
    before = c.estimate(1, 605)
    _enter(c, 1, 604, 4, kind=EXIT)
    assert c.estimate(1, 605) == before
    assert int(c.exits_today[1]) == 4


def test_a_new_day_starts_the_estimate_again() -> None:
    c = _counters(typical=300)
    _enter(c, 1, 1200, 50)
    assert c.live_occupancy(1, 1439) == rounded(50 * survival(239, 300)) > 30
    c.rollover(1, DAY + 1)
    # Only the last minutes of yesterday are kept (for the rate), and nobody entered in them.
    assert c.estimate(1, 0) == 0


def test_everyone_out_in_the_counters() -> None:
    c = _counters(typical=300, out=1080)
    _enter(c, 1, 600, 100)
    assert c.live_occupancy(1, 1079) == rounded(100 * survival(479, 300)) > 10
    assert c.estimate(1, 1080) == 0
    _enter(c, 1, 1085, 4)
    assert c.live_occupancy(1, 1086) == 4


def test_counted_venues_are_unchanged() -> None:
    c = _counters()
    _enter(c, 0, 600, 10)
    _enter(c, 0, 601, 3, kind=EXIT)
    assert not c.estimated(0) and c.estimated(1)
    for minute in (601, 900, 1439):
        assert c.estimate(0, minute) == 7.0
        assert c.live_occupancy(0, minute) == int(c.occupancy[0]) == 7


def test_a_venue_can_go_back_to_counting() -> None:
    c = _counters()
    _enter(c, 1, 600, 10)
    _enter(c, 1, 601, 2, kind=EXIT)
    c.set_stay(1, None)
    assert not c.estimated(1)
    assert c.live_occupancy(1, 900) == 8


def test_minutes_to_full_follows_the_estimate() -> None:
    c = _counters(typical=150)
    c.set_capacity(1, 100, 100_000)
    for m in range(600, 605):
        _enter(c, 1, m, 10)
    per_minute, to_full = c.rates(1, 604)
    assert per_minute == 10.0
    # Hardly anyone has left after 5 minutes: about (100 - 50) / 10 minutes to full.
    assert to_full == pytest.approx(5.0, rel=0.02)
    # Long after the crowd came in the estimate falls: not filling.
    assert c.rates(1, 800) == (0.0, -1.0)


def test_copy_and_restore_keep_the_estimate_once_the_model_is_set_again() -> None:
    c = _counters(typical=90)
    _enter(c, 1, 600, 25)
    want = c.estimate(1, 640)
    assert c.copy().estimate(1, 640) == want
    restored = CapacityCounters.restore(c.snapshot())
    # The stay model is configuration, not state: its owner sets it after a restore.
    assert not restored.estimated(1)
    restored.set_stay(1, survival_table(90, WIDTH))
    assert restored.estimate(1, 640) == want


def test_no_compilation_for_the_estimate_after_warm() -> None:
    warm()
    compiled = kernel_signature_counts()
    c = _counters()
    _enter(c, 1, 600, 3)
    c.estimate(np.int64(1), np.int16(610))
    c.live_occupancy(1, 611)
    c.rates(1, 612)
    c.rates_all(np.array([612, 612], dtype=np.int64))
    assert kernel_signature_counts() == compiled


# -- a shard with a venue without exit readers ----------------------------------------------------

TZ = ZoneInfo("Asia/Shanghai")
# 2026-10-01 10:00 in Shanghai.
NOW_MS = int(datetime(2026, 10, 1, 2, 0, tzinfo=UTC).timestamp() * 1000)
ALL_DAY = tuple(((0, 1440),) for _ in range(7))
MINUTE_MS = 60_000


def _venue(venue_id: str, stay: StayModel | None) -> Venue:
    return Venue(
        venue_id=venue_id, name=venue_id, city="Hangzhou", tz_name="Asia/Shanghai", tz=TZ,
        opening=ALL_DAY, instant_capacity=3, daily_capacity=1000, anti_passback=AntiPassback(),
        gates=frozenset({f"{venue_id}-g1"}), stay_model=stay,
    )  # fmt: skip


def _province() -> Province:
    venues = {
        "trail": _venue("trail", StayModel(30)),
        "peak": _venue("peak", StayModel(150, everyone_out_min=630)),
        "hall": _venue("hall", None),
    }
    product = Product("annual", "Annual", {vid: VenueRule() for vid in venues})
    return Province("Test", "Asia/Shanghai", venues, {"annual": product})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert(
        PassRecord(
            pass_id=f"P{i}",
            product_id="annual",
            credentials=((CredentialKind.CARD, f"C{i}"),),
            valid_from=date(2026, 1, 1).toordinal(),
            valid_until=date(2027, 12, 31).toordinal(),
        )
        for i in range(40)
    )
    writer.close()
    return tmp_path


def _reasons(shard: VenueShard, venue: str, cards: range, exit_: bool = False) -> list[Reason]:
    direction: Any = 2 if exit_ else 1
    reqs: list[Request | str] = [
        Request(f"{venue}-{i}-{direction}-{shard._clock()}", venue, f"{venue}-g1",
                CredentialKind.CARD, f"C{i}", direction, 0, False)
        for i in cards
    ]  # fmt: skip
    return [d.reason for d in shard.decide_requests(reqs)]


def test_a_shard_admits_again_once_estimated_visitors_have_left(data_dir: Path) -> None:
    clock = Clock()
    shard = VenueShard(0, 1, _province(), str(data_dir), clock)
    ok, full = Reason.OK, Reason.VENUE_FULL
    # One batch: three in, the fourth refused against the batch's own running estimate.
    assert _reasons(shard, "trail", range(4)) == [ok, ok, ok, full]
    status = shard.venue_status("trail")
    assert status is not None
    assert (status["occupancy"], status["occupancy_estimated"]) == (3, True)
    assert status["alert_level"] == AlertLevel.FULL
    # An exit scan does not make room where exits are not read.
    assert _reasons(shard, "trail", range(1), exit_=True) == [ok]
    assert _reasons(shard, "trail", range(4, 5)) == [full]
    clock.ms += TRUNCATE_STAYS * 30 * MINUTE_MS
    assert _reasons(shard, "trail", range(5, 9)) == [ok, ok, ok, full]
    shard.close()


def test_a_restarted_shard_estimates_the_same(data_dir: Path) -> None:
    clock = Clock()
    shard = VenueShard(0, 1, _province(), str(data_dir), clock)
    _reasons(shard, "trail", range(3))
    clock.ms += 30 * MINUTE_MS
    before = shard.venue_status("trail")
    shard.close()
    again = VenueShard(0, 1, _province(), str(data_dir), clock)
    after = again.venue_status("trail")
    assert before is not None and after is not None
    assert after["occupancy"] == before["occupancy"] == rounded(3 * 0.5)
    again.close()


def test_a_shard_empties_a_venue_at_its_everyone_out_time(data_dir: Path) -> None:
    clock = Clock()
    shard = VenueShard(0, 1, _province(), str(data_dir), clock)
    assert _reasons(shard, "peak", range(4)) == [Reason.OK] * 3 + [Reason.VENUE_FULL]
    clock.ms += 29 * MINUTE_MS
    assert _reasons(shard, "peak", range(4, 5)) == [Reason.VENUE_FULL]
    clock.ms += 1 * MINUTE_MS  # 10:30
    status = shard.venue_status("peak")
    assert status is not None and status["occupancy"] == 0
    assert _reasons(shard, "peak", range(5, 6)) == [Reason.OK]
    shard.close()


def test_a_counted_venue_in_the_same_shard_is_unchanged(data_dir: Path) -> None:
    clock = Clock()
    shard = VenueShard(0, 1, _province(), str(data_dir), clock)
    assert _reasons(shard, "hall", range(4)) == [Reason.OK] * 3 + [Reason.VENUE_FULL]
    clock.ms += 8 * 60 * MINUTE_MS
    status = shard.venue_status("hall")
    assert status is not None
    assert (status["occupancy"], status["occupancy_estimated"]) == (3, False)
    assert status["typical_stay_minutes"] == 0
    assert _reasons(shard, "hall", range(4, 5)) == [Reason.VENUE_FULL]
    # An exit still makes room for one.
    assert _reasons(shard, "hall", range(1), exit_=True) == [Reason.OK]
    assert _reasons(shard, "hall", range(5, 7)) == [Reason.OK, Reason.VENUE_FULL]
    shard.close()
