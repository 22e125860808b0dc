"""core.rules.decide, rule by rule: reason codes, check order, and the usage each decision leaves.

Fixtures are built here from the domain dataclasses: one venue in Asia/Shanghai open 08:30-17:00
every day, one product covering it, and one pass. The decision day is Thursday 2026-10-01.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.clock import local_time
from core.labels import LABELS
from core.models import (
    UNLIMITED,
    AlertLevel,
    AntiPassback,
    CapacityView,
    CredentialKind,
    CreditPolicy,
    CreditTier,
    Direction,
    Outcome,
    PassbackMode,
    PassRecord,
    PassStatus,
    Product,
    Province,
    Reason,
    Request,
    Slot,
    Usage,
    Venue,
    VenueRule,
)
from core.rules import decide

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY_DATE = date(2026, 10, 1)  # a Thursday
DAY = DAY_DATE.toordinal()
OPEN_0830_1700 = tuple(((510, 1020),) for _ in range(7))
ALL_DAY = tuple(((0, 1440),) for _ in range(7))
MIN = 60_000
NO_VIEW = CapacityView()


def _ms(day: int, hour: int, minute: int = 0, second: int = 0, tz: tzinfo = SHANGHAI) -> int:
    d = date.fromordinal(day)
    return int(datetime(d.year, d.month, d.day, hour, minute, second, tzinfo=tz).timestamp() * 1000)


NOW = _ms(DAY, 10)
CREDIT = CreditPolicy(
    pay_later_tiers=frozenset({CreditTier.GOOD}),
    debt_limit_fen=10_000,
    first_visit_free_groups=frozenset({"trusted_person"}),
)


def _venue(venue_id: str = "lake", tz: tzinfo = SHANGHAI, **kw: Any) -> Venue:
    fields: dict[str, Any] = {
        "venue_id": venue_id,
        "name": "West Lake",
        "city": "Hangzhou",
        "tz_name": str(tz),
        "tz": tz,
        "opening": OPEN_0830_1700,
        "instant_capacity": 100,
        "daily_capacity": 1000,
        "anti_passback": AntiPassback(),
        "gates": frozenset({"g1", "g2"}),
    }
    fields.update(kw)
    return Venue(**fields)


def _province(
    venue: Venue,
    rule: VenueRule | None = None,
    credit: CreditPolicy | None = None,
    peak_days: frozenset[int] = frozenset(),
) -> Province:
    covered = {venue.venue_id: rule or VenueRule()}
    products = {
        "annual": Product("annual", "Annual pass", covered, credit=credit),
        "other": Product("other", "Other pass", {"elsewhere": VenueRule()}),
    }
    return Province("Test", "Asia/Shanghai", {venue.venue_id: venue}, products, peak_days)


def _pass(**kw: Any) -> PassRecord:
    fields: dict[str, Any] = {
        "pass_id": "P1",
        "product_id": "annual",
        "credentials": ((CredentialKind.CARD, "C1"),),
        "valid_from": date(2026, 1, 1).toordinal(),
        "valid_until": date(2026, 12, 31).toordinal(),
    }
    fields.update(kw)
    return PassRecord(**fields)


def _request(
    direction: Direction = Direction.ENTRY, gate: str = "g1", dry_run: bool = False
) -> Request:
    return Request("r1", "lake", gate, CredentialKind.CARD, "C1", direction, 0, dry_run)


@dataclass(frozen=True)
class Case:
    """One scan: everything decide() sees, as overrides of the fixture defaults."""

    venue: dict[str, Any] = field(default_factory=dict)
    rule: dict[str, Any] = field(default_factory=dict)
    pass_: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    capacity: CapacityView = NO_VIEW
    at: tuple[int, int] = (10, 0)
    credit: CreditPolicy | None = None
    peak: bool = False
    gate: str = "g1"
    direction: Direction = Direction.ENTRY
    dry_run: bool = False
    no_pass: bool = False
    no_venue: bool = False

    def now_ms(self) -> int:
        return _ms(DAY, *self.at)

    def run(self) -> Outcome:
        venue = _venue(**self.venue)
        province = _province(
            venue,
            VenueRule(**self.rule),
            self.credit,
            frozenset({DAY}) if self.peak else frozenset(),
        )
        return decide(
            None if self.no_pass else _pass(**self.pass_),
            self.usage,
            None if self.no_venue else venue,
            _request(self.direction, self.gate, self.dry_run),
            self.now_ms(),
            province,
            self.capacity,
        )


PRICED: dict[str, Any] = {"pay_later_price_fen": 5_000}
WINDOWS: dict[str, Any] = {"peak_windows": ((360, 540), (960, 1110))}  # 06:00-09:00 and 16:00-18:30
HARD_30: dict[str, Any] = {"anti_passback": AntiPassback(PassbackMode.HARD, 30)}
SOFT_30: dict[str, Any] = {"anti_passback": AntiPassback(PassbackMode.SOFT, 30)}


def _inside_since(minutes_ago: int, inside: bool = True, day: int = DAY) -> Usage:
    return Usage(
        entries=1, day=day, entries_today=1, last_entry_ms=NOW - minutes_ago * MIN, inside=inside
    )


REFUSALS = [
    pytest.param(Reason.UNKNOWN_VENUE, Case(no_venue=True), id="unknown-venue"),
    pytest.param(Reason.NOT_AUTHORIZED, Case(gate="g9"), id="gate-not-of-this-venue"),
    pytest.param(Reason.UNKNOWN_CREDENTIAL, Case(no_pass=True), id="unknown-credential"),
    pytest.param(Reason.REVOKED, Case(pass_={"status": PassStatus.REVOKED}), id="revoked"),
    pytest.param(Reason.BLOCKED, Case(pass_={"status": PassStatus.BLOCKED}), id="blocked"),
    pytest.param(Reason.NOT_YET_VALID, Case(pass_={"valid_from": DAY + 1}), id="not-yet-valid"),
    pytest.param(Reason.EXPIRED, Case(pass_={"valid_until": DAY - 1}), id="expired"),
    pytest.param(
        Reason.VENUE_NOT_COVERED, Case(pass_={"product_id": "other"}), id="product-lacks-venue"
    ),
    pytest.param(
        Reason.VENUE_NOT_COVERED, Case(pass_={"product_id": "gone"}), id="unknown-product"
    ),
    pytest.param(Reason.VENUE_CLOSED, Case(at=(8, 29)), id="before-opening"),
    pytest.param(Reason.VENUE_CLOSED, Case(at=(17, 0)), id="closing-time-is-exclusive"),
    pytest.param(
        Reason.VENUE_CLOSED, Case(venue={"closed_dates": frozenset({DAY})}), id="closed-date"
    ),
    pytest.param(
        Reason.VENUE_CLOSED,
        Case(venue={"opening": (*OPEN_0830_1700[:3], (), *OPEN_0830_1700[4:])}),
        id="closed-on-thursdays",
    ),
    pytest.param(Reason.VENUE_PAUSED, Case(capacity=CapacityView(paused=True)), id="paused"),
    pytest.param(Reason.VENUE_FULL, Case(capacity=CapacityView(occupancy=100)), id="instant-full"),
    pytest.param(
        Reason.VENUE_FULL, Case(capacity=CapacityView(entries_today=1000)), id="daily-full"
    ),
    pytest.param(
        Reason.RESERVATION_REQUIRED,
        Case(venue={"reservation_required": True}),
        id="venue-requires-reservation",
    ),
    pytest.param(
        Reason.RESERVATION_REQUIRED,
        Case(rule={"reservation_required": True}),
        id="product-requires-reservation",
    ),
    pytest.param(
        Reason.RESERVATION_REQUIRED,
        Case(
            venue={"reservation_only_at_red": True},
            capacity=CapacityView(alert=AlertLevel.RED),
        ),
        id="reservation-only-at-red",
    ),
    pytest.param(
        Reason.OUTSIDE_TIME_WINDOW, Case(rule=WINDOWS, peak=True), id="peak-day-outside-window"
    ),
    pytest.param(
        Reason.OUTSIDE_TIME_WINDOW,
        Case(rule=WINDOWS, peak=True, at=(18, 30), venue={"opening": ALL_DAY}),
        id="window-end-is-exclusive",
    ),
    pytest.param(
        Reason.ANTI_PASSBACK, Case(venue=HARD_30, usage=_inside_since(10)), id="hard-passback"
    ),
    pytest.param(
        Reason.ENTRY_LIMIT_REACHED,
        Case(rule={"entries_per_period": 3}, usage=Usage(entries=3, day=DAY - 5, entries_today=1)),
        id="entry-limit",
    ),
    pytest.param(
        Reason.DAILY_LIMIT_REACHED,
        Case(rule={"entries_per_day": 2}, usage=Usage(entries=9, day=DAY, entries_today=2)),
        id="daily-limit",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(rule=PRICED, credit=CREDIT, pass_={"credit_tier": CreditTier.POOR}),
        id="credit-poor",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(rule=PRICED, credit=CREDIT, pass_={"credit_tier": CreditTier.NORMAL}),
        id="credit-normal-when-only-good-may-pay-later",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(
            rule=PRICED,
            credit=CREDIT,
            pass_={"credit_tier": CreditTier.GOOD, "outstanding_debt_fen": 5_001},
        ),
        id="credit-debt-over-limit",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(
            rule=PRICED,
            credit=CREDIT,
            pass_={"credit_tier": CreditTier.GOOD},
            usage=Usage(entries=2, charges_fen=5_001),
        ),
        id="credit-unpaid-charges-count-as-debt",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(
            rule=PRICED,
            credit=CREDIT,
            pass_={"credit_tier": CreditTier.POOR, "groups": frozenset({"trusted_person"})},
            venue={"state_owned": False},
        ),
        id="trusted-person-not-free-at-private-venue",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(
            rule=PRICED,
            credit=CREDIT,
            pass_={"credit_tier": CreditTier.POOR, "groups": frozenset({"trusted_person"})},
            venue={"state_owned": True},
            usage=Usage(entries=1, free_visits=1),
        ),
        id="trusted-person-free-only-once",
    ),
]

# Two faults at once: the closer one in core.ranking.RANKING wins (tests/unit/test_ranking.py walks
# every pair); these name a few for the reader.
CLOSEST = [
    pytest.param(
        Reason.UNKNOWN_VENUE, Case(no_venue=True, gate="g9", no_pass=True), id="venue>gate>pass"
    ),
    pytest.param(Reason.NOT_AUTHORIZED, Case(gate="g9", no_pass=True), id="gate>credential"),
    pytest.param(
        Reason.REVOKED,
        Case(pass_={"status": PassStatus.REVOKED, "valid_until": DAY - 1}),
        id="revoked>expired",
    ),
    pytest.param(
        Reason.REVOKED,
        Case(pass_={"status": PassStatus.REVOKED, "valid_from": DAY + 1}),
        id="revoked>not-yet-valid",
    ),
    pytest.param(
        Reason.BLOCKED,
        Case(pass_={"status": PassStatus.BLOCKED, "product_id": "other"}),
        id="blocked>not-covered",
    ),
    pytest.param(
        Reason.EXPIRED,
        Case(pass_={"valid_until": DAY - 1, "product_id": "other"}, at=(3, 0)),
        id="expired>not-covered>closed",
    ),
    pytest.param(
        Reason.VENUE_NOT_COVERED,
        Case(pass_={"product_id": "other"}, at=(3, 0)),
        id="not-covered>closed",
    ),
    pytest.param(
        Reason.VENUE_CLOSED,
        Case(at=(3, 0), capacity=CapacityView(paused=True, occupancy=100)),
        id="closed>paused>full",
    ),
    pytest.param(
        Reason.VENUE_PAUSED,
        Case(capacity=CapacityView(paused=True, occupancy=100)),
        id="paused>full",
    ),
    pytest.param(
        Reason.RESERVATION_REQUIRED,
        Case(venue={"reservation_required": True}, capacity=CapacityView(occupancy=100)),
        id="reservation>full",
    ),
    pytest.param(
        Reason.RESERVATION_REQUIRED,
        Case(venue={"reservation_required": True}, rule=WINDOWS, peak=True),
        id="reservation>window",
    ),
    pytest.param(
        Reason.ANTI_PASSBACK,
        Case(rule=WINDOWS, peak=True, venue=HARD_30, usage=_inside_since(10)),
        id="passback>window",
    ),
    pytest.param(
        Reason.ENTRY_LIMIT_REACHED,
        Case(rule={"entries_per_period": 1}, venue=HARD_30, usage=_inside_since(10)),
        id="entry-limit>passback",
    ),
    pytest.param(
        Reason.ENTRY_LIMIT_REACHED,
        Case(
            rule={"entries_per_period": 1, "entries_per_day": 1},
            usage=Usage(entries=1, day=DAY, entries_today=1),
        ),
        id="entry-limit>daily-limit",
    ),
    pytest.param(
        Reason.CREDIT_DENIED,
        Case(
            rule={"entries_per_day": 1, **PRICED},
            credit=CREDIT,
            pass_={"credit_tier": CreditTier.POOR},
            usage=Usage(entries=1, day=DAY, entries_today=1),
        ),
        id="credit>daily-limit",
    ),
]


@pytest.mark.parametrize(("reason", "case"), REFUSALS + CLOSEST)
def test_refusal(reason: Reason, case: Case) -> None:
    before = case.usage.copy()
    out = case.run()
    d = out.decision
    assert (d.allowed, d.reason) == (False, reason)
    assert out.usage is None and not out.entered and not out.exited
    assert d.decided_at_ms == case.now_ms()
    assert d.request_id == "r1"
    assert d.pass_id == ("" if case.no_pass else "P1")
    assert d.message
    assert not d.pay_later and d.charge_fen == 0
    assert case.usage == before


def test_admit_records_the_entry_without_touching_the_old_usage() -> None:
    old = Usage(entries=4, day=DAY - 1, entries_today=2, last_entry_ms=NOW - 86_400_000, exits=3)
    out = Case(usage=old).run()
    d = out.decision
    assert (d.allowed, d.reason, d.pass_id, d.decided_at_ms) == (True, Reason.OK, "P1", NOW)
    assert out.entered and not out.exited
    assert out.usage == Usage(
        entries=5, day=DAY, entries_today=1, last_entry_ms=NOW, inside=True, exits=3
    )
    assert old == Usage(
        entries=4, day=DAY - 1, entries_today=2, last_entry_ms=NOW - 86_400_000, exits=3
    )


@pytest.mark.parametrize(
    ("per_period", "entries_before", "remaining"),
    [
        pytest.param(UNLIMITED, 0, -1, id="unlimited"),
        pytest.param(UNLIMITED, 500, -1, id="unlimited-after-many"),
        pytest.param(3, 0, 2, id="first-of-three"),
        pytest.param(3, 2, 0, id="last-of-three"),
    ],
)
def test_remaining_entries(per_period: int, entries_before: int, remaining: int) -> None:
    out = Case(rule={"entries_per_period": per_period}, usage=Usage(entries=entries_before)).run()
    assert out.decision.allowed
    assert out.decision.remaining_entries == remaining
    assert out.usage is not None and out.usage.entries == entries_before + 1


def test_entry_limit_refusal_reports_zero_left() -> None:
    out = Case(rule={"entries_per_period": 3}, usage=Usage(entries=3)).run()
    assert out.decision.reason == Reason.ENTRY_LIMIT_REACHED
    assert out.decision.remaining_entries == 0


def test_daily_limit_rolls_over_at_local_midnight() -> None:
    venue = _venue()
    province = _province(venue, VenueRule(entries_per_day=1))
    pass_ = _pass()
    first = decide(pass_, Usage(), venue, _request(), NOW, province)
    assert first.decision.allowed and first.usage is not None
    later = decide(pass_, first.usage, venue, _request(), _ms(DAY, 16, 59), province)
    assert later.decision.reason == Reason.DAILY_LIMIT_REACHED
    assert "tomorrow" in later.decision.message
    tomorrow = decide(pass_, first.usage, venue, _request(), _ms(DAY + 1, 8, 30), province)
    assert tomorrow.decision.allowed
    assert tomorrow.usage is not None
    assert (tomorrow.usage.day, tomorrow.usage.entries_today) == (DAY + 1, 1)
    assert tomorrow.usage.entries == 2


PASSBACK = [
    pytest.param(HARD_30, _inside_since(10), Reason.ANTI_PASSBACK, False, id="hard-inside"),
    pytest.param(HARD_30, _inside_since(29), Reason.ANTI_PASSBACK, False, id="hard-29-min"),
    pytest.param(HARD_30, _inside_since(30), Reason.OK, False, id="hard-lapses-at-30-min"),
    pytest.param(HARD_30, _inside_since(31), Reason.OK, False, id="hard-lapsed"),
    pytest.param(
        HARD_30, _inside_since(10, inside=False), Reason.ANTI_PASSBACK, False, id="hard-after-exit"
    ),
    pytest.param(HARD_30, Usage(), Reason.OK, False, id="hard-first-entry"),
    pytest.param(SOFT_30, _inside_since(10), Reason.OK, True, id="soft-inside-flags"),
    pytest.param(SOFT_30, _inside_since(31), Reason.OK, False, id="soft-lapsed"),
    pytest.param(SOFT_30, _inside_since(10, inside=False), Reason.OK, True, id="soft-after-exit"),
    pytest.param({}, _inside_since(1), Reason.OK, False, id="none"),
]


@pytest.mark.parametrize(("venue", "usage", "reason", "soft"), PASSBACK)
def test_anti_passback(venue: dict[str, Any], usage: Usage, reason: Reason, soft: bool) -> None:
    out = Case(venue=venue, usage=usage).run()
    assert out.decision.reason == reason
    assert out.decision.soft_passback is soft
    assert out.entered is (reason == Reason.OK)


@pytest.mark.parametrize(
    ("entered_at", "shown"),
    [
        pytest.param((10, 0, 0), "10:30", id="on-the-minute"),
        pytest.param((10, 0, 30), "10:31", id="rounds-up"),
    ],
)
def test_hard_passback_names_the_reentry_time(entered_at: tuple[int, int, int], shown: str) -> None:
    usage = Usage(
        entries=1, day=DAY, entries_today=1, last_entry_ms=_ms(DAY, *entered_at), inside=True
    )
    out = Case(venue=HARD_30, usage=usage, at=(10, 10)).run()
    assert out.decision.reason == Reason.ANTI_PASSBACK
    assert shown in out.decision.message


def test_hard_passback_second_scan_of_a_chain_is_refused() -> None:
    venue = _venue(**HARD_30)
    province = _province(venue)
    first = decide(_pass(), Usage(), venue, _request(), NOW, province)
    assert first.usage is not None
    second = decide(_pass(), first.usage, venue, _request(gate="g2"), NOW + 5 * MIN, province)
    assert second.decision.reason == Reason.ANTI_PASSBACK
    assert second.usage is None


# -- exits --------------------------------------------------------------------------------------


INSIDE = _inside_since(10)
# (case, matched): only an exit that a known, unrevoked entry justifies lowers occupancy.
EXITS_ALLOWED = [
    pytest.param(Case(direction=Direction.EXIT, no_pass=True), False, id="unknown-credential"),
    pytest.param(Case(direction=Direction.EXIT), False, id="known-never-entered"),
    pytest.param(Case(direction=Direction.EXIT, usage=INSIDE, venue=HARD_30), True, id="inside"),
    pytest.param(
        Case(direction=Direction.EXIT, usage=INSIDE, pass_={"status": PassStatus.REVOKED}),
        False,
        id="revoked",
    ),
    pytest.param(
        Case(direction=Direction.EXIT, usage=INSIDE, pass_={"valid_until": DAY - 1}),
        True,
        id="expired",
    ),
    pytest.param(
        Case(direction=Direction.EXIT, usage=INSIDE, at=(23, 0)), True, id="after-closing"
    ),
    pytest.param(
        Case(
            direction=Direction.EXIT,
            usage=INSIDE,
            capacity=CapacityView(paused=True, occupancy=100),
        ),
        True,
        id="paused-and-full",
    ),
    pytest.param(
        Case(direction=Direction.EXIT, usage=INSIDE, pass_={"product_id": "other"}),
        True,
        id="not-covered",
    ),
    pytest.param(
        Case(direction=Direction.EXIT, usage=_inside_since(10, day=DAY - 1)),
        False,
        id="entered-yesterday-at-a-venue-that-resets-overnight",
    ),
]


@pytest.mark.parametrize(("case", "matched"), EXITS_ALLOWED)
def test_exit_is_never_refused(case: Case, matched: bool) -> None:
    before = case.usage.copy()
    out = case.run()
    d = out.decision
    assert (d.allowed, d.reason) == (True, Reason.OK)
    assert not out.entered
    assert (out.exited, out.unmatched_exit) == (matched, not matched)
    assert d.decided_at_ms == case.now_ms()
    if case.no_pass:
        assert out.usage is None and d.pass_id == ""
    else:
        assert d.pass_id == "P1"
    if matched:
        assert out.usage is not None
        assert out.usage.inside is False
        assert out.usage.exits == before.exits + 1
        assert out.usage.entries == before.entries
    else:
        assert out.usage is None, "an unmatched exit changes no usage"
    assert case.usage == before


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param(
            Case(direction=Direction.EXIT, no_venue=True), Reason.UNKNOWN_VENUE, id="venue"
        ),
        pytest.param(Case(direction=Direction.EXIT, gate="g9"), Reason.NOT_AUTHORIZED, id="gate"),
    ],
)
def test_exit_refused_only_for_venue_or_gate(case: Case, reason: Reason) -> None:
    out = case.run()
    assert (out.decision.allowed, out.decision.reason) == (False, reason)
    assert out.usage is None and not out.exited


def test_exit_clears_inside_but_not_the_hard_passback_window() -> None:
    venue = _venue(**HARD_30)
    province = _province(venue)
    entry = decide(_pass(), Usage(), venue, _request(), NOW, province)
    assert entry.usage is not None and entry.usage.inside
    leave = decide(_pass(), entry.usage, venue, _request(Direction.EXIT), NOW + MIN, province)
    assert leave.usage is not None and not leave.usage.inside
    # Within N minutes of the last entry: a card handed back over the fence stays refused.
    back = decide(_pass(), leave.usage, venue, _request(), NOW + 2 * MIN, province)
    assert back.decision.reason == Reason.ANTI_PASSBACK
    later = decide(_pass(), leave.usage, venue, _request(), NOW + 30 * MIN, province)
    assert later.decision.allowed


def test_exit_reports_remaining_entries() -> None:
    out = Case(
        direction=Direction.EXIT, rule={"entries_per_period": 5}, usage=Usage(entries=2)
    ).run()
    assert out.decision.remaining_entries == 3


# -- dry run ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(), id="plain-entry"),
        pytest.param(Case(rule={"entries_per_period": 4}, usage=Usage(entries=1)), id="limited"),
        pytest.param(
            Case(rule=PRICED, credit=CREDIT, pass_={"credit_tier": CreditTier.GOOD}),
            id="pay-later",
        ),
        pytest.param(Case(venue=SOFT_30, usage=_inside_since(1)), id="soft-passback"),
        pytest.param(Case(pass_={"status": PassStatus.REVOKED}), id="refused"),
        pytest.param(Case(direction=Direction.EXIT), id="exit"),
    ],
)
def test_dry_run_decides_the_same_and_changes_nothing(case: Case) -> None:
    real = case.run()
    dry = dataclasses.replace(case, dry_run=True).run()
    assert dry.decision == real.decision
    assert dry.usage is None
    assert not dry.entered and not dry.exited


# -- credit -------------------------------------------------------------------------------------


def test_pay_later_good_credit_is_charged() -> None:
    out = Case(
        rule=PRICED,
        credit=CREDIT,
        pass_={"credit_tier": CreditTier.GOOD, "outstanding_debt_fen": 2_000},
        usage=Usage(entries=1, charges_fen=3_000),
    ).run()
    d = out.decision
    assert (d.allowed, d.pay_later, d.charge_fen, d.free_visit) == (True, True, 5_000, False)
    assert out.usage is not None and out.usage.charges_fen == 8_000


def test_pay_later_debt_exactly_at_limit_is_allowed() -> None:
    out = Case(
        rule=PRICED,
        credit=CREDIT,
        pass_={"credit_tier": CreditTier.GOOD, "outstanding_debt_fen": 5_000},
    ).run()
    assert out.decision.pay_later


def test_debt_refusal_says_the_debt_is_over_the_limit() -> None:
    out = Case(
        rule=PRICED,
        credit=CREDIT,
        pass_={"credit_tier": CreditTier.GOOD, "outstanding_debt_fen": 9_000},
    ).run()
    assert out.decision.reason == Reason.CREDIT_DENIED
    assert "limit" in out.decision.message and "90.00" in out.decision.message


def test_normal_tier_pays_later_when_the_policy_admits_it() -> None:
    policy = dataclasses.replace(
        CREDIT, pay_later_tiers=frozenset({CreditTier.GOOD, CreditTier.NORMAL})
    )
    out = Case(rule=PRICED, credit=policy, pass_={"credit_tier": CreditTier.NORMAL}).run()
    assert out.decision.pay_later and out.decision.charge_fen == 5_000


@pytest.mark.parametrize(
    ("case", "paid"),
    [
        pytest.param(
            Case(credit=CREDIT, pass_={"credit_tier": CreditTier.POOR}), False, id="no-price"
        ),
        pytest.param(
            Case(rule=PRICED, pass_={"credit_tier": CreditTier.POOR}), False, id="no-policy"
        ),
    ],
)
def test_no_credit_terms_means_plain_entry(case: Case, paid: bool) -> None:
    out = case.run()
    assert out.decision.allowed and out.decision.pay_later is paid
    assert out.usage is not None and out.usage.charges_fen == 0


def test_trusted_person_first_visit_is_free_once_per_state_owned_venue() -> None:
    venue = _venue(state_owned=True)
    province = _province(venue, VenueRule(**PRICED), CREDIT)
    trusted = _pass(credit_tier=CreditTier.GOOD, groups=frozenset({"trusted_person"}))
    first = decide(trusted, Usage(), venue, _request(), NOW, province)
    d = first.decision
    assert (d.allowed, d.free_visit, d.pay_later, d.charge_fen) == (True, True, False, 0)
    assert first.usage is not None
    assert (first.usage.free_visits, first.usage.charges_fen) == (1, 0)
    second = decide(trusted, first.usage, venue, _request(), _ms(DAY + 1, 10), province)
    d = second.decision
    assert (d.allowed, d.free_visit, d.pay_later, d.charge_fen) == (True, False, True, 5_000)
    other = _venue("museum", state_owned=True)
    elsewhere = decide(
        trusted, Usage(), other, _request(), NOW, _province(other, VenueRule(**PRICED), CREDIT)
    )
    assert elsewhere.decision.free_visit


@pytest.mark.parametrize(
    ("state_owned", "groups"),
    [
        pytest.param(False, {"trusted_person"}, id="private-venue"),
        pytest.param(True, {"student"}, id="other-group"),
    ],
)
def test_first_visit_free_needs_state_venue_and_group(state_owned: bool, groups: set[str]) -> None:
    out = Case(
        venue={"state_owned": state_owned},
        rule=PRICED,
        credit=CREDIT,
        pass_={"credit_tier": CreditTier.GOOD, "groups": frozenset(groups)},
    ).run()
    assert not out.decision.free_visit
    assert out.decision.charge_fen == 5_000


# -- time zones and the precomputed local time ------------------------------------------------


def test_same_instant_is_a_different_day_in_shanghai_and_utc() -> None:
    # 2026-10-01 17:00 UTC is already 2026-10-02 01:00 in Shanghai.
    instant = int(datetime(2026, 10, 1, 17, 0, tzinfo=UTC).timestamp() * 1000)
    pass_ = _pass(valid_until=DAY)
    used_today = Usage(entries=1, day=DAY, entries_today=1)
    answers = {}
    for tz in (SHANGHAI, UTC):
        venue = _venue(tz=tz, opening=ALL_DAY)
        province = _province(venue, VenueRule(entries_per_day=1))
        expiry = decide(pass_, Usage(), venue, _request(), instant, province).decision.reason
        daily = decide(_pass(), used_today, venue, _request(), instant, province).decision.reason
        answers[str(tz)] = (expiry, daily)
    assert answers == {
        "Asia/Shanghai": (Reason.EXPIRED, Reason.OK),
        "UTC": (Reason.OK, Reason.DAILY_LIMIT_REACHED),
    }


def test_precomputed_local_time_is_used() -> None:
    venue = _venue()
    province = _province(venue)
    early = local_time(SHANGHAI, _ms(DAY, 7))
    computed = decide(_pass(), Usage(), venue, _request(), NOW, province)
    given = decide(_pass(), Usage(), venue, _request(), NOW, province, CapacityView(), early)
    assert computed.decision.allowed
    assert given.decision.reason == Reason.VENUE_CLOSED


# -- capacity view passthrough and reservations ----------------------------------------------


@pytest.mark.parametrize(
    "alert", [a for a in AlertLevel if a != AlertLevel.UNSPECIFIED], ids=lambda a: a.name
)
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(), id="admitted"),
        pytest.param(Case(no_pass=True), id="refused"),
        pytest.param(Case(direction=Direction.EXIT), id="exit"),
    ],
)
def test_venue_alert_is_passed_through(case: Case, alert: AlertLevel) -> None:
    case = dataclasses.replace(case, capacity=CapacityView(alert=alert))
    assert case.run().decision.venue_alert == alert


def test_unknown_venue_has_no_alert_level() -> None:
    out = Case(no_venue=True, capacity=CapacityView(alert=AlertLevel.RED)).run()
    assert out.decision.venue_alert == AlertLevel.UNSPECIFIED


def test_reserved_slot_admits_where_reservation_is_required() -> None:
    out = Case(
        venue={"reservation_required": True}, capacity=CapacityView(reserved_slot="am")
    ).run()
    assert out.decision.allowed and out.entered


def test_below_red_needs_no_reservation_at_reservation_only_at_red_venue() -> None:
    out = Case(
        venue={"reservation_only_at_red": True}, capacity=CapacityView(alert=AlertLevel.ORANGE)
    ).run()
    assert out.decision.allowed


@pytest.mark.parametrize(
    ("next_free", "named"),
    [
        pytest.param("14:00-16:00", "14:00-16:00", id="names-next-slot"),
        pytest.param(None, "no free slot", id="none-left"),
    ],
)
def test_reservation_message_names_the_next_free_slot(next_free: str | None, named: str) -> None:
    out = Case(
        venue={"reservation_required": True}, capacity=CapacityView(next_free_slot=next_free)
    ).run()
    assert out.decision.reason == Reason.RESERVATION_REQUIRED
    assert named in out.decision.message


# -- opening hours and peak windows: the message says what would work --------------------------


SAT_ONLY = ((),) * 5 + (((540, 1020),),) + ((),)
LUNCH_BREAK = (((480, 720), (780, 1020)),) * 7


@pytest.mark.parametrize(
    ("venue", "at", "shown"),
    [
        pytest.param({}, (7, 0), "opens at 08:30", id="early"),
        pytest.param({}, (17, 30), "opens tomorrow 08:30", id="evening"),
        pytest.param({"opening": LUNCH_BREAK}, (12, 30), "opens at 13:00", id="lunch-break"),
        pytest.param({"opening": SAT_ONLY}, (10, 0), "opens Sat 09:00", id="weekend-only"),
        pytest.param(
            {"closed_dates": frozenset({DAY, DAY + 1})},
            (7, 0),
            "opens Sat 08:30",
            id="closed-dates",
        ),
        pytest.param(
            {"opening": ((),) * 7}, (10, 0), LABELS[Reason.VENUE_CLOSED], id="never-opens"
        ),
    ],
)
def test_closed_message_says_when_it_opens(
    venue: dict[str, Any], at: tuple[int, int], shown: str
) -> None:
    out = Case(venue=venue, at=at).run()
    assert out.decision.reason == Reason.VENUE_CLOSED
    assert out.decision.message == shown


@pytest.mark.parametrize(
    ("peak", "at", "reason", "shown"),
    [
        pytest.param(True, (10, 0), Reason.OUTSIDE_TIME_WINDOW, "16:00", id="between-windows"),
        pytest.param(True, (18, 30), Reason.OUTSIDE_TIME_WINDOW, "no more", id="after-last"),
        pytest.param(True, (8, 59), Reason.OK, "", id="inside-morning-window"),
        pytest.param(True, (16, 0), Reason.OK, "", id="afternoon-window-opens"),
        pytest.param(False, (10, 0), Reason.OK, "", id="not-a-peak-day"),
    ],
)
def test_peak_day_windows(peak: bool, at: tuple[int, int], reason: Reason, shown: str) -> None:
    out = Case(venue={"opening": ALL_DAY}, rule=WINDOWS, peak=peak, at=at).run()
    assert out.decision.reason == reason
    assert shown in out.decision.message


@pytest.mark.parametrize(
    ("pass_", "shown"),
    [
        pytest.param({"valid_from": DAY + 3}, "2026-10-04", id="not-yet-valid"),
        pytest.param({"valid_until": DAY - 1}, "2026-09-30", id="expired"),
    ],
)
def test_validity_messages_name_the_date(pass_: dict[str, Any], shown: str) -> None:
    assert shown in Case(pass_=pass_).run().decision.message


def test_every_reason_has_a_label() -> None:
    assert set(LABELS) == set(Reason)
    assert all(label.strip() for label in LABELS.values())


# -- the closest failure (issue 10, finding 2) --------------------------------------------------


def test_no_entries_left_before_opening_is_told_so_not_when_it_opens() -> None:
    spent = Usage(entries=3, day=DAY - 1, entries_today=1)
    out = Case(rule={"entries_per_period": 3}, usage=spent, at=(6, 0)).run()
    d = out.decision
    assert (d.allowed, d.reason) == (False, Reason.ENTRY_LIMIT_REACHED)
    assert d.message == LABELS[Reason.ENTRY_LIMIT_REACHED]
    assert d.remaining_entries == 0
    # With an entry left, closed is all there is to say: when it opens.
    left = Usage(entries=2, day=DAY - 1, entries_today=1)
    out = Case(rule={"entries_per_period": 3}, usage=left, at=(6, 0)).run()
    assert (out.decision.reason, out.decision.message) == (Reason.VENUE_CLOSED, "opens at 08:30")


@pytest.mark.parametrize(
    "capacity",
    [
        pytest.param(CapacityView(reentry_slot="am"), id="with-the-used-reservation"),
        pytest.param(CapacityView(next_free_slot="11:00-13:00"), id="no-reservation-for-now"),
    ],
)
def test_holder_who_just_entered_a_reservation_museum_gets_anti_passback(
    capacity: CapacityView,
) -> None:
    museum = {"reservation_required": True, **HARD_30}
    out = Case(venue=museum, usage=_inside_since(5), capacity=capacity).run()
    d = out.decision
    assert (d.allowed, d.reason) == (False, Reason.ANTI_PASSBACK)
    assert d.message == "re-entry from 10:25"


# -- reservations (issue 10, finding 3): one rule with Reserve and GetPass ----------------------


def test_used_reservation_readmits_its_holder_within_its_window() -> None:
    out = Case(
        venue={"reservation_required": True},
        usage=_inside_since(40, inside=False),
        capacity=CapacityView(reentry_slot="am"),
    ).run()
    assert out.decision.allowed and out.entered


def test_soft_passback_re_entry_with_a_used_reservation_is_admitted_and_flagged() -> None:
    out = Case(
        venue={"reservation_required": True, **SOFT_30},
        usage=_inside_since(5),
        capacity=CapacityView(reentry_slot="am"),
    ).run()
    assert out.decision.allowed and out.decision.soft_passback


def test_reservation_message_names_the_later_slot_the_pass_already_holds() -> None:
    later = Slot("pm", 660, 780, 10)  # 11:00-13:00, honoured from 10:45
    out = Case(
        venue={"reservation_required": True},
        capacity=CapacityView(next_free_slot="11:00-13:00", held_slot=later),
    ).run()
    d = out.decision
    assert (d.reason, d.message) == (
        Reason.RESERVATION_REQUIRED,
        "reserved 11:00-13:00: entry from 10:45",
    )
