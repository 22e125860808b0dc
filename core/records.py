"""Every record that crosses a process or lands in LMDB, as one named msgspec type each.

`array_like=True` keeps the compact MessagePack array layout while the code reads fields by name.
Records that are *stored* carry a tag naming their type and version (`"usage/1"`); decoding checks
it, so a future layout can never be silently read as today's. Records that only cross Ray (a
request, a decision) are untagged: both ends always run the same code.

Enum fields keep plain ints on the hot path: msgspec does not validate on construction, and an
IntEnum member compares and hashes equal to its value.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.enums import (
    UNLIMITED,
    AlertLevel,
    CredentialKind,
    CreditTier,
    Direction,
    PassStatus,
    Reason,
)


class Request(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One scan, as the ingress hands it to the owning shard."""

    request_id: str
    venue_id: str
    gate_id: str
    kind: CredentialKind
    value: str
    direction: Direction = Direction.ENTRY
    scanned_at_ms: int = 0
    dry_run: bool = False


class Decision(msgspec.Struct, array_like=True, frozen=True, gc=False):
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
    # The request itself was malformed (`message` names the field); nothing changed.
    invalid: bool = False
    # The pass was admitted at another venue too recently to have travelled here
    # (`core.travel`): allowed and flagged, or refused with SHARED_CARD_SUSPECTED.
    shared_card: bool = False


class PassRecord(msgspec.Struct, array_like=True, frozen=True, tag="pass/1", gc=False):
    pass_id: str
    product_id: str
    credentials: tuple[tuple[CredentialKind, str], ...]
    valid_from: int
    valid_until: int
    status: PassStatus = PassStatus.ACTIVE
    credit_tier: CreditTier = CreditTier.NORMAL
    groups: frozenset[str] = frozenset()
    outstanding_debt_fen: int = 0


class Usage(msgspec.Struct, array_like=True, tag="usage/1", gc=False):
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


class RequestRecord(msgspec.Struct, array_like=True, tag="req/1", gc=False):
    """What a decided request left behind: for idempotent retries and for annul (15 minutes)."""

    decision: Decision
    venue_id: str
    gate_id: str
    # blake2b of (kind, value): a retry must present the same credential; the value is not kept.
    fingerprint: bytes
    direction: int
    pass_id: str
    day: int
    minute: int
    slot_idx: int
    event: int
    annulled: bool
    prev_entry_ms: int


# LogRecord.event: what a decision did to the venue's counters.
EV_NONE, EV_ENTRY, EV_EXIT, EV_ANNUL = 0, 1, 2, 3
# An exit no known entry justifies: logged and counted, never subtracted from occupancy.
EV_EXIT_UNMATCHED = 6


class LogRecord(msgspec.Struct, array_like=True, tag="log/1", gc=False):
    """One line of a shard's durable decision log (denials too); replayed into counters."""

    at_ms: int
    request_id: str
    venue_id: str
    gate_id: str
    pass_id: str
    direction: int
    allowed: bool
    reason: int
    event: int
    day: int
    minute: int
    slot_idx: int
    charge_fen: int
    soft_passback: bool
    # Added after the first release, with a default: older "log/1" lines decode as False.
    shared_card: bool = False


class Sighting(msgspec.Struct, array_like=True, frozen=True, tag="sighting/1", gc=False):
    """A pass's last admitted entry on the node (`actors.shard.sightings`)."""

    venue_id: str
    at_ms: int


class SharedFlag(msgspec.Struct, array_like=True, frozen=True, tag="shared/1", gc=False):
    """An entry its pass could not have made in person: where and when, and the entry before it."""

    at_ms: int
    venue_id: str
    other_venue_id: str
    other_at_ms: int
    distance_m: int
    refused: bool


class VenueState(msgspec.Struct, array_like=True, tag="venue/1"):
    """An operator's changes to one venue: quota overrides, pause, and unmatched exits."""

    paused: bool = False
    daily: int | None = None
    instant: int | None = None
    slots: dict[str, int] = {}
    alerts: tuple[int, int, int] | None = None
    # Exits that no known entry justified, on `unmatched_day` (counted, never subtracted).
    unmatched_day: int = 0
    unmatched_exits: int = 0


class PassParts(msgspec.Struct, array_like=True, gc=False):
    """What one shard holds of one pass, for `GetPass`, in one call: its usage per venue, its
    reservations (venue_id, day, slot_id, state, slot start, slot end minutes) and the node's
    shared-card flags of it."""

    usage: list[tuple[str, Usage]]
    reservations: list[tuple[str, int, str, str, int, int]]
    flags: list[SharedFlag]


class LogTrim(msgspec.Struct, array_like=True, tag="logtrim/1", gc=False):
    """What a shard has trimmed off the front of its decision log (`actors.shard.store`): how
    many lines, and their admitted entries net of annulments, so that totals stay whole."""

    records: int = 0
    admits: int = 0


class CountersSnapshot(msgspec.Struct, array_like=True, tag="counters/1"):
    """The numba counters as they stood after log sequence `seq`."""

    seq: int
    blob: bytes


_ENCODER = msgspec.msgpack.Encoder()
encode = _ENCODER.encode


def decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)


__all__ = [
    "CountersSnapshot",
    "Decision",
    "LogRecord",
    "PassRecord",
    "Request",
    "RequestRecord",
    "SharedFlag",
    "Sighting",
    "Usage",
    "VenueState",
    "decoder",
    "encode",
]
