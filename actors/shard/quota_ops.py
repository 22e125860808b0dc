"""The shard's quota side: reservations, quota changes, pause/resume and live venue status.

Reservations follow the one rule of `core.reservations` (the gate follows it too, through
`VenueBook.capacity_view`): a used reservation admits its holder again within its slot's window,
is never cancelled, and Reserve says so instead of "already reserved".

A mixin of VenueShard: the shard stages one call at a time, each without a pause, on its event loop
(`actors.shard.pipeline`), so a slot's capacity check and its booking cannot interleave with
another caller's.
"""

from __future__ import annotations

from typing import Any

from actors.shard.store import BatchWrites
from actors.shard.venues import CONSUMED, EV_CANCEL, EV_RESERVE, RESERVED
from core import reservations as resv
from core.clock import LocalTime, local_time
from core.keys import reservation_key
from core.limits import echo
from core.models import PassStatus
from core.quota import quota_problems


class QuotaOps:
    # Provided by VenueShard.
    book: Any
    store: Any
    catalog: Any
    counters: Any
    _clock: Any
    _apply_events: Any
    _write: Any

    def _local(self, venue_id: str) -> LocalTime:
        venue = self.book.venue(venue_id)
        local = local_time(venue.tz, self._clock())
        self.book.roll_day(venue_id, local.day)
        return local

    def reserve(
        self, pass_id: str, venue_id: str, day: int, slot_id: str
    ) -> tuple[bool, str, int, str]:
        """Books a slot under the rule of `core.reservations`; answers (confirmed, reason,
        places left, the pass's reservation state)."""
        problem = self._reserve_problem(pass_id, venue_id, day, slot_id)
        if problem is not None:
            return False, problem, self._remaining(venue_id, day, slot_id), resv.NONE
        venue, slot = self.book.venue(venue_id), self.book.find_slot(venue_id, slot_id)
        local = self._local(venue_id)
        held = self.book.held_status(venue_id, day, slot_id, pass_id)
        left = self._remaining(venue_id, day, slot_id)
        if held == CONSUMED:
            usable = not resv.window_closed(venue, slot, day, local)
            return usable, resv.used_message(venue, slot, day, local), left, resv.CONSUMED
        if resv.window_closed(venue, slot, day, local):
            # The gate would not honour it any more: nothing to book, an unused one expired.
            return False, resv.SLOT_OVER, left, resv.EXPIRED if held is not None else resv.NONE
        if held is not None:
            return True, resv.ALREADY_RESERVED, left, resv.RESERVED
        if left <= 0:
            return False, resv.SLOT_FULL, 0, resv.NONE
        self._commit_reservation(venue_id, day, slot_id, pass_id, RESERVED)
        return True, resv.BOOKED, self._remaining(venue_id, day, slot_id), resv.RESERVED

    def cancel_reservation(
        self, pass_id: str, venue_id: str, day: int, slot_id: str
    ) -> tuple[bool, str, int, str]:
        """Cancels an unused reservation; a used one stays (its place was taken)."""
        if self.book.venue(venue_id) is None or self.book.find_slot(venue_id, slot_id) is None:
            return False, "unknown venue or slot", 0, resv.NONE
        held = self.book.held_status(venue_id, day, slot_id, pass_id)
        left = self._remaining(venue_id, day, slot_id)
        if held is None:
            return False, resv.NOTHING_TO_CANCEL, left, resv.NONE
        if held == CONSUMED:
            return False, resv.USED_NO_CANCEL, left, resv.CONSUMED
        self._commit_reservation(venue_id, day, slot_id, pass_id, None)
        return True, resv.CANCELLED, self._remaining(venue_id, day, slot_id), resv.NONE

    def reservations_of(self, pass_id: str) -> list[tuple[str, int, str, str, int, int]]:
        """(venue_id, day, slot_id, state, slot start, slot end) of every reservation the pass
        holds at this shard's venues, states as `core.reservations` names them."""
        out = []
        for venue_id, day, slot_id, status in self.book.held_by(pass_id):
            venue, slot = self.book.venue(venue_id), self.book.find_slot(venue_id, slot_id)
            if venue is None or slot is None:
                continue  # a slot since removed from the config
            state = resv.state(status == CONSUMED, venue, slot, day, self._local(venue_id))
            out.append((venue_id, day, slot_id, state, slot.start_min, slot.end_min))
        return out

    def _reserve_problem(self, pass_id: str, venue_id: str, day: int, slot_id: str) -> str | None:
        if self.book.venue(venue_id) is None:
            return f"unknown venue {echo(venue_id)}"
        if self.book.find_slot(venue_id, slot_id) is None:
            return f"venue has no slot {echo(slot_id)}"
        rec = self.catalog.get(pass_id)
        if rec is None:
            return f"unknown pass {echo(pass_id)}"
        if rec.status != PassStatus.ACTIVE:
            return "pass is not active"
        if day < self._local(venue_id).day:
            return "date is in the past"
        return None

    def _remaining(self, venue_id: str, day: int, slot_id: str) -> int:
        slot = self.book.find_slot(venue_id, slot_id)
        if slot is None:
            return 0
        return max(0, slot.capacity - self.book.reserved_count(venue_id, day, slot_id))

    def _commit_reservation(
        self, venue_id: str, day: int, slot_id: str, pass_id: str, status: int | None
    ) -> None:
        writes = BatchWrites()
        key = reservation_key(venue_id, day, slot_id, pass_id)
        if status is None:
            writes.reservations_del.append(key)
        else:
            writes.reservations_put[key] = status
        self._write(writes)
        self.book.apply_committed(writes)
        if day == self._local(venue_id).day:
            kind = EV_CANCEL if status is None else EV_RESERVE
            slot_idx = self.book.slot_index(venue_id, slot_id)
            self._apply_events([(venue_id, day, 0, kind, slot_idx)])

    # -- quotas and pause -----------------------------------------------------------------------

    def set_quota(
        self,
        venue_id: str,
        daily: int,
        instant: int,
        slot_caps: dict[str, int],
        alerts: tuple[int, int, int] | None,
        allow_overbooking: bool,
    ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
        venue = self.book.base.get(venue_id)
        if venue is None:
            return [("venue_id", f"unknown venue {echo(venue_id)}")], None
        problems = quota_problems(venue, daily, instant, slot_caps, alerts, allow_overbooking)
        if problems:
            return problems, None
        writes = BatchWrites()
        changes: dict[str, Any] = {"daily": daily, "instant": instant, "slots": slot_caps}
        if alerts is not None:
            changes["alerts"] = tuple(alerts)
        self.book.stage_state(venue_id, writes, **changes)
        self._write(writes)
        self.book.apply_committed(writes)
        return [], self.venue_status(venue_id)

    def set_paused(self, venue_id: str, paused: bool) -> dict[str, Any] | None:
        if self.book.venue(venue_id) is None:
            return None
        writes = BatchWrites()
        self.book.stage_state(venue_id, writes, paused=paused)
        self._write(writes)
        self.book.apply_committed(writes)
        return self.venue_status(venue_id)

    def venue_status(self, venue_id: str) -> dict[str, Any] | None:
        venue = self.book.venue(venue_id)
        if venue is None:
            return None
        local = self._local(venue_id)
        return self.book.status(venue, local, self._clock())

    def all_status(self) -> list[dict[str, Any]]:
        rows = []
        for venue_id in self.book.index:
            row = self.venue_status(venue_id)
            if row is not None:
                rows.append(row)
        return rows
