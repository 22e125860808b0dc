"""Reservation time slots of a venue: which slots are current, which has room, how to name one.

Pure functions over `core.models.Slot` ([start_min, end_min) local minutes). Reserved counts come
either as a mapping by slot id or as a sequence in the venue's slot order (a row of
`CapacityCounters.slot_reserved`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.clock import fmt_minute
from core.models import Slot


def current_slot_ids(slots: Sequence[Slot], minute: int, before: int, after: int) -> list[str]:
    """Ids of the slots whose [start - before, end + after) contains `minute`, in slot order.

    A reservation is honoured from `before` minutes ahead of its slot to `after` minutes past it,
    so with tolerances two neighbouring slots can both be current.
    """
    return [s.slot_id for s in slots if s.start_min - before <= minute < s.end_min + after]


def can_reserve(capacity: int, reserved: int) -> bool:
    """True while a slot of `capacity` places has one left (capacity 0 = closed for booking)."""
    return reserved < capacity


def next_free_slot(
    slots: Sequence[Slot], minute: int, reserved_counts: Mapping[str, int] | Sequence[int] | Any
) -> Slot | None:
    """The earliest-starting slot still running or yet to start at `minute` that has room.

    `reserved_counts` maps slot id to reservations held, or lists them in `slots` order (a numpy
    row works); a slot missing from it has none.
    """
    open_slots = [
        (s, _reserved(reserved_counts, i, s)) for i, s in enumerate(slots) if minute < s.end_min
    ]
    for slot, reserved in sorted(open_slots, key=lambda pair: pair[0].start_min):
        if can_reserve(slot.capacity, reserved):
            return slot
    return None


def slot_label(slot: Slot) -> str:
    """The slot as a gate display shows it: "14:00-16:00"."""
    return f"{fmt_minute(slot.start_min)}-{fmt_minute(slot.end_min)}"


def _reserved(counts: Mapping[str, int] | Sequence[int] | Any, index: int, slot: Slot) -> int:
    if isinstance(counts, Mapping):
        return int(counts.get(slot.slot_id, 0))
    return int(counts[index]) if index < len(counts) else 0


__all__ = ["can_reserve", "current_slot_ids", "next_free_slot", "slot_label"]
