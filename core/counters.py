"""Live capacity counters of a shard's venues: numpy arrays updated by numba kernels.

One row per venue (the shard's venue index). A row holds the venue's current local day: entries
and exits per minute, occupancy, entries and exits today, and per slot the admitted entries and
the reservations held for that day. The shard applies each batch's events with ONE kernel call
(`apply_batch`); nothing here loops over events in Python.

Layout. The figures live in four small blocks so that a kernel takes four arrays, not twelve; the
public names (`day`, `occupancy`, `entries_min`, ...) are writable views into them:

- `_rows`    int32[4, V]          day ordinal, occupancy, entries today, exits today
- `_minutes` int32[2, V, 4+1440]  entries / exits per minute; columns 0..3 hold minutes
                                  1436..1439 of the previous day (so the 5-minute rate does not
                                  drop to zero at midnight), column 4+m holds minute m
- `_slots`   int32[2, V, S]       admitted / reserved per slot index (the venue's slot order)
- `_caps`    int32[2, V]          instant / daily capacity; <= 0 means no limit

Estimated occupancy (venues without exit readers, `core.occupancy`). Such a venue's occupancy is
sum over entry minutes m of entries(m) * S(now - m), read from `_minutes` with the venue's row of
`_stay` (S by whole-minute age). The sum over the minutes before the current one changes only when
the minute does, so it is cached per venue (`_est`) for the minute in `_occ_meta[_CACHED]`; a read
adds the current minute's entries (S(0) = 1) to it, so the hot path pays one sum per venue per
minute. An event for an earlier minute than the cached one (an annul, a replay) and a new day drop
the cache. These arrays come from configuration and are not in the snapshot: the owner sets them
again (`set_stay`) after `restore`.

- `_stay`     float64[V, 4+1440]  S(age) for ages 0..1443 (shape [V, 1] until a venue needs one)
- `_est`      float64[V]          cached sum over the minutes before `_occ_meta[_CACHED]`
- `_occ_meta` int32[3, V]         cached minute (-1 = none), everyone-out minute (-1 = none),
                                  1 when estimated

Days. An event for a later day than the row first rolls the row over: daily figures reset and
occupancy is kept when the venue carries it over midnight (`carry`), else reset to 0. An event for
an earlier day never touches daily figures; it moves occupancy only at a carrying venue, because at
a resetting venue the midnight reset has already dropped the people it is about.

Pure: time (day ordinal, minute of day) is always passed in. `warm()` compiles every kernel (cached
on disk by numba) so that a shard pays the JIT cost at start, never on a gate request.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from core.occupancy import rounded, survival_table

ENTRY, EXIT, ANNUL, RESERVE, CANCEL = 1, 2, 3, 4, 5
MINUTES_PER_DAY = 1440
RATE_WINDOW = 5
# Minutes of the previous day kept ahead of minute 0: the rate window reaches back this far.
TAIL = RATE_WINDOW - 1

_DAY, _OCC, _ENTRIES, _EXITS = 0, 1, 2, 3
_IN, _OUT = 0, 1
_ADMITTED, _RESERVED = 0, 1
_INSTANT, _DAILY = 0, 1
_CACHED, _OUT_AT, _ESTIMATED = 0, 1, 2

_MAGIC = b"PGC1"
_HEADER = struct.Struct("<4sII")

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
# Venue indexes, days and minutes: Python or numpy integers (the wrappers cast to int).
Int = int | np.integer[Any]


# -- kernels ------------------------------------------------------------------------------------


@njit(cache=True)  # type: ignore[misc]
def _roll(rows: Any, minutes: Any, slots: Any, carry: Any, meta: Any, v: int, new_day: int) -> None:
    """Starts row `v` on `new_day` (> its day)."""
    meta[_CACHED, v] = -1
    keep_tail = new_day == rows[_DAY, v] + 1
    for side in range(2):
        for c in range(TAIL):
            minutes[side, v, c] = minutes[side, v, MINUTES_PER_DAY + c] if keep_tail else 0
        for c in range(TAIL, TAIL + MINUTES_PER_DAY):
            minutes[side, v, c] = 0
        for s in range(slots.shape[2]):
            slots[side, v, s] = 0
    if not carry[v]:
        rows[_OCC, v] = 0
    rows[_ENTRIES, v] = 0
    rows[_EXITS, v] = 0
    rows[_DAY, v] = new_day


@njit(cache=True)  # type: ignore[misc]
def _bump(arr: Any, i: int, j: int, k: int, delta: int) -> None:
    """arr[i, j, k] += delta, never below 0."""
    value = arr[i, j, k] + delta
    arr[i, j, k] = value if value > 0 else 0


@njit(cache=True)  # type: ignore[misc]
def _apply_current(
    rows: Any, minutes: Any, slots: Any, meta: Any, v: int, minute: int, kind: int, slot: int
) -> None:
    """One event of the row's own day."""
    col = minute + TAIL if 0 <= minute < MINUTES_PER_DAY else -1
    s = slot if 0 <= slot < slots.shape[2] else -1
    if kind in (ENTRY, ANNUL):
        if minute < meta[_CACHED, v]:
            meta[_CACHED, v] = -1  # the cached estimate summed that minute
        delta = 1 if kind == ENTRY else -1
        rows[_OCC, v] = max(rows[_OCC, v] + delta, 0)
        rows[_ENTRIES, v] = max(rows[_ENTRIES, v] + delta, 0)
        if col >= 0:
            _bump(minutes, _IN, v, col, delta)
        if s >= 0:
            _bump(slots, _ADMITTED, v, s, delta)
    elif kind == EXIT:
        rows[_OCC, v] = max(rows[_OCC, v] - 1, 0)
        rows[_EXITS, v] += 1
        if col >= 0:
            minutes[_OUT, v, col] += 1
    elif kind in (RESERVE, CANCEL) and s >= 0:
        _bump(slots, _RESERVED, v, s, 1 if kind == RESERVE else -1)


