"""core.ranking, walked: for every pair of entry failures that can hold at once, decide() answers
the one the ranking puts closer, with that failure's own message; preconditions stop everything.

Each failure is a fault: overrides of the fixtures of tests/unit/test_rules.py that make exactly
that one check fail. Two faults merge into one scan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from core import rules
from core.models import CapacityView, CreditTier, PassStatus, Reason, Usage
from core.ranking import (
    CANNOT_COINCIDE,
    CHECK_ORDER,
    PRECONDITIONS,
    RANK,
    RANKING,
    closer,
    closest,
)
from tests.unit.test_rules import CREDIT, DAY, HARD_30, MIN, NOW, PRICED, WINDOWS, Case


@dataclass(frozen=True)
class Fault:
    """Overrides that make one check fail; `usage` and `capacity` are field overrides too."""

    venue: dict[str, Any] = field(default_factory=dict)
    rule: dict[str, Any] = field(default_factory=dict)
    pass_: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    credit: bool = False
    peak: bool = False


# The holder entered 10 minutes ago, today: inside. Every usage override agrees with it, so that
# faults merge without contradicting each other.
_ENTERED = {"entries": 1, "day": DAY, "entries_today": 1}

FAULTS: dict[Reason, Fault] = {
    Reason.REVOKED: Fault(pass_={"status": PassStatus.REVOKED}),
    Reason.BLOCKED: Fault(pass_={"status": PassStatus.BLOCKED}),
    Reason.NOT_YET_VALID: Fault(pass_={"valid_from": DAY + 3}),
    Reason.EXPIRED: Fault(pass_={"valid_until": DAY - 1}),
    Reason.VENUE_NOT_COVERED: Fault(pass_={"product_id": "other"}),
    Reason.VENUE_CLOSED: Fault(venue={"closed_dates": frozenset({DAY})}),
    Reason.VENUE_PAUSED: Fault(capacity={"paused": True}),
    Reason.VENUE_FULL: Fault(capacity={"occupancy": 100}),
    Reason.RESERVATION_REQUIRED: Fault(venue={"reservation_required": True}),
    Reason.OUTSIDE_TIME_WINDOW: Fault(rule=WINDOWS, peak=True),
    Reason.ANTI_PASSBACK: Fault(
        venue=HARD_30, usage={**_ENTERED, "last_entry_ms": NOW - 10 * MIN, "inside": True}
    ),
    Reason.ENTRY_LIMIT_REACHED: Fault(rule={"entries_per_period": 1}, usage=_ENTERED),
    Reason.DAILY_LIMIT_REACHED: Fault(rule={"entries_per_day": 1}, usage=_ENTERED),
    Reason.CREDIT_DENIED: Fault(rule=PRICED, credit=True, pass_={"credit_tier": CreditTier.POOR}),
}


def _case(*faults: Fault, **extra: Any) -> Case:
    merged: dict[str, dict[str, Any]] = {k: {} for k in ("venue", "rule", "pass_", "usage", "cap")}
    for f in faults:
        for key, part in (
            ("venue", f.venue),
            ("rule", f.rule),
            ("pass_", f.pass_),
            ("usage", f.usage),
            ("cap", f.capacity),
        ):
            clash = {k for k in part.keys() & merged[key].keys() if part[k] != merged[key][k]}
            assert not clash, f"faults contradict each other on {key}: {clash}"
            merged[key].update(part)
    return Case(
        venue=merged["venue"],
        rule=merged["rule"],
        pass_=merged["pass_"],
        usage=Usage(**merged["usage"]),
        capacity=CapacityView(**merged["cap"]),
        credit=CREDIT if any(f.credit for f in faults) else None,
        peak=any(f.peak for f in faults),
        **extra,
    )


def _alone(reason: Reason) -> str:
    """The message of `reason` when it is the only failure."""
    return _case(FAULTS[reason]).run().decision.message


PAIRS = [
    pytest.param(a, b, id=f"{a.name}+{b.name}")
    for a, b in itertools.combinations(RANKING, 2)
    if frozenset({a, b}) not in CANNOT_COINCIDE
]


# -- the table itself ---------------------------------------------------------------------------


def test_every_entry_check_is_ranked_once() -> None:
    assert len(RANKING) == len(set(RANKING))
    assert sorted(CHECK_ORDER) == sorted(RANKING)
    assert set(PRECONDITIONS).isdisjoint(RANKING)
    assert set(RANK) == set(PRECONDITIONS) | set(RANKING)
    assert max(RANK[p] for p in PRECONDITIONS) < min(RANK[r] for r in RANKING)


def test_the_check_table_of_decide_follows_check_order() -> None:
    assert tuple(rules._CHECKS) == CHECK_ORDER


def test_exclusions_name_ranked_pairs_only() -> None:
    for pair in CANNOT_COINCIDE:
        assert len(pair) == 2 and pair <= set(RANKING)


def test_every_fault_alone_is_refused_with_its_own_reason() -> None:
    assert set(FAULTS) == set(RANKING)
    for reason, fault in FAULTS.items():
        d = _case(fault).run().decision
        assert (d.allowed, d.reason) == (False, reason), d.message


def test_no_fault_admits() -> None:
    assert _case().run().decision.allowed


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_closer_of_two_failures_wins_with_its_message(a: Reason, b: Reason) -> None:
    winner = a if closer(a, b) else b
    assert closest([b, a]) == winner
    case = _case(FAULTS[a], FAULTS[b])
    out = case.run()
    d = out.decision
    assert (d.allowed, d.reason) == (False, winner), d.message
    assert d.message == _alone(winner)
    assert out.usage is None and not out.entered


def test_all_compatible_faults_at_once_give_the_top_of_the_ranking() -> None:
    chosen: list[Reason] = []
    for reason in reversed(RANKING):  # from the farthest, so that the closest are added last
        if all(frozenset({reason, c}) not in CANNOT_COINCIDE for c in chosen):
            chosen.append(reason)
    out = _case(*(FAULTS[r] for r in chosen)).run()
    assert out.decision.reason == closest(chosen)


@pytest.mark.parametrize("fault", list(RANKING), ids=lambda r: r.name)
@pytest.mark.parametrize(
    ("precondition", "extra"),
    [
        pytest.param(Reason.UNKNOWN_VENUE, {"no_venue": True}, id="unknown-venue"),
        pytest.param(Reason.NOT_AUTHORIZED, {"gate": "g9"}, id="foreign-gate"),
        pytest.param(Reason.UNKNOWN_CREDENTIAL, {"no_pass": True}, id="unknown-credential"),
    ],
)
def test_preconditions_stop_everything(
    fault: Reason, precondition: Reason, extra: dict[str, Any]
) -> None:
    d = _case(FAULTS[fault], **extra).run().decision
    assert (d.allowed, d.reason) == (False, precondition)
