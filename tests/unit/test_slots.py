"""core.slots: current slots with tolerance, the next slot with room, labels, the capacity check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from core.models import Slot
from core.slots import can_reserve, current_slot_ids, next_free_slot, slot_label

AM = Slot("am", 540, 660, 2)  # 09:00-11:00
NOON = Slot("noon", 660, 780, 2)  # 11:00-13:00
PM = Slot("pm", 840, 960, 1)  # 14:00-16:00
SLOTS = (AM, NOON, PM)


@pytest.mark.parametrize(
    ("minute", "before", "after", "expected"),
    [
        pytest.param(480, 15, 30, [], id="early-morning-none"),
        pytest.param(524, 15, 30, [], id="16-min-before-am"),
        pytest.param(525, 15, 30, ["am"], id="15-min-before-am"),
        pytest.param(540, 0, 0, ["am"], id="am-starts-no-tolerance"),
        pytest.param(539, 0, 0, [], id="minute-before-am-no-tolerance"),
        pytest.param(659, 0, 0, ["am"], id="last-minute-of-am"),
        pytest.param(660, 0, 0, ["noon"], id="end-is-exclusive"),
        pytest.param(660, 15, 30, ["am", "noon"], id="tolerances-overlap-neighbours"),
        pytest.param(689, 15, 30, ["am", "noon"], id="last-after-minute-of-am"),
        pytest.param(690, 15, 30, ["noon"], id="after-tolerance-over"),
        pytest.param(815, 15, 30, [], id="gap-between-noon-and-pm"),
        pytest.param(825, 15, 30, ["pm"], id="pm-early-arrival"),
        pytest.param(989, 15, 30, ["pm"], id="pm-late-arrival"),
        pytest.param(990, 15, 30, [], id="after-the-last-slot"),
    ],
)
def test_current_slot_ids(minute: int, before: int, after: int, expected: list[str]) -> None:
    assert current_slot_ids(SLOTS, minute, before, after) == expected


def test_current_slot_ids_without_slots() -> None:
    assert current_slot_ids((), 600, 15, 30) == []


@pytest.mark.parametrize(
    ("minute", "reserved", "expected"),
    [
        pytest.param(480, {}, "am", id="before-opening-first-slot"),
        pytest.param(600, {}, "am", id="running-slot-counts"),
        pytest.param(600, {"am": 2}, "noon", id="running-slot-full"),
        pytest.param(480, {"am": 2, "noon": 2}, "pm", id="skips-every-full-slot"),
        pytest.param(480, {"am": 2, "noon": 2, "pm": 1}, None, id="all-full"),
        pytest.param(660, {}, "noon", id="am-ended-at-its-end-minute"),
        pytest.param(800, {}, "pm", id="in-a-gap-next-one"),
        pytest.param(960, {}, None, id="day-over"),
        pytest.param(480, {"am": 1}, "am", id="one-place-left"),
        pytest.param(480, {"other": 9}, "am", id="unknown-ids-ignored"),
        pytest.param(480, [2, 1, 0], "noon", id="sequence-in-slot-order"),
        pytest.param(480, np.array([2, 2, 0], dtype=np.int32), "pm", id="numpy-row"),
        pytest.param(480, [2], "noon", id="short-sequence-missing-is-zero"),
    ],
)
def test_next_free_slot(
    minute: int, reserved: Mapping[str, int] | Sequence[int], expected: str | None
) -> None:
    slot = next_free_slot(SLOTS, minute, reserved)
    assert (slot.slot_id if slot else None) == expected


def test_next_free_slot_takes_the_earliest_start_whatever_the_order() -> None:
    shuffled = (PM, NOON, AM)
    slot = next_free_slot(shuffled, 480, {})
    assert slot is AM
    # A sequence of counts follows the order of the slots given, not the start times.
    slot = next_free_slot(shuffled, 480, [0, 0, 2])
    assert slot is NOON


def test_next_free_slot_closed_slot_is_never_free() -> None:
    assert next_free_slot((Slot("x", 0, 60, 0),), 0, {}) is None


@pytest.mark.parametrize(
    ("slot", "label"),
    [
        pytest.param(Slot("a", 840, 960, 1), "14:00-16:00", id="afternoon"),
        pytest.param(Slot("b", 0, 90, 1), "00:00-01:30", id="midnight-start"),
        pytest.param(Slot("c", 1365, 1440, 1), "22:45-24:00", id="ends-at-midnight"),
        pytest.param(Slot("d", 545, 605, 1), "09:05-10:05", id="odd-minutes"),
    ],
)
def test_slot_label(slot: Slot, label: str) -> None:
    assert slot_label(slot) == label


@pytest.mark.parametrize(
    ("capacity", "reserved", "expected"),
    [
        pytest.param(2, 0, True, id="empty"),
        pytest.param(2, 1, True, id="last-place"),
        pytest.param(2, 2, False, id="full"),
        pytest.param(2, 3, False, id="overbooked"),
        pytest.param(0, 0, False, id="capacity-zero-closed"),
    ],
)
def test_can_reserve(capacity: int, reserved: int, expected: bool) -> None:
    assert can_reserve(capacity, reserved) is expected
