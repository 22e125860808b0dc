"""core.counters: the numba kernels against a plain-Python model of the same rules.

The model below is written from the rules, not from the kernels: one object per venue, lists for
minutes and slots. Property tests drive both with random batches of entries, exits, annuls,
reservations, cancellations, clock ticks and day changes across three venues and compare every
array and figure after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.counters as counters_mod
from core.counters import (
    ANNUL,
    CANCEL,
    ENTRY,
    EXIT,
    RESERVE,
    CapacityCounters,
    kernel_signature_counts,
    warm,
)

DAY = 740_000
V, S = 3, 3
Event = tuple[int, int, int, int, int]


# -- the reference model ------------------------------------------------------------------------


def _zeros(n: int) -> list[int]:
    return [0] * n


@dataclass
class _RefVenue:
    carry: bool = False
    instant: int = 0
    daily: int = 0
    day: int = 0
    occupancy: int = 0
    entries_today: int = 0
    exits_today: int = 0
    entries_min: list[int] = field(default_factory=lambda: _zeros(1440))
    exits_min: list[int] = field(default_factory=lambda: _zeros(1440))
    # Minutes 1436..1439 of yesterday, when yesterday was the row's previous day.
    prev_entries: list[int] = field(default_factory=lambda: _zeros(4))
    prev_exits: list[int] = field(default_factory=lambda: _zeros(4))
    admitted: list[int] = field(default_factory=lambda: _zeros(S))
    reserved: list[int] = field(default_factory=lambda: _zeros(S))

    def roll(self, day: int) -> None:
        if day <= self.day:
            return
        yesterday = day == self.day + 1
        self.prev_entries = self.entries_min[-4:] if yesterday else _zeros(4)
        self.prev_exits = self.exits_min[-4:] if yesterday else _zeros(4)
        self.entries_min, self.exits_min = _zeros(1440), _zeros(1440)
        self.admitted, self.reserved = _zeros(S), _zeros(S)
        self.entries_today = self.exits_today = 0
        if not self.carry:
            self.occupancy = 0
        self.day = day

    def apply(self, day: int, minute: int, kind: int, slot: int) -> None:
        self.roll(day)
        if day < self.day:
            if self.carry and kind in (ENTRY, EXIT, ANNUL):
                self.occupancy = max(0, self.occupancy + (1 if kind == ENTRY else -1))
            return
        has_minute, has_slot = 0 <= minute < 1440, 0 <= slot < S
        if kind == ENTRY:
            self.occupancy += 1
            self.entries_today += 1
            if has_minute:
                self.entries_min[minute] += 1
            if has_slot:
                self.admitted[slot] += 1
        elif kind == ANNUL:
            self.occupancy = max(0, self.occupancy - 1)
            self.entries_today = max(0, self.entries_today - 1)
            if has_minute:
                self.entries_min[minute] = max(0, self.entries_min[minute] - 1)
            if has_slot:
                self.admitted[slot] = max(0, self.admitted[slot] - 1)
        elif kind == EXIT:
            self.occupancy = max(0, self.occupancy - 1)
            self.exits_today += 1
            if has_minute:
                self.exits_min[minute] += 1
        elif kind == RESERVE and has_slot:
            self.reserved[slot] += 1
        elif kind == CANCEL and has_slot:
            self.reserved[slot] = max(0, self.reserved[slot] - 1)

    def rates(self, minute: int) -> tuple[float, float]:
        m = min(max(minute, 0), 1439)
        entries = exits = 0
        for x in range(m - 4, m + 1):
            entries += self.entries_min[x] if x >= 0 else self.prev_entries[x + 4]
            exits += self.exits_min[x] if x >= 0 else self.prev_exits[x + 4]
        per_minute = entries / 5
        net = (entries - exits) / 5
        candidates = []
        if self.instant > 0 and net > 0:
            candidates.append(max(self.instant - self.occupancy, 0) / net)
        if self.daily > 0 and per_minute > 0:
            candidates.append(max(self.daily - self.entries_today, 0) / per_minute)
        return per_minute, min(candidates, default=-1.0)


def _assert_same(c: CapacityCounters, ref: list[_RefVenue], minutes: list[int]) -> None:
    for v, r in enumerate(ref):
        got = (int(c.day[v]), int(c.occupancy[v]), int(c.entries_today[v]), int(c.exits_today[v]))
        assert got == (r.day, r.occupancy, r.entries_today, r.exits_today), f"venue {v}"
        assert c.entries_min[v].tolist() == r.entries_min, f"venue {v} entries_min"
        assert c.exits_min[v].tolist() == r.exits_min, f"venue {v} exits_min"
        assert c.slot_admitted[v].tolist() == r.admitted, f"venue {v} slot_admitted"
        assert c.slot_reserved[v].tolist() == r.reserved, f"venue {v} slot_reserved"
        assert bool(c.carry[v]) is r.carry
        for m in minutes:
            assert c.rates(v, m) == pytest.approx(r.rates(m)), f"venue {v} minute {m}"
    for m in minutes:
        per_minute, to_full = c.rates_all(m)
        expected = [r.rates(m) for r in ref]
        assert per_minute.tolist() == pytest.approx([e[0] for e in expected])
        assert to_full.tolist() == pytest.approx([e[1] for e in expected])


# -- property tests -----------------------------------------------------------------------------

_minutes = st.one_of(
    st.integers(0, 9), st.integers(1432, 1439), st.sampled_from([-1, 1440, 100_000])
)
_events = st.tuples(
    st.integers(-1, V),  # V itself is out of range
    st.integers(DAY, DAY + 3),
    _minutes,
    st.sampled_from([ENTRY, ENTRY, ENTRY, EXIT, EXIT, ANNUL, RESERVE, CANCEL, 0, 9]),
    st.integers(-1, S),  # S itself is out of range
)
_batch = st.lists(_events, min_size=1, max_size=12).map(lambda evs: ("batch", evs))
_tick = st.tuples(st.integers(-1, V), st.integers(DAY, DAY + 4)).map(lambda t: ("tick", t))
_caps = st.tuples(st.integers(0, 30), st.integers(0, 60))


def _apply_both(c: CapacityCounters, ref: list[_RefVenue], events: list[Event]) -> None:
    cols = list(zip(*events, strict=True))
    c.apply_batch(*(np.array(col) for col in cols))
    for v, day, minute, kind, slot in events:
        if 0 <= v < V:
            ref[v].apply(day, minute, kind, slot)


@settings(max_examples=150, deadline=None)
@given(
    carry=st.lists(st.booleans(), min_size=V, max_size=V),
    caps=st.lists(_caps, min_size=V, max_size=V),
    ops=st.lists(st.one_of(_batch, _batch, _tick), min_size=1, max_size=10),
)
def test_counters_match_the_reference_model(
    carry: list[bool], caps: list[tuple[int, int]], ops: list[tuple[str, Any]]
) -> None:
    c = CapacityCounters(V, max_slots=S)
    ref = [_RefVenue(carry=carry[v], instant=caps[v][0], daily=caps[v][1]) for v in range(V)]
    for v in range(V):
        c.carry[v] = carry[v]
        c.set_capacity(v, *caps[v])
    for op, arg in ops:
        if op == "batch":
            _apply_both(c, ref, arg)
            probe = sorted({0, 2, 4, 9, 1439} | {e[2] for e in arg})
        else:
            c.rollover(*arg)
            if 0 <= arg[0] < V:
                ref[arg[0]].roll(arg[1])
            probe = [0, 3, 1439]
        _assert_same(c, ref, probe)
    _assert_same(CapacityCounters.restore(c.snapshot()), ref, [0, 4, 1439])


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(_events, min_size=1, max_size=30),
    split=st.integers(0, 30),
)
def test_one_batch_equals_two_batches(events: list[Event], split: int) -> None:
    whole, parts = CapacityCounters(V, S), CapacityCounters(V, S)
    whole.carry[0] = parts.carry[0] = True
    cols = [np.array(col) for col in zip(*events, strict=True)]
    whole.apply_batch(*cols)
    parts.apply_batch(*(col[:split] for col in cols))
    parts.apply_batch(*(col[split:] for col in cols))
    assert whole.snapshot() == parts.snapshot()


# -- rates and minutes to full ------------------------------------------------------------------


def _history(c: CapacityCounters, rows: list[tuple[int, int, int]], day: int = DAY) -> None:
    """(minute, entries, exits) rows for venue 0: all entries of a row come before its exits."""
    events = []
    for minute, entries, exits in rows:
        events += [(0, day, minute, ENTRY, -1)] * entries + [(0, day, minute, EXIT, -1)] * exits
    c.apply_batch(*(np.array(col) for col in zip(*events, strict=True)))


@pytest.mark.parametrize(
    ("instant", "daily", "rows", "minute", "per_minute", "to_full"),
    [
        pytest.param(100, 1000, [], 600, 0.0, -1.0, id="no-traffic-not-filling"),
        pytest.param(100, 0, [(0, 50, 0), *[(m, 10, 0) for m in range(96, 101)]], 100, 10.0,
                     0.0, id="instant-full-still-filling"),
        pytest.param(100, 0, [(0, 40, 0), *[(m, 2, 0) for m in range(96, 101)]], 100, 2.0,
                     25.0, id="instant-room-50-at-net-2-per-minute"),
        pytest.param(100, 0, [(m, 5, 5) for m in range(96, 101)], 100, 5.0, -1.0,
                     id="balanced-flow-not-filling"),
        pytest.param(100, 0, [(0, 20, 0), *[(m, 1, 3) for m in range(96, 101)]], 100, 1.0,
                     -1.0, id="emptying-not-filling"),
        pytest.param(100, 0, [(m, 2, 1) for m in range(96, 101)], 100, 2.0, 95.0,
                     id="net-one-per-minute-95-room"),
        pytest.param(1000, 60, [(0, 10, 10), *[(m, 2, 0) for m in range(96, 101)]], 100, 2.0,
                     20.0, id="daily-room-sooner-than-instant"),
        pytest.param(1000, 60, [(0, 20, 20), *[(m, 2, 2) for m in range(96, 101)]], 100, 2.0,
                     15.0, id="daily-fills-even-with-balanced-flow"),
        pytest.param(0, 0, [(m, 9, 0) for m in range(96, 101)], 100, 9.0, -1.0,
                     id="no-limits-never-full"),
        pytest.param(100, 1000, [(94, 50, 0), (95, 5, 0)], 100, 0.0, -1.0,
                     id="outside-the-5-minute-window"),
        pytest.param(100, 1000, [(96, 5, 0), (98, 5, 0)], 100, 2.0, 45.0,
                     id="window-starts-at-minute-minus-4"),
        pytest.param(100, 1000, [(101, 5, 0)], 100, 0.0, -1.0, id="future-minutes-ignored"),
        pytest.param(100, 1000, [(0, 3, 0)], 2, 0.6, 97 / 0.6, id="early-minutes-partial-window"),
    ],
)  # fmt: skip
def test_rates(
    instant: int,
    daily: int,
    rows: list[tuple[int, int, int]],
    minute: int,
    per_minute: float,
    to_full: float,
) -> None:
    c = CapacityCounters(2)
    c.set_capacity(0, instant, daily)
    if rows:
        _history(c, rows)
    assert c.rates(0, minute) == pytest.approx((per_minute, to_full))
    all_per_minute, all_to_full = c.rates_all(np.array([minute, 0]))
    assert (all_per_minute[0], all_to_full[0]) == pytest.approx((per_minute, to_full))
    assert (all_per_minute[1], all_to_full[1]) == (0.0, -1.0)


@pytest.mark.parametrize(
    ("next_day", "minute", "per_minute"),
    [
        pytest.param(DAY + 1, 0, 4.0, id="00:00-sees-23:56-to-23:59"),
        pytest.param(DAY + 1, 2, 2.0, id="00:02-sees-23:58-to-23:59"),
        pytest.param(DAY + 1, 4, 0.0, id="00:04-window-is-today-only"),
        pytest.param(DAY + 2, 0, 0.0, id="skipped-day-has-no-tail"),
    ],
)
def test_rate_window_reaches_into_yesterday(next_day: int, minute: int, per_minute: float) -> None:
    c = CapacityCounters(1)
    _history(c, [(m, 5, 0) for m in range(1435, 1440)])
    c.rollover(0, next_day)
    assert c.rates(0, minute)[0] == pytest.approx(per_minute)


def test_rates_of_an_unknown_venue() -> None:
    c = CapacityCounters(2)
    assert c.rates(-1, 600) == (0.0, -1.0)
    assert c.rates(2, 600) == (0.0, -1.0)


def test_capacity_changes_at_run_time() -> None:
    c = CapacityCounters(1)
    c.set_capacity(0, 100, 0)
    _history(c, [(m, 2, 0) for m in range(96, 101)])
    assert c.rates(0, 100)[1] == pytest.approx(45.0)
    c.set_capacity(0, 20, 0)
    assert c.rates(0, 100)[1] == pytest.approx(5.0)
    with pytest.raises(IndexError):
        c.set_capacity(1, 1, 1)


# -- days -----------------------------------------------------------------------------------------


def _busy(carry: bool) -> CapacityCounters:
    c = CapacityCounters(1, max_slots=2)
    c.carry[0] = carry
    c.apply_batch(
        [0] * 6, [DAY] * 6, [600, 600, 601, 602, 0, 0],
        [ENTRY, ENTRY, ENTRY, EXIT, RESERVE, RESERVE], [0, -1, 1, -1, 0, 1],
    )  # fmt: skip
    return c


@pytest.mark.parametrize(
    ("carry", "occupancy"), [pytest.param(True, 2, id="carry"), pytest.param(False, 0, id="reset")]
)
@pytest.mark.parametrize("by", ["tick", "event"])
def test_midnight_rollover(carry: bool, occupancy: int, by: str) -> None:
    c = _busy(carry)
    if by == "tick":
        c.rollover(0, DAY + 1)
    else:
        c.apply_batch([0], [DAY + 1], [0], [0], [-1])  # a no-op kind still moves the day
    assert int(c.day[0]) == DAY + 1
    assert int(c.occupancy[0]) == occupancy
    assert (int(c.entries_today[0]), int(c.exits_today[0])) == (0, 0)
    assert not c.entries_min.any() and not c.exits_min.any()
    assert not c.slot_admitted.any() and not c.slot_reserved.any()


def test_rollover_to_a_past_or_same_day_changes_nothing() -> None:
    c = _busy(False)
    before = c.snapshot()
    c.rollover(0, DAY)
    c.rollover(0, DAY - 1)
    c.rollover(5, DAY + 1)
    assert c.snapshot() == before


@pytest.mark.parametrize(
    ("carry", "kind", "occupancy"),
    [
        pytest.param(True, EXIT, 1, id="carry-late-exit-leaves"),
        pytest.param(True, ANNUL, 1, id="carry-annul-across-midnight-gives-place-back"),
        pytest.param(True, ENTRY, 3, id="carry-late-entry-is-inside"),
        pytest.param(True, RESERVE, 2, id="carry-late-reserve-ignored"),
        pytest.param(False, EXIT, 0, id="reset-late-exit-already-dropped"),
        pytest.param(False, ANNUL, 0, id="reset-annul-already-dropped"),
        pytest.param(False, ENTRY, 0, id="reset-late-entry-already-dropped"),
    ],
)
def test_events_of_yesterday_never_touch_daily_figures(
    carry: bool, kind: int, occupancy: int
) -> None:
    c = _busy(carry)
    c.rollover(0, DAY + 1)
    c.apply_batch([0], [DAY + 1], [5], [ENTRY], [0])
    c.apply_batch([0], [DAY], [601], [kind], [1])
    assert int(c.occupancy[0]) == occupancy + 1
    assert (int(c.entries_today[0]), int(c.exits_today[0])) == (1, 0)
    assert c.slot_admitted[0].tolist() == [1, 0]
    assert not c.slot_reserved.any()
    assert int(c.entries_min[0].sum()) == 1 and not c.exits_min.any()


# -- robustness -----------------------------------------------------------------------------------


def test_occupancy_and_counts_never_go_negative() -> None:
    c = CapacityCounters(1, max_slots=1)
    c.apply_batch([0] * 4, [DAY] * 4, [10] * 4, [EXIT, ANNUL, CANCEL, ANNUL], [-1, 0, 0, 0])
    assert (int(c.occupancy[0]), int(c.entries_today[0]), int(c.exits_today[0])) == (0, 0, 1)
    assert int(c.entries_min[0, 10]) == 0
    assert int(c.slot_admitted[0, 0]) == 0 and int(c.slot_reserved[0, 0]) == 0
    c.apply_batch([0, 0], [DAY, DAY], [11, 11], [ENTRY, EXIT], [-1, -1])
    assert int(c.occupancy[0]) == 0


def test_annul_gives_the_place_back() -> None:
    c = CapacityCounters(1, max_slots=2)
    c.apply_batch([0, 0], [DAY, DAY], [600, 610], [ENTRY, ENTRY], [1, -1])
    c.apply_batch([0], [DAY], [600], [ANNUL], [1])
    assert (int(c.occupancy[0]), int(c.entries_today[0]), int(c.exits_today[0])) == (1, 1, 0)
    assert (int(c.entries_min[0, 600]), int(c.entries_min[0, 610])) == (0, 1)
    assert c.slot_admitted[0].tolist() == [0, 0]


def test_unknown_venues_minutes_slots_and_kinds_are_skipped() -> None:
    c = CapacityCounters(2, max_slots=2)
    c.apply_batch(
        [-1, 2, 2**31 - 1, -(2**31), 0, 0, 0, 1],
        [DAY] * 8,
        [600, 600, 600, 600, -5, 1440, 600, 600],
        [ENTRY, ENTRY, ENTRY, ENTRY, ENTRY, EXIT, ENTRY, 7],
        [-1, 0, 0, 0, 2, -1, 99, 0],
    )
    assert c.occupancy.tolist() == [1, 0]
    assert c.entries_today.tolist() == [2, 0]
    assert c.exits_today.tolist() == [1, 0]
    assert int(c.entries_min.sum()) == 1 and int(c.entries_min[0, 600]) == 1
    assert not c.exits_min.any() and not c.slot_admitted.any()
    # The venue-1 event carried an unknown kind: nothing but its day moved.
    assert c.day.tolist() == [DAY, DAY]


def test_event_arrays_must_have_one_length() -> None:
    c = CapacityCounters(1)
    with pytest.raises(ValueError, match="length"):
        c.apply_batch([0, 0], [DAY], [0], [ENTRY], [-1])


def test_a_batch_is_one_kernel_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    kernel = counters_mod._apply_kernel

    def counting(*args: Any) -> None:
        calls.append(len(args[4]))
        kernel(*args)

    monkeypatch.setattr(counters_mod, "_apply_kernel", counting)
    c = CapacityCounters(2)
    n = 500
    c.apply_batch(np.arange(n) % 2, [DAY] * n, [600] * n, [ENTRY] * n, [-1] * n)
    assert calls == [n]
    assert c.entries_today.tolist() == [250, 250]


# -- persistence and start-up ---------------------------------------------------------------------


def test_snapshot_round_trip() -> None:
    c = _busy(True)
    c.set_capacity(0, 80, 900)
    copy = CapacityCounters.restore(c.snapshot())
    assert (copy.n_venues, copy.max_slots) == (1, 2)
    for name in (
        "day", "occupancy", "entries_today", "exits_today", "entries_min", "exits_min",
        "slot_admitted", "slot_reserved", "instant_cap", "daily_cap", "carry",
    ):  # fmt: skip
        assert np.array_equal(getattr(copy, name), getattr(c, name)), name
    assert copy.rates(0, 602) == c.rates(0, 602)
    # The copy is independent: changing it leaves the original alone.
    copy.apply_batch([0], [DAY], [603], [ENTRY], [-1])
    assert int(c.occupancy[0]) == 2 and int(copy.occupancy[0]) == 3


def test_copy_is_independent_and_equal() -> None:
    c = _busy(True)
    twin = c.copy()
    assert twin.snapshot() == c.snapshot()
    twin.rollover(0, DAY + 1)
    assert int(c.day[0]) == DAY


def test_snapshot_is_compact() -> None:
    c = CapacityCounters(50)
    c.apply_batch([3], [DAY], [600], [ENTRY], [-1])
    # 50 venues x 2 x 1444 int32 minutes is 577 kB raw; mostly zeros.
    assert len(c.snapshot()) < 10_000


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"PGC1", id="truncated-header"),
        pytest.param(b"NOPE" + bytes(8), id="bad-magic"),
        pytest.param(b"PGC1" + bytes(8), id="zero-venues"),
    ],
)
def test_restore_rejects_garbage(blob: bytes) -> None:
    with pytest.raises(ValueError):
        CapacityCounters.restore(blob)


def test_restore_rejects_a_truncated_or_mismatched_body() -> None:
    blob = _busy(False).snapshot()
    with pytest.raises(ValueError):
        CapacityCounters.restore(blob[:-5])
    other = CapacityCounters(2, max_slots=2).snapshot()
    with pytest.raises(ValueError, match="size"):
        CapacityCounters.restore(blob[:12] + other[12:])


def test_no_compilation_after_warm() -> None:
    warm()
    compiled = kernel_signature_counts()
    assert all(n >= 1 for n in compiled.values()), compiled
    c = CapacityCounters(4, max_slots=3)
    # Whatever integer types the shard hands over, the kernels see one signature.
    c.apply_batch([0, 1], [DAY, DAY], [1, 2], [ENTRY, EXIT], [0, -1])
    c.apply_batch(
        np.array([2], np.int64), np.array([DAY], np.uint32), np.array([5], np.int16),
        np.array([ENTRY], np.int64), np.array([1], np.int64),
    )  # fmt: skip
    c.rollover(np.int32(0), np.int64(DAY + 1))
    c.rates(np.int64(1), np.int16(5))
    c.rates_all(np.array([1, 2, 3, 4], dtype=np.int64))
    c.rates_all(7)
    assert kernel_signature_counts() == compiled


def test_constructor_rejects_empty_shapes() -> None:
    with pytest.raises(ValueError):
        CapacityCounters(0)
    with pytest.raises(ValueError):
        CapacityCounters(1, max_slots=0)
