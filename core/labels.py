"""The one table of human labels for reason codes, as a gate display shows them.

Reason codes are the data (stored, counted, asserted on in tests); these labels are only text
and may be reworded freely. `decide` uses them as the message when it has nothing more specific
to say about what would have worked.
"""

from __future__ import annotations

from core.models import Reason

LABELS: dict[Reason, str] = {
    Reason.UNSPECIFIED: "no decision",
    Reason.OK: "welcome",
    Reason.UNKNOWN_CREDENTIAL: "card or code not recognised",
    Reason.INVALID_CODE: "invalid code",
    Reason.CODE_EXPIRED: "code expired: refresh the code",
    Reason.REPLAYED_CODE: "code already used: refresh the code",
    Reason.REVOKED: "pass cancelled or reported lost",
    Reason.BLOCKED: "pass blocked: see the service desk",
    Reason.NOT_YET_VALID: "pass not yet valid",
    Reason.EXPIRED: "pass expired",
    Reason.VENUE_NOT_COVERED: "pass not valid at this venue",
    Reason.ENTRY_LIMIT_REACHED: "no entries left on this pass",
    Reason.DAILY_LIMIT_REACHED: "daily limit reached: next entry tomorrow",
    Reason.ANTI_PASSBACK: "pass already inside",
    Reason.RESERVATION_REQUIRED: "reservation required",
    Reason.OUTSIDE_TIME_WINDOW: "outside pass-holder entry hours",
    Reason.VENUE_CLOSED: "venue closed",
    Reason.VENUE_FULL: "venue full",
    Reason.VENUE_PAUSED: "entry paused: please wait",
    Reason.CREDIT_DENIED: "pay-later not available: please buy a ticket",
    Reason.UNKNOWN_VENUE: "unknown venue",
    Reason.NOT_AUTHORIZED: "gate not registered for this venue",
    Reason.SHARED_CARD_SUSPECTED: "card just used elsewhere: see the service desk",
}