@njit(cache=True)  # type: ignore[misc]
def _apply_kernel(
    rows: Any,
    minutes: Any,
    slots: Any,
    carry: Any,
    venue: Any,
    day: Any,
    minute: Any,
    kind: Any,
    slot: Any,
    meta: Any,
) -> None:
    n_venues = rows.shape[1]
    for i in range(venue.shape[0]):
        v = venue[i]
        if v < 0 or v >= n_venues:
            continue
        d = day[i]
        k = kind[i]
        if d > rows[_DAY, v]:
            _roll(rows, minutes, slots, carry, meta, v, d)
        if d == rows[_DAY, v]:
            _apply_current(rows, minutes, slots, meta, v, minute[i], k, slot[i])
        elif carry[v] and k in (ENTRY, EXIT, ANNUL):
            rows[_OCC, v] = max(rows[_OCC, v] + (1 if k == ENTRY else -1), 0)


@njit(cache=True)  # type: ignore[misc]
def _rollover_kernel(
    rows: Any, minutes: Any, slots: Any, carry: Any, meta: Any, v: int, day: int
) -> None:
    if 0 <= v < rows.shape[1] and day > rows[_DAY, v]:
        _roll(rows, minutes, slots, carry, meta, v, day)


@njit(cache=True)  # type: ignore[misc]
def _sum_before(minutes: Any, stay: Any, meta: Any, v: int, now_col: int) -> float:
    """Sum of entries * S(age) over the columns before `now_col` that still count."""
    first = 0
    out_at = meta[_OUT_AT, v]
    if 0 <= out_at <= now_col - TAIL:
        first = out_at + TAIL
    first = max(first, now_col - stay.shape[1] + 1)
    total = 0.0
    for c in range(first, now_col):
        n = minutes[_IN, v, c]
        if n:
            total += n * stay[v, now_col - c]
    return total


@njit(cache=True)  # type: ignore[misc]
def _estimate_one(
    rows: Any, minutes: Any, stay: Any, est: Any, meta: Any, v: int, minute: int
) -> float:
    """Occupancy at `minute`: estimated at a venue without exit readers, else counted."""
    if meta[_ESTIMATED, v] == 0:
        return float(rows[_OCC, v])
    m = min(max(minute, 0), MINUTES_PER_DAY - 1)
    if meta[_CACHED, v] != m:
        est[v] = _sum_before(minutes, stay, meta, v, m + TAIL)
        meta[_CACHED, v] = m
    return est[v] + minutes[_IN, v, m + TAIL] * stay[v, 0]


@njit(cache=True)  # type: ignore[misc]
def _estimate_at_col(minutes: Any, stay: Any, meta: Any, v: int, col: int) -> float:
    """The estimate as it stood at column `col` (uncached; for the inflow rate)."""
    return _sum_before(minutes, stay, meta, v, col) + minutes[_IN, v, col] * stay[v, 0]


@njit(cache=True)  # type: ignore[misc]
def _estimate_kernel(
    rows: Any, minutes: Any, stay: Any, est: Any, meta: Any, v: int, minute: int
) -> float:
    if v < 0 or v >= rows.shape[1]:
        return 0.0
    return _estimate_one(rows, minutes, stay, est, meta, v, minute)


