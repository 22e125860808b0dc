"""Each caller's rate for the calls that are not validations (actors/ingress/call_budget.py), on a
clock the tests move: a burst of one second's calls goes at once, the next calls wait their turn,
a turn too far away (or past the call's deadline) is refused and takes nothing, callers are apart,
and validation is never limited."""

from __future__ import annotations

import pytest

from actors.errors import Overloaded
from actors.ingress import call_budget
from actors.ingress.call_budget import LIMITED, CallBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_second_of_calls_goes_at_once_and_the_next_wait_their_turn() -> None:
    clock = Clock()
    budget = CallBudget(10, max_wait_s=2.0, clock=clock)
    assert [budget.turn("dash") for _ in range(10)] == [0.0] * 10
    waits = [budget.turn("dash") for _ in range(5)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert (budget.waited, budget.refused) == (5, 0)
    # Once those turns have passed, the bucket refills at the rate.
    clock.now += 0.5 + 0.3
    assert [budget.turn("dash") for _ in range(3)] == pytest.approx([0.0] * 3, abs=1e-9)
    assert budget.turn("dash") == pytest.approx(0.1)


def test_a_turn_too_far_away_is_refused_and_takes_nothing() -> None:
    clock = Clock()
    budget = CallBudget(10, max_wait_s=0.25, clock=clock)
    for _ in range(12):
        budget.turn("flood")  # 10 at once, then turns 0.1 and 0.2 away
    with pytest.raises(Overloaded, match="over 10 calls/s for this caller; retry with"):
        budget.turn("flood")  # 0.3 away
    assert budget.refused == 1
    clock.now += 0.1
    assert budget.turn("flood") == pytest.approx(0.2)  # the refused call took no turn


def test_a_turn_past_the_call_deadline_is_refused_at_once() -> None:
    budget = CallBudget(10, max_wait_s=2.0, clock=Clock())
    for _ in range(10):
        budget.turn("dash", deadline_s=0.05)
    with pytest.raises(Overloaded):
        budget.turn("dash", deadline_s=0.05)  # its turn is 0.1 s away
    assert budget.turn("dash", deadline_s=1.0) == pytest.approx(0.1)


def test_callers_are_apart() -> None:
    budget = CallBudget(5, max_wait_s=0.0, clock=Clock())
    for _ in range(5):
        budget.turn("flood")
    with pytest.raises(Overloaded):
        budget.turn("flood")
    assert budget.turn("dashboard") == 0.0


def test_idle_callers_are_forgotten_when_there_are_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(call_budget, "MAX_CALLERS", 3)
    clock = Clock()
    budget = CallBudget(2, clock=clock)
    for name in ("a", "b", "c"):
        budget.turn(name)
    clock.now += 0.2
    budget.turn("c")  # c has not refilled since: it is kept
    clock.now += 0.4  # a and b have
    budget.turn("d")
    assert sorted(budget._buckets) == ["c", "d"]


def test_validation_is_not_limited_and_the_rest_is() -> None:
    assert not any(m.rsplit("/", 1)[1].startswith("Validate") for m in LIMITED)
    assert {"/passgate.v1.Quota/GetVenueStatus", "/passgate.v1.Passes/Reserve"} <= LIMITED


def test_a_budget_of_no_calls_is_a_mistake() -> None:
    with pytest.raises(ValueError):
        CallBudget(0)
