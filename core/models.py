"""Plain domain data: enums mirrored from the proto, config models, passes, usage, requests.

Everything here is pure data. Dates are proleptic ordinals (`date.toordinal()`), times of day are
minutes after local midnight, instants are epoch milliseconds. Money is in fen (1/100 yuan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from core.enums import (
    UNLIMITED,
    AlertLevel,
    CredentialKind,
    CreditTier,
    Direction,
    PassbackMode,
    PassStatus,
    Reason,
    SharedCardPolicy,
)


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
class StayModel:
    """How a venue without exit readers estimates who is inside (`core.occupancy`)."""

    # Median minutes a visitor stays.
    typical_stay_min: int
    # Minute of the local day at which everyone is out (the estimate drops to 0), if any.
    everyone_out_min: int | None = None


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
    # None: exit readers count occupancy exactly; else visitors leave unseen and occupancy is
    # estimated from recent entries and this stay model.
    stay_model: StayModel | None = None
    alerts: AlertThresholds = AlertThresholds()
    # At RED, admit only holders of a reservation for the current slot.
    reservation_only_at_red: bool = False
    # At local midnight: True keeps occupancy, False resets it (venue closes overnight).
    carry_occupancy: bool = False
    # (latitude, longitude) in degrees; None: the venue takes no part in shared-card detection.
    location: tuple[float, float] | None = None


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
class QrPolicy:
    """How a product's QR codes are checked (`core.qr`)."""

    # A signed code carries issue time // step_seconds; apps refresh it every step.
    step_seconds: int = 30
    # Steps of clock difference accepted either side of the server's current step.
    skew_steps: int = 1
    # Static QR values (a fixed string in the catalog) are accepted too.
    static: bool = True


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    venues: dict[str, VenueRule]
    price_fen: int = 0
    credit: CreditPolicy | None = None
    qr: QrPolicy = QrPolicy()
    # An entry the pass could not have made in person (`core.travel`): flagged or refused.
    shared_card: SharedCardPolicy = SharedCardPolicy.FLAG


@dataclass(frozen=True, slots=True)
class Province:
    """The whole validated configuration."""

    name: str
    default_tz: str
    venues: dict[str, Venue]
    products: dict[str, Product]
    peak_days: frozenset[int] = frozenset()
    # Public keys (raw 32 bytes) of signed-QR issuers by key id, from qr_keys.toml.
    qr_keys: dict[str, bytes] = field(default_factory=dict)
    # Straight-line speed (km/h) a holder can at most travel between venues (`core.travel`).
    travel_speed_kmh: float = 60.0
    # Days a shard keeps each line of its decision log (the audit trail) before trimming it.
    decision_log_days: int = 90


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
    # The slot the current time falls in (with tolerance) whose reservation this pass already
    # used to enter: it may re-enter within that window without a new booking.
    reentry_slot: str | None = None
    # This pass's unused reservation for a later slot today, named when it is too early for it.
    held_slot: Slot | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """decide()'s answer: the decision and, when it changes anything, the new usage."""

    decision: Decision
    usage: Usage | None = None
    # For capacity counters: +1 entry, +1 exit, or neither.
    entered: bool = False
    exited: bool = False
    # An exit that no known entry justifies (unknown, revoked or not inside): counted apart and
    # never subtracted from occupancy, so exit scans cannot make room for more entries.
    unmatched_exit: bool = False


# Records that cross processes or land in LMDB are defined in core.records (msgspec).
from core.records import Decision, PassRecord, Request, Usage  # noqa: E402

__all__ = [
    "UNLIMITED",
    "AlertLevel",
    "AlertThresholds",
    "AntiPassback",
    "CapacityView",
    "CredentialKind",
    "CreditPolicy",
    "CreditTier",
    "Decision",
    "Direction",
    "Outcome",
    "PassRecord",
    "PassStatus",
    "PassbackMode",
    "Product",
    "Province",
    "QrPolicy",
    "Reason",
    "Request",
    "SharedCardPolicy",
    "Slot",
    "StayModel",
    "Usage",
    "Venue",
    "VenueRule",
]