@njit(cache=True)  # type: ignore[misc]
def _rates_one(
    rows: Any, minutes: Any, caps: Any, stay: Any, est: Any, meta: Any, v: int, minute: int
) -> tuple[float, float]:
    m = min(max(minute, 0), MINUTES_PER_DAY - 1)
    entries = 0
    exits = 0
    # Columns m..m+4 are minutes m-4..m (the tail covers m < 4).
    for c in range(m, m + RATE_WINDOW):
        entries += minutes[_IN, v, c]
        exits += minutes[_OUT, v, c]
    per_minute = entries / RATE_WINDOW
    net = (entries - exits) / RATE_WINDOW
    occupancy = float(rows[_OCC, v])
    if meta[_ESTIMATED, v]:
        # No exits are seen: the net inflow is how fast the estimate grew over the window.
        occupancy = _estimate_one(rows, minutes, stay, est, meta, v, m)
        now_col = m + TAIL
        then_col = max(now_col - RATE_WINDOW, 0)
        then = _estimate_at_col(minutes, stay, meta, v, then_col)
        net = (occupancy - then) / (now_col - then_col)
    to_full = -1.0
    instant = caps[_INSTANT, v]
    if instant > 0 and net > 0:
        to_full = max(instant - occupancy, 0.0) / net
    daily = caps[_DAILY, v]
    if daily > 0 and per_minute > 0:
        t = max(daily - rows[_ENTRIES, v], 0) / per_minute
        to_full = t if to_full < 0 else min(to_full, t)
    return per_minute, to_full


@njit(cache=True)  # type: ignore[misc]
def _rates_kernel(
    rows: Any, minutes: Any, caps: Any, stay: Any, est: Any, meta: Any, v: int, minute: int
) -> tuple[float, float]:
    if v < 0 or v >= rows.shape[1]:
        return 0.0, -1.0
    return _rates_one(rows, minutes, caps, stay, est, meta, v, minute)


@njit(cache=True)  # type: ignore[misc]
def _rates_all_kernel(
    rows: Any,
    minutes: Any,
    caps: Any,
    stay: Any,
    est: Any,
    meta: Any,
    minute: Any,
    per_minute: Any,
    to_full: Any,
) -> None:
    for v in range(rows.shape[1]):
        per_minute[v], to_full[v] = _rates_one(rows, minutes, caps, stay, est, meta, v, minute[v])


# The kernels Python calls; the helpers above compile (or load from cache) inside them.
_KERNELS: dict[str, Any] = {
    "apply": _apply_kernel,
    "rollover": _rollover_kernel,
    "rates": _rates_kernel,
    "rates_all": _rates_all_kernel,
    "estimate": _estimate_kernel,
}


# -- the counters -------------------------------------------------------------------------------


def _events(values: Any, dtype: type[np.generic]) -> Any:
    # One dtype per argument keeps every kernel at a single compiled signature.
    return np.ascontiguousarray(values, dtype=dtype).reshape(-1)


