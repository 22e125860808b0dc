"""VenueBook: a shard's venues at run time: quotas, pause flags, reservations and live capacity.

Owned by exactly one VenueShard. Changes are staged into the batch's `BatchWrites` and reach
memory only through `apply_committed`, after the LMDB commit.

Occupancy is counted (entries minus exits) at venues with exit readers and estimated from recent
entries and the venue's stay model (`core.occupancy`) at the others; the capacity check, the alert
level and the status all read it through `CapacityCounters.live_occupancy`.

Reservations are kept RESERVATION_KEEP_DAYS after their day (GetPass shows that much history).
Older ones leave memory when their venue's day rolls over and LMDB with the shard's next write
(`take_stale`; at start, `VenueShard` drops them in one transaction): nothing decides on a
past day's reservation, so memory may go first. Without this, every booking ever made would stay
in memory and be read again at every start.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from actors.shard.store import BatchWrites, ShardStore
from core.capacity import alert_level
from core.clock import LocalTime
from core.counters import MINUTES_PER_DAY, TAIL, CapacityCounters
from core.keys import reservation_key, split_reservation_key
from core.models import AlertThresholds, CapacityView, PassRecord, Slot, Venue
from core.occupancy import survival_table
from core.records import VenueState
from core.slots import current_slot_ids, next_free_slot, slot_label

RESERVED, CONSUMED = 0, 1
EV_RESERVE, EV_CANCEL = 4, 5

_NO_VIEW = CapacityView()
RESERVATION_KEEP_DAYS = 7


class Running:
    """Occupancy and entries-today per venue as the batch goes, clamped like the counters."""

    __slots__ = ("_book", "next_free", "state")

    def __init__(self, book: VenueBook) -> None:
        self._book = book
        self.state: dict[str, list[int]] = {}
        # Per venue, the next slot with room: reservations do not change inside a batch.
        self.next_free: dict[str, str | None] = {}

    def get(self, venue_id: str, minute: int) -> list[int]:
        s = self.state.get(venue_id)
        if s is None:
            s = self._book.live(venue_id, minute)
            self.state[venue_id] = s
        return s

    def add(self, venue_id: str, entered: bool, exited: bool) -> None:
        # The capacity check (`get`) of the same item came first and filled the state.
        s = self.state.get(venue_id)
        if s is None:
            return
        if entered:
            # An entry counts in full at once in an estimate too (S(0) = 1).
            s[0] += 1
            s[1] += 1
        elif exited and not self._book.estimated(venue_id):
            s[0] = max(0, s[0] - 1)


class VenueBook:
    def __init__(self, venues: list[Venue], counters: CapacityCounters) -> None:
        self.base = {v.venue_id: v for v in venues}
        self.effective: dict[str, Venue] = dict(self.base)
        self.index = {vid: i for i, vid in enumerate(sorted(self.base))}
        self.state: dict[str, VenueState] = {}
        self.reservations: dict[tuple[str, int, str], dict[str, int]] = {}
        # The same reservations by pass, for GetPass: pass_id -> {(venue_id, day, slot_id)}.
        self._by_pass: dict[str, set[tuple[str, int, str]]] = {}
        # LMDB keys of reservations dropped from memory, to delete with the next write.
        self._stale: list[bytes] = []
        self.counters = counters
        self._sync_counters()
        self._sync_stay()

    def _sync_stay(self) -> None:
        """Stay models come from configuration only (a quota change keeps them)."""
        width = TAIL + MINUTES_PER_DAY
        for vid, i in self.index.items():
            model = self.base[vid].stay_model
            if model is None:
                self.counters.set_stay(i, None)
            else:
                table = survival_table(model.typical_stay_min, width)
                self.counters.set_stay(i, table, model.everyone_out_min)

    def _sync_counters(self) -> None:
        for vid, i in self.index.items():
            v = self.effective[vid]
            self.counters.set_capacity(i, v.instant_capacity, v.daily_capacity)
            self.counters.carry[i] = v.carry_occupancy

    def set_counters(self, counters: CapacityCounters) -> None:
        self.counters = counters
        self._sync_counters()
        self._sync_stay()

    def estimated(self, venue_id: str) -> bool:
        venue = self.base.get(venue_id)
        return venue is not None and venue.stay_model is not None

    def venue(self, venue_id: str) -> Venue | None:
        return self.effective.get(venue_id)

    def paused(self, venue_id: str) -> bool:
        state = self.state.get(venue_id)
        return state is not None and state.paused

    def unmatched_exits(self, venue_id: str, day: int) -> int:
        state = self.state.get(venue_id)
        return state.unmatched_exits if state is not None and state.unmatched_day == day else 0

    # -- live capacity --------------------------------------------------------------------------

    def roll_day(self, venue_id: str, day: int) -> None:
        i = self.index[venue_id]
        if int(self.counters.day[i]) < day:
            self.counters.rollover(i, day)
            self._load_reserved(venue_id, i, day)
            self.drop_reservations(venue_id, day - RESERVATION_KEEP_DAYS)

    def drop_reservations(self, venue_id: str, before_day: int) -> None:
        """Forgets the venue's reservations of days before `before_day`; their LMDB keys wait in
        `take_stale`."""
        old = [k for k in self.reservations if k[0] == venue_id and k[1] < before_day]
        for vid, day, slot_id in old:
            for pass_id in list(self.reservations[(vid, day, slot_id)]):
                self._stale.append(reservation_key(vid, day, slot_id, pass_id))
                self._forget(vid, day, slot_id, pass_id)
            del self.reservations[(vid, day, slot_id)]

    def take_stale(self) -> list[bytes]:
        """The LMDB keys of reservations dropped from memory since the last call."""
        stale, self._stale = self._stale, []
        return stale

    def requeue_stale(self, keys: list[bytes]) -> None:
        """Keys taken whose delete could not be written: for the next write."""
        self._stale.extend(keys)

    def _load_reserved(self, venue_id: str, i: int, day: int) -> None:
        """A new day's slot rows start from the reservations already booked for it."""
        for s_idx, slot in enumerate(self.effective[venue_id].slots):
            n = self.reserved_count(venue_id, day, slot.slot_id)
            if n and s_idx < self.counters.slot_reserved.shape[1]:
                self.counters.slot_reserved[i, s_idx] = n

    def status(self, venue: Venue, local: LocalTime, now_ms: int) -> dict[str, Any]:
        """The live figures of one venue, straight from the counters."""
        i = self.index[venue.venue_id]
        c = self.counters
        occ, today = c.live_occupancy(i, local.minute), int(c.entries_today[i])
        epm, mtf = c.rates(i, local.minute)
        model = venue.stay_model
        slots = [
            {
                "slot_id": s.slot_id,
                "capacity": s.capacity,
                "reserved": self.reserved_count(venue.venue_id, local.day, s.slot_id),
                "admitted": int(c.slot_admitted[i, k]) if k < c.slot_admitted.shape[1] else 0,
            }
            for k, s in enumerate(venue.slots)
        ]
        return {
            "venue_id": venue.venue_id,
            "city": venue.city,
            "occupancy": occ,
            "occupancy_estimated": model is not None,
            "typical_stay_minutes": 0 if model is None else model.typical_stay_min,
            "entries_today": today,
            "exits_today": int(c.exits_today[i]),
            "unmatched_exits_today": self.unmatched_exits(venue.venue_id, local.day),
            "daily_capacity": venue.daily_capacity,
            "instant_capacity": venue.instant_capacity,
            "alert_level": int(
                alert_level(occ, venue.instant_capacity, today, venue.daily_capacity, venue.alerts)
            ),
            "paused": self.paused(venue.venue_id),
            "entries_per_minute": float(epm),
            "minutes_to_full": float(mtf),
            "slots": slots,
            "as_of_ms": now_ms,
        }

    def live(self, venue_id: str, minute: int) -> list[int]:
        """[occupancy (estimated or counted), entries today] at `minute` of the venue's day."""
        i = self.index[venue_id]
        return [self.counters.live_occupancy(i, minute), int(self.counters.entries_today[i])]

    def capacity_view(
        self,
        venue: Venue,
        pass_: PassRecord | None,
        local: LocalTime | None,
        running: Running,
        writes: BatchWrites,
    ) -> CapacityView:
        if local is None:
            return _NO_VIEW
        occ, today = running.get(venue.venue_id, local.minute)
        alert = alert_level(occ, venue.instant_capacity, today, venue.daily_capacity, venue.alerts)
        paused = self.paused(venue.venue_id)
        if not venue.slots:
            return CapacityView(occ, today, paused, alert)
        reserved, reentry = self._current_reservation(venue, pass_, local, writes)
        nxt = held = None
        if reserved is None and reentry is None:
            if venue.venue_id in running.next_free:
                nxt = running.next_free[venue.venue_id]
            else:
                nxt = self._next_free_label(venue, local)
                running.next_free[venue.venue_id] = nxt
            held = self._held_later(venue, pass_, local)
        return CapacityView(occ, today, paused, alert, reserved, nxt, reentry, held)

    def _current_reservation(
        self, venue: Venue, pass_: PassRecord | None, local: LocalTime, writes: BatchWrites
    ) -> tuple[str | None, str | None]:
        """(unused, used) reservations of this pass for a slot whose window contains now.

        A used one wins: the holder entered with it and re-enters within its window, so an
        unused reservation of a neighbouring slot is kept for when that one is needed."""
        if pass_ is None:
            return None, None
        before = venue.reservation_tolerance_before_min
        after = venue.reservation_tolerance_after_min
        unused = None
        for sid in current_slot_ids(venue.slots, local.minute, before, after):
            status = self._status(venue.venue_id, local.day, sid, pass_.pass_id, writes)
            if status == CONSUMED:
                return None, sid
            if status == RESERVED and unused is None:
                unused = sid
        return unused, None

    def _status(
        self, venue_id: str, day: int, slot_id: str, pass_id: str, writes: BatchWrites
    ) -> int | None:
        """The reservation's state as this batch leaves it (an entry earlier in the batch may
        have consumed it), or None when the pass holds none."""
        holders = self.reservations.get((venue_id, day, slot_id))
        if holders is None or pass_id not in holders:
            return None
        key = reservation_key(venue_id, day, slot_id, pass_id)
        return writes.reservations_put.get(key, holders[pass_id])

    def _held_later(self, venue: Venue, pass_: PassRecord | None, local: LocalTime) -> Slot | None:
        """This pass's earliest unused reservation today for a slot whose window opens later."""
        if pass_ is None:
            return None
        best = None
        opens_after = local.minute + venue.reservation_tolerance_before_min
        for slot in venue.slots:
            if slot.start_min <= opens_after:
                continue  # its window is open (handled by `_current_reservation`) or over
            if best is not None and best.start_min <= slot.start_min:
                continue
            holders = self.reservations.get((venue.venue_id, local.day, slot.slot_id))
            if holders is not None and holders.get(pass_.pass_id) == RESERVED:
                best = slot
        return best

    def _next_free_label(self, venue: Venue, local: LocalTime) -> str | None:
        counts = {
            s.slot_id: len(self.reservations.get((venue.venue_id, local.day, s.slot_id), ()))
            for s in venue.slots
        }
        slot = next_free_slot(venue.slots, local.minute, counts)
        return None if slot is None else slot_label(slot)

    def slot_index(self, venue_id: str, slot_id: str) -> int:
        for i, s in enumerate(self.effective[venue_id].slots):
            if s.slot_id == slot_id:
                return i
        return -1

    # -- reservations ---------------------------------------------------------------------------

    def consume_reservation(
        self, venue_id: str, day: int, slot_id: str, pass_id: str, writes: BatchWrites
    ) -> int:
        writes.reservations_put[reservation_key(venue_id, day, slot_id, pass_id)] = CONSUMED
        return self.slot_index(venue_id, slot_id)

    def restore_reservation(
        self, venue_id: str, day: int, slot_idx: int, pass_id: str, writes: BatchWrites
    ) -> None:
        slots = self.effective[venue_id].slots
        if 0 <= slot_idx < len(slots):
            key = reservation_key(venue_id, day, slots[slot_idx].slot_id, pass_id)
            writes.reservations_put[key] = RESERVED

    def reserved_count(self, venue_id: str, day: int, slot_id: str) -> int:
        return len(self.reservations.get((venue_id, day, slot_id), ()))

    def holds(self, venue_id: str, day: int, slot_id: str, pass_id: str) -> bool:
        return pass_id in self.reservations.get((venue_id, day, slot_id), {})

    def held_status(self, venue_id: str, day: int, slot_id: str, pass_id: str) -> int | None:
        """RESERVED or CONSUMED when the pass holds this reservation, else None."""
        return self.reservations.get((venue_id, day, slot_id), {}).get(pass_id)

    def held_by(self, pass_id: str) -> list[tuple[str, int, str, int]]:
        """(venue_id, day, slot_id, status) of every reservation the pass holds here."""
        out = []
        for venue_id, day, slot_id in sorted(self._by_pass.get(pass_id, ())):
            status = self.held_status(venue_id, day, slot_id, pass_id)
            if status is not None:
                out.append((venue_id, day, slot_id, status))
        return out

    def find_slot(self, venue_id: str, slot_id: str) -> Slot | None:
        venue = self.effective.get(venue_id)
        if venue is None:
            return None
        return next((s for s in venue.slots if s.slot_id == slot_id), None)

    # -- quotas ---------------------------------------------------------------------------------

    def stage_state(self, venue_id: str, writes: BatchWrites, **changes: Any) -> None:
        state = writes.venues.get(venue_id) or self.state.get(venue_id) or VenueState()
        writes.venues[venue_id] = msgspec.structs.replace(state, **changes)

    def stage_unmatched_exit(self, venue_id: str, day: int, writes: BatchWrites) -> None:
        state = writes.venues.get(venue_id) or self.state.get(venue_id) or VenueState()
        count = state.unmatched_exits if state.unmatched_day == day else 0
        self.stage_state(venue_id, writes, unmatched_day=day, unmatched_exits=count + 1)

    def _effective(self, venue_id: str, state: VenueState) -> Venue:
        base = self.base[venue_id]
        slot_caps = state.slots
        slots = tuple(
            dataclasses.replace(s, capacity=int(slot_caps.get(s.slot_id, s.capacity)))
            for s in base.slots
        )
        return dataclasses.replace(
            base,
            instant_capacity=base.instant_capacity if state.instant is None else state.instant,
            daily_capacity=base.daily_capacity if state.daily is None else state.daily,
            slots=slots,
            alerts=AlertThresholds(*state.alerts) if state.alerts else base.alerts,
        )

    # -- commit and restore ---------------------------------------------------------------------

    def apply_committed(self, writes: BatchWrites) -> None:
        for venue_id, state in writes.venues.items():
            self.state[venue_id] = state
            self.effective[venue_id] = self._effective(venue_id, state)
        if writes.venues:
            self._sync_counters()
        for key, status in writes.reservations_put.items():
            venue_id, day, slot_id, pass_id = split_reservation_key(key)
            self.reservations.setdefault((venue_id, day, slot_id), {})[pass_id] = status
            self._by_pass.setdefault(pass_id, set()).add((venue_id, day, slot_id))
        for key in writes.reservations_del:
            self._forget(*split_reservation_key(key))

    def _forget(self, venue_id: str, day: int, slot_id: str, pass_id: str) -> None:
        """One reservation out of memory: its slot's holders and the pass's index."""
        holders = self.reservations.get((venue_id, day, slot_id))
        if holders is not None:
            holders.pop(pass_id, None)
        held = self._by_pass.get(pass_id)
        if held is not None:
            held.discard((venue_id, day, slot_id))
            if not held:
                del self._by_pass[pass_id]

    def restore(self, store: ShardStore) -> None:
        writes = BatchWrites()
        for venue_id, state in store.iter_venues():
            if venue_id in self.base:
                writes.venues[venue_id] = state
        for key, status in store.iter_reservations():
            writes.reservations_put[key] = status
        self.apply_committed(writes)
