"""The one rule for a pass's reservation of a time slot, which the gate, Reserve, CancelReservation
and GetPass all follow.

A reservation is for (venue, date, slot, pass). It is honoured in the slot's *window*: from the
venue's `before` tolerance ahead of the slot's start to its `after` tolerance past the slot's end.
- **reserved**: booked and not used yet. In its window, an entry uses it and it becomes consumed;
  it may be cancelled.
- **consumed**: an entry used it. Until its window closes the same holder may re-enter with it
  (the venue's anti-passback still applies) and needs no new booking; it cannot be cancelled
  (the place was used), and Reserve of the same slot says it was used and until when re-entry
  works. Another slot needs a new booking. An annulled entry turns it back into reserved.
- **expired**: reserved, never used, and its window has closed: it admits no one any more.
Reserve of a slot whose window has already closed today is refused: the gate would not honour it.

Pure: states and answers from the stored status, the slot, the venue and the local time.
"""

from __future__ import annotations

from core.clock import LocalTime, fmt_minute
from core.models import Slot, Venue

# A reservation's state as the API shows it.
NONE = ""
RESERVED = "reserved"
CONSUMED = "consumed"
EXPIRED = "expired"

# Reserve / CancelReservation answers (the `reason` of a Reservation).
BOOKED = "reserved"
ALREADY_RESERVED = "already reserved"
SLOT_FULL = "slot full"
SLOT_OVER = "this slot is over: reserve a later slot"
NOTHING_TO_CANCEL = "no such reservation"
CANCELLED = "cancelled"
USED_NO_CANCEL = "already used by an entry: a used reservation cannot be cancelled"


def window(venue: Venue, slot: Slot) -> tuple[int, int]:
    """[open, close) local minutes in which a reservation of `slot` is honoured."""
    return (
        slot.start_min - venue.reservation_tolerance_before_min,
        slot.end_min + venue.reservation_tolerance_after_min,
    )


def window_closed(venue: Venue, slot: Slot, day: int, local: LocalTime) -> bool:
    """True once the slot's window on `day` lies wholly before `local`."""
    return day < local.day or (day == local.day and local.minute >= window(venue, slot)[1])


def state(consumed: bool | None, venue: Venue, slot: Slot, day: int, local: LocalTime) -> str:
    """The state of a held reservation (`consumed` None: the pass holds none)."""
    if consumed is None:
        return NONE
    if consumed:
        return CONSUMED
    return EXPIRED if window_closed(venue, slot, day, local) else RESERVED


def used_message(venue: Venue, slot: Slot, day: int, local: LocalTime) -> str:
    """Reserve's answer for a slot whose reservation this pass already used."""
    if window_closed(venue, slot, day, local):
        return "already used by an entry and the slot is over: reserve a later slot"
    until = min(window(venue, slot)[1], 24 * 60)
    return "already used by an entry: re-entry allowed until " + fmt_minute(until)


__all__ = [
    "ALREADY_RESERVED",
    "BOOKED",
    "CANCELLED",
    "CONSUMED",
    "EXPIRED",
    "NONE",
    "NOTHING_TO_CANCEL",
    "RESERVED",
    "SLOT_FULL",
    "SLOT_OVER",
    "USED_NO_CANCEL",
    "state",
    "used_message",
    "window",
    "window_closed",
]