class CapacityCounters:
    """The live counters of `n_venues` venues with up to `max_slots` reservation slots each."""

    def __init__(self, n_venues: int, max_slots: int = 16) -> None:
        if n_venues < 1 or max_slots < 1:
            raise ValueError(f"need n_venues >= 1 and max_slots >= 1, got {n_venues}, {max_slots}")
        self._rows = np.zeros((4, n_venues), dtype=np.int32)
        self._minutes = np.zeros((2, n_venues, TAIL + MINUTES_PER_DAY), dtype=np.int32)
        self._slots = np.zeros((2, n_venues, max_slots), dtype=np.int32)
        self._caps = np.zeros((2, n_venues), dtype=np.int32)
        self._carry = np.zeros(n_venues, dtype=np.bool_)
        self._stay = np.zeros((n_venues, 1), dtype=np.float64)
        self._est = np.zeros(n_venues, dtype=np.float64)
        self._occ_meta = np.full((3, n_venues), -1, dtype=np.int32)
        self._occ_meta[_ESTIMATED] = 0
        self._bind_views()

    def _bind_views(self) -> None:
        self.day: IntArray = self._rows[_DAY]
        self.occupancy: IntArray = self._rows[_OCC]
        self.entries_today: IntArray = self._rows[_ENTRIES]
        self.exits_today: IntArray = self._rows[_EXITS]
        self.entries_min: IntArray = self._minutes[_IN, :, TAIL:]
        self.exits_min: IntArray = self._minutes[_OUT, :, TAIL:]
        self.slot_admitted: IntArray = self._slots[_ADMITTED]
        self.slot_reserved: IntArray = self._slots[_RESERVED]
        self.instant_cap: IntArray = self._caps[_INSTANT]
        self.daily_cap: IntArray = self._caps[_DAILY]
        # Per venue: True keeps occupancy over local midnight, False resets it to 0.
        self.carry: npt.NDArray[np.bool_] = self._carry

    @property
    def n_venues(self) -> int:
        return int(self._rows.shape[1])

    @property
    def max_slots(self) -> int:
        return int(self._slots.shape[2])

    def set_capacity(self, venue_idx: int, instant: int, daily: int) -> None:
        """Capacities used by the forecasts; <= 0 means that dimension has no limit."""
        if not 0 <= venue_idx < self.n_venues:
            raise IndexError(f"venue index {venue_idx} out of range 0..{self.n_venues - 1}")
        self._caps[_INSTANT, venue_idx] = instant
        self._caps[_DAILY, venue_idx] = daily

    def set_stay(
        self, venue_idx: int, survival: FloatArray | None, everyone_out_min: int | None = None
    ) -> None:
        """Estimates the venue's occupancy from its entries with this survival table (S by
        whole-minute age from 0, `core.occupancy.survival_table`), dropping entries before
        `everyone_out_min` from that minute on; None counts occupancy (entries minus exits)."""
        if not 0 <= venue_idx < self.n_venues:
            raise IndexError(f"venue index {venue_idx} out of range 0..{self.n_venues - 1}")
        meta = self._occ_meta
        meta[_CACHED, venue_idx] = -1
        if survival is None:
            meta[_ESTIMATED, venue_idx] = 0
            meta[_OUT_AT, venue_idx] = -1
            return
        width = TAIL + MINUTES_PER_DAY
        if self._stay.shape[1] != width:
            # Allocated for the first estimated venue only: most shards count every venue.
            self._stay = np.zeros((self.n_venues, width), dtype=np.float64)
        row = np.zeros(width, dtype=np.float64)
        n = min(width, len(survival))
        row[:n] = survival[:n]
        self._stay[venue_idx] = row
        meta[_ESTIMATED, venue_idx] = 1
        meta[_OUT_AT, venue_idx] = -1 if everyone_out_min is None else everyone_out_min

    def estimated(self, venue_idx: Int) -> bool:
        """True when the venue's occupancy is estimated (no exit readers)."""
        return bool(self._occ_meta[_ESTIMATED, int(venue_idx)])

    def estimate(self, venue_idx: Int, minute: Int) -> float:
        """Occupancy at `minute` of the row's day: the stay-model estimate at an estimated venue
        (cached per minute), the counted occupancy elsewhere; 0.0 for an unknown venue."""
        value = _estimate_kernel(
            self._rows, self._minutes, self._stay, self._est, self._occ_meta,
            int(venue_idx), int(minute),
        )  # fmt: skip
        return float(value)

    def live_occupancy(self, venue_idx: Int, minute: Int) -> int:
        """`estimate` as the whole number of people reported and checked against capacity."""
        v = int(venue_idx)
        if 0 <= v < self.n_venues and not self._occ_meta[_ESTIMATED, v]:
            return int(self._rows[_OCC, v])  # counted: no kernel call on the hot path
        return rounded(self.estimate(v, minute))

    def apply_batch(self, venue_idx: Any, day: Any, minute: Any, kind: Any, slot_idx: Any) -> None:
        """Applies a batch of events in order, in one kernel call.

        Equal-length sequences: venue index, local day ordinal, local minute (0..1439), kind
        (ENTRY, EXIT, ANNUL of an entry at that day/minute/slot, RESERVE, CANCEL) and slot index
        (-1 = none). Events naming an unknown venue or kind are skipped; a minute or slot out of
        range skips only that bucket.
        """
        cols = (
            _events(venue_idx, np.int32),
            _events(day, np.int32),
            _events(minute, np.int32),
            _events(kind, np.int8),
            _events(slot_idx, np.int32),
        )
        if len({c.shape[0] for c in cols}) != 1:
            raise ValueError(f"event arrays differ in length: {[c.shape[0] for c in cols]}")
        _apply_kernel(self._rows, self._minutes, self._slots, self._carry, *cols, self._occ_meta)

    def rollover(self, venue_idx: Int, day: Int) -> None:
        """Moves a venue to `day` when midnight passes without traffic; no-op for a past day."""
        _rollover_kernel(
            self._rows, self._minutes, self._slots, self._carry, self._occ_meta,
            int(venue_idx), int(day),
        )  # fmt: skip

    def rates(self, venue_idx: Int, minute: Int) -> tuple[float, float]:
        """(entries per minute over minutes minute-4..minute, minutes to full or -1.0).

        Minutes to full is the sooner of: instant room / net inflow per minute (when people come
        in faster than they leave) and daily room / entries per minute. 0.0 when already full and
        still filling; -1.0 when not filling. An unknown venue reads (0.0, -1.0). At an estimated
        venue room and net inflow come from the estimate (its growth over the window).
        """
        per_minute, to_full = _rates_kernel(
            self._rows, self._minutes, self._caps, self._stay, self._est, self._occ_meta,
            int(venue_idx), int(minute),
        )  # fmt: skip
        return float(per_minute), float(to_full)

    def rates_all(self, minute: Any) -> tuple[FloatArray, FloatArray]:
        """`rates` for every venue at once; `minute` is one minute for all or one per venue."""
        # A copy: a broadcast view is read-only, and numba compiles read-only arrays apart.
        minutes = np.array(
            np.broadcast_to(np.asarray(minute, dtype=np.int32), (self.n_venues,)), dtype=np.int32
        )
        per_minute = np.empty(self.n_venues, dtype=np.float64)
        to_full = np.empty(self.n_venues, dtype=np.float64)
        _rates_all_kernel(
            self._rows, self._minutes, self._caps, self._stay, self._est, self._occ_meta,
            minutes, per_minute, to_full,
        )  # fmt: skip
        return per_minute, to_full

    # -- persistence ----------------------------------------------------------------------------

    def _blocks(self) -> tuple[npt.NDArray[Any], ...]:
        return (self._rows, self._minutes, self._slots, self._caps, self._carry)

    def snapshot(self) -> bytes:
        """Every array (capacities and carry flags included), zlib-compressed behind a header."""
        body = b"".join(block.tobytes() for block in self._blocks())
        return _HEADER.pack(_MAGIC, self.n_venues, self.max_slots) + zlib.compress(body, 1)

    @classmethod
    def restore(cls, blob: bytes) -> CapacityCounters:
        """The counters `snapshot()` wrote; ValueError for anything else."""
        if len(blob) < _HEADER.size:
            raise ValueError("counter snapshot too short")
        magic, n_venues, max_slots = _HEADER.unpack_from(blob)
        if magic != _MAGIC or n_venues < 1 or max_slots < 1:
            raise ValueError("not a counter snapshot (bad header)")
        out = cls(n_venues, max_slots)
        try:
            body = zlib.decompress(blob[_HEADER.size :])
        except zlib.error as exc:
            raise ValueError(f"counter snapshot is corrupt: {exc}") from exc
        blocks = out._blocks()
        if len(body) != sum(b.nbytes for b in blocks):
            raise ValueError("counter snapshot size does not match its header")
        offset = 0
        for block in blocks:
            block[...] = np.frombuffer(body, block.dtype, block.size, offset).reshape(block.shape)
            offset += block.nbytes
        return out

    def copy(self) -> CapacityCounters:
        """An independent copy (to stage a batch's events for a snapshot)."""
        out = CapacityCounters(self.n_venues, self.max_slots)
        for mine, theirs in zip(self._blocks(), out._blocks(), strict=True):
            theirs[...] = mine
        out._stay = self._stay.copy()
        out._occ_meta[...] = self._occ_meta
        out._occ_meta[_CACHED] = -1
        return out


