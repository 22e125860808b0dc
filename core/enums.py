"""The enums every layer shares, mirrored number for number from the `passgate.v1` proto."""

from __future__ import annotations

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
    SHARED_CARD_SUSPECTED = 22


class SharedCardPolicy(IntEnum):
    """What a product does with an entry its pass could not have made in person (`core.travel`):
    admit it and flag it, or refuse it."""

    FLAG = 0
    REFUSE = 1


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
