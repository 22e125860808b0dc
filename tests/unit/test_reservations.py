"""core.reservations, through a VenueShard (no Ray): the gate, Reserve, CancelReservation and the
reservations GetPass shows all follow one rule for a used (consumed) reservation.

The museum of tests/unit/test_shard.py requires a reservation; its slots are am 09:00-11:00 and
noon 11:00-13:00, honoured from 15 minutes before to 30 minutes after. The clock starts at 10:00.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.shard.venue_shard import VenueShard
from actors.shard.venues import RESERVATION_KEEP_DAYS
from core import reservations as resv
from core.keys import split_reservation_key
from core.models import Reason
from tests.unit.test_shard import DAY, NOW_MS, Clock, _annul, _decide, _req, _shard, data_dir

__all__ = ["data_dir"]  # the fixture, imported for pytest

MIN = 60_000
DAY_MS = 86_400_000


def _at(clock: Clock, hour: int, minute: int = 0) -> None:
    clock.ms = NOW_MS + ((hour - 10) * 60 + minute) * MIN


def test_used_reservation_agrees_everywhere(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    assert shard.reserve("P1", "museum", DAY, "am") == (True, resv.BOOKED, 1, resv.RESERVED)
    assert shard.reservations_of("P1") == [("museum", DAY, "am", resv.RESERVED, 540, 660)]
    [entry] = _decide(shard, _req("r1", "museum", "C1"))
    assert entry.allowed
    # Used: Reserve says so and until when it still works; it cannot be cancelled.
    ok, reason, left, state = shard.reserve("P1", "museum", DAY, "am")
    assert (ok, reason, left, state) == (
        True,
        "already used by an entry: re-entry allowed until 11:30",
        1,
        resv.CONSUMED,
    )
    assert shard.cancel_reservation("P1", "museum", DAY, "am") == (
        False,
        resv.USED_NO_CANCEL,
        1,
        resv.CONSUMED,
    )
    assert shard.reservations_of("P1") == [("museum", DAY, "am", resv.CONSUMED, 540, 660)]
    # ...and the gate agrees: the holder re-enters within the window without a new booking.
    _decide(shard, _req("x1", "museum", "C1", exit_=True))
    _at(clock, 11, 29)
    [again] = _decide(shard, _req("r2", "museum", "C1"))
    assert again.allowed
    # Once the window has closed, everyone agrees that a new booking is needed for a later slot.
    _at(clock, 11, 30)
    [later] = _decide(shard, _req("r3", "museum", "C1"))
    assert later.reason == Reason.RESERVATION_REQUIRED
    assert "11:00-13:00" in later.message
    ok, reason, _, state = shard.reserve("P1", "museum", DAY, "am")
    assert (ok, state) == (False, resv.CONSUMED) and "reserve a later slot" in reason
    assert shard.reserve("P1", "museum", DAY, "noon")[::3] == (True, resv.RESERVED)
    [noon] = _decide(shard, _req("r4", "museum", "C1"))
    assert noon.allowed


def test_re_entry_consumes_nothing_and_its_annul_restores_nothing(data_dir: Path) -> None:
    shard = _shard(data_dir)
    shard.reserve("P2", "museum", DAY, "am")
    i = shard.book.index["museum"]
    [first, again] = _decide(shard, _req("r1", "museum", "C2"), _req("r2", "museum", "C2"))
    assert first.allowed and again.allowed  # the second in the same batch: a re-entry
    assert int(shard.counters.slot_admitted[i, 0]) == 1
    assert _annul(shard, "r2", "museum", "museum-g1", "C2")[0]
    assert shard.reservations_of("P2")[0][3] == resv.CONSUMED
    assert _annul(shard, "r1", "museum", "museum-g1", "C2")[0]
    assert shard.reservations_of("P2")[0][3] == resv.RESERVED  # the consuming entry undone


def test_used_reservation_of_one_slot_keeps_the_next_one_unused(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    shard.reserve("P3", "museum", DAY, "am")
    shard.reserve("P3", "museum", DAY, "noon")
    _decide(shard, _req("r1", "museum", "C3"))
    _at(clock, 11, 10)  # both windows open: the used one readmits, noon stays for later
    [again] = _decide(shard, _req("r2", "museum", "C3"))
    assert again.allowed
    states = {row[2]: row[3] for row in shard.reservations_of("P3")}
    assert states == {"am": resv.CONSUMED, "noon": resv.RESERVED}


def test_gate_names_the_later_slot_the_pass_holds_instead_of_asking_for_one(
    data_dir: Path,
) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    assert shard.reserve("P4", "museum", DAY, "noon")[0]
    [early] = _decide(shard, _req("r1", "museum", "C4"))
    assert (early.reason, early.message) == (
        Reason.RESERVATION_REQUIRED,
        "reserved 11:00-13:00: entry from 10:45",
    )
    _at(clock, 10, 45)
    [on_time] = _decide(shard, _req("r2", "museum", "C4"))
    assert on_time.allowed


def test_unused_reservation_of_a_past_slot_expires(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    shard.reserve("P5", "museum", DAY, "am")
    _at(clock, 12)
    assert shard.reservations_of("P5") == [("museum", DAY, "am", resv.EXPIRED, 540, 660)]
    assert shard.reserve("P5", "museum", DAY, "am") == (False, resv.SLOT_OVER, 1, resv.EXPIRED)
    assert shard.reserve("P6", "museum", DAY, "am") == (False, resv.SLOT_OVER, 1, resv.NONE)
    # An unused one may still be cancelled: that frees nothing anyone could use, and harms none.
    assert shard.cancel_reservation("P5", "museum", DAY, "am")[::3] == (True, resv.NONE)


def test_reservations_survive_a_restart_with_their_state(data_dir: Path) -> None:
    shard = _shard(data_dir)
    shard.reserve("P7", "museum", DAY, "am")
    shard.reserve("P7", "museum", DAY + 1, "noon")
    _decide(shard, _req("r1", "museum", "C7"))
    shard.close()
    again = _shard(data_dir)
    assert again.reservations_of("P7") == [
        ("museum", DAY, "am", resv.CONSUMED, 540, 660),
        ("museum", DAY + 1, "noon", resv.RESERVED, 660, 780),
    ]
    assert again.reservations_of("P8") == []


def _days_held(shard: VenueShard, pass_id: str) -> list[int]:
    return [day for _, day, *_ in shard.reservations_of(pass_id)]


def _days_stored(shard: VenueShard) -> list[int]:
    return sorted(split_reservation_key(key)[1] for key, _ in shard.store.iter_reservations())


def test_a_week_after_its_day_a_reservation_leaves_memory_and_lmdb(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    shard.reserve("P1", "museum", DAY, "am")
    shard.reserve("P1", "museum", DAY + 2, "am")
    clock.ms = NOW_MS + (RESERVATION_KEEP_DAYS + 1) * DAY_MS  # DAY + 8, 10:00
    [entry] = _decide(shard, _req("r1", "museum", "C1"))  # the day rolls; this batch writes
    assert entry.reason == Reason.RESERVATION_REQUIRED  # nothing held for today
    assert _days_held(shard, "P1") == [DAY + 2]
    assert _days_stored(shard) == [DAY + 2]
    shard.close()
    assert _days_held(_shard(data_dir, clock), "P1") == [DAY + 2]


def test_a_start_drops_the_reservations_past_their_keep(data_dir: Path) -> None:
    clock = Clock()
    shard = _shard(data_dir, clock)
    shard.reserve("P1", "museum", DAY, "am")
    shard.reserve("P2", "museum", DAY + 1, "noon")
    shard.close()
    clock.ms = NOW_MS + (RESERVATION_KEEP_DAYS + 1) * DAY_MS
    again = _shard(data_dir, clock)
    assert (_days_held(again, "P1"), _days_held(again, "P2")) == ([], [DAY + 1])
    assert _days_stored(again) == [DAY + 1]


@pytest.mark.parametrize(
    ("minute", "closed"),
    [
        pytest.param(10 * 60, False, id="in-slot"),
        pytest.param(11 * 60 + 29, False, id="in-tolerance"),
        pytest.param(11 * 60 + 30, True, id="window-closed"),
    ],
)
def test_window_closed(minute: int, closed: bool) -> None:
    from core.clock import LocalTime
    from tests.unit.test_shard import _province

    museum = _province().venues["museum"]
    am = museum.slots[0]
    assert resv.window(museum, am) == (525, 690)
    assert resv.window_closed(museum, am, DAY, LocalTime(DAY, minute, 3)) is closed
    assert resv.window_closed(museum, am, DAY - 1, LocalTime(DAY, 0, 3)) is True