# -- start-up -----------------------------------------------------------------------------------


def warm() -> None:
    """Compiles (or loads from numba's cache) every kernel with the types the shard uses."""
    c = CapacityCounters(2, 2)
    c.carry[1] = True
    c.set_capacity(0, 10, 100)
    c.set_stay(0, survival_table(30, TAIL + MINUTES_PER_DAY), 600)
    c.apply_batch(
        [0, 1, 0, 0, 0, 0, 1, 5], [1, 1, 1, 1, 1, 2, 1, 1], [3, 3, 3, 3, 3, 0, 3, 3],
        [ENTRY, ENTRY, EXIT, ANNUL, RESERVE, CANCEL, EXIT, 9], [0, -1, -1, 0, 1, 1, -1, -1],
    )  # fmt: skip
    c.rollover(0, 3)
    c.rates(0, 2)
    c.rates_all(2)
    c.live_occupancy(0, 5)


def kernel_signature_counts() -> dict[str, int]:
    """How many type signatures each kernel has compiled; unchanged after `warm()` means the
    calls since then paid no JIT cost."""
    return {name: len(kernel.signatures) for name, kernel in _KERNELS.items()}


__all__ = [
    "ANNUL",
    "CANCEL",
    "ENTRY",
    "EXIT",
    "MINUTES_PER_DAY",
    "RATE_WINDOW",
    "RESERVE",
    "TAIL",
    "CapacityCounters",
    "kernel_signature_counts",
    "warm",
]
