"""Plain domain data: enums mirrored from the proto, config models, passes, usage, requests.

Everything here is pure data. Dates are proleptic ordinals (`date.toordinal()`), times of day are
minutes after local midnight, instants are epoch milliseconds. Money is in fen (1/100 yuan).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from enum import IntEnum


class Reason(IntEnum):
    """Mirrors `passgate.v1.Reason` number for number."""

    UNSPECIFIED = 0
    OK = 1
    UNKNOWN_CREDENTIAL = 2
    INVALID_CODE = 3
    CODE_EXPIRED = 4
    REPLAYED_CODE = 5
    REVOKED = 6
    BLOCKED = 7
    NOT_YET_VALID = 8
    EXPIRED = 9
    VENUE_NOT_COVERED = 10
    ENTRY_LIMIT_REACHED = 11
    DAILY_LIMIT_REACHED = 12
    ANTI_PASSBACK = 13
    RESERVATION_REQUIRED = 14
    OUTSIDE_TIME_WINDOW = 15
    VENUE_CLOSED = 16
    VENUE_FULL = 17
    VENUE_PAUSED = 18
    CREDIT_DENIED = 19
    UNKNOWN_VENUE = 20
    NOT_AUTHORIZED = 21


class AlertLevel(IntEnum):
    """Mirrors `passgate.v1.AlertLevel`."""

    UNSPECIFIED = 0
    GREEN = 1
    YELLOW = 2
    ORANGE = 3
    RED = 4
    FULL = 5


class CredentialKind(IntEnum):
    """Mirrors `passgate.v1.CredentialKind`."""

    UNSPECIFIED = 0
    CARD = 1
    QR = 2
    ID = 3


class Direction(IntEnum):
    """Mirrors `passgate.v1.Direction`; UNSPECIFIED is treated as ENTRY."""

    UNSPECIFIED = 0
    ENTRY = 1
    EXIT = 2


class PassStatus(IntEnum):
    """Mirrors `passgate.v1.PassStatus`."""

    UNSPECIFIED = 0
    ACTIVE = 1
    REVOKED = 2
    BLOCKED = 3


class CreditTier(IntEnum):
    """Mirrors `passgate.v1.CreditTier`."""

    UNSPECIFIED = 0
    GOOD = 1
    NORMAL = 2
    POOR = 3


class PassbackMode(IntEnum):
    """Anti-passback policy of a venue."""

    NONE = 0
    SOFT = 1
    HARD = 2


UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class AntiPassback:
    mode: PassbackMode = PassbackMode.NONE
    # A pass counts as "inside" for this long after an entry (many areas have no exit gates).
    minutes: int = 0


@dataclass(frozen=True, slots=True)
class Slot:
    """A reservation time slot of a venue, [start_min, end_min) local time."""

    slot_id: str
    start_min: int
    end_min: int
    capacity: int


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """Percent of capacity at which each alert level starts."""

    yellow_pct: int = 80
    orange_pct: int = 90
    red_pct: int = 95


@dataclass(frozen=True, slots=True)
class Venue:
    venue_id: str
    name: str
    city: str
    tz_name: str
    tz: tzinfo
    # opening[weekday] (Monday = 0) is a tuple of [open_min, close_min) ranges; empty = closed.
    opening: tuple[tuple[tuple[int, int], ...], ...]
    instant_capacity: int
    daily_capacity: int
    anti_passback: AntiPassback
    gates: frozenset[str]
    kind: str = "scenic_area"
    state_owned: bool = False
    reservation_required: bool = False
    slots: tuple[Slot, ...] = ()
    # A reservation is honoured from `before` minutes ahead of its slot to `after` minutes past it.
    reservation_tolerance_before_min: int = 15
    reservation_tolerance_after_min: int = 30
    closed_dates: frozenset[int] = frozenset()
    alerts: AlertThresholds = AlertThresholds()
    # At RED, admit only holders of a reservation for the current slot.
    reservation_only_at_red: bool = False
    # At local midnight: True keeps occupancy, False resets it (venue closes overnight).
    carry_occupancy: bool = False


@dataclass(frozen=True, slots=True)
class VenueRule:
    """What one product grants at one venue."""

    entries_per_period: int = UNLIMITED
    entries_per_day: int = UNLIMITED
    reservation_required: bool = False
    # On peak days only: holders may enter only inside these [start_min, end_min) windows.
    peak_windows: tuple[tuple[int, int], ...] = ()
    # > 0: entry is paid later at this price (credit products).
    pay_later_price_fen: int = 0


@dataclass(frozen=True, slots=True)
class CreditPolicy:
    """Pay-later rules of a credit product."""

    pay_later_tiers: frozenset[CreditTier] = frozenset({CreditTier.GOOD})
    debt_limit_fen: int = 0
    # Holders in these groups get their first entry free at each state-owned venue.
    first_visit_free_groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    venues: dict[str, VenueRule]
    price_fen: int = 0
    credit: CreditPolicy | None = None


@dataclass(frozen=True, slots=True)
class Province:
    """The whole validated configuration."""

    name: str
    default_tz: str
    venues: dict[str, Venue]
    products: dict[str, Product]
    peak_days: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class PassRecord:
    pass_id: str
    product_id: str
    credentials: tuple[tuple[CredentialKind, str], ...]
    valid_from: int
    valid_until: int
    status: PassStatus = PassStatus.ACTIVE
    credit_tier: CreditTier = CreditTier.NORMAL
    groups: frozenset[str] = frozenset()
    outstanding_debt_fen: int = 0


@dataclass(slots=True)
class Usage:
    """One pass at one venue, owned by the venue's shard."""

    entries: int = 0
    # Local date ordinal that entries_today belongs to.
    day: int = 0
    entries_today: int = 0
    last_entry_ms: int = 0
    inside: bool = False
    free_visits: int = 0
    charges_fen: int = 0
    exits: int = 0

    def copy(self) -> Usage:
        return Usage(
            self.entries,
            self.day,
            self.entries_today,
            self.last_entry_ms,
            self.inside,
            self.free_visits,
            self.charges_fen,
            self.exits,
        )


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    venue_id: str
    gate_id: str
    kind: CredentialKind
    value: str
    direction: Direction = Direction.ENTRY
    scanned_at_ms: int = 0
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class CapacityView:
    """What the venue's live counters say at decision time (filled by the shard)."""

    occupancy: int = 0
    entries_today: int = 0
    paused: bool = False
    alert: AlertLevel = AlertLevel.GREEN
    # The slot the current time falls in (with tolerance) that this pass reserved, if any.
    reserved_slot: str | None = None
    # Message fragment naming the next slot with room, for RESERVATION_REQUIRED.
    next_free_slot: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    allowed: bool
    reason: Reason
    message: str
    pass_id: str = ""
    remaining_entries: int = UNLIMITED
    venue_alert: AlertLevel = AlertLevel.GREEN
    pay_later: bool = False
    decided_at_ms: int = 0
    charge_fen: int = 0
    # Soft anti-passback: allowed, but logged and counted.
    soft_passback: bool = False
    free_visit: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """decide()'s answer: the decision and, when it changes anything, the new usage."""

    decision: Decision
    usage: Usage | None = None
    # For capacity counters: +1 entry, +1 exit, or neither.
    entered: bool = False
    exited: bool = False
