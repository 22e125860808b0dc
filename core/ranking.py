"""Which refusal a gate shows when several hold at once: entry checks and their ranking, as data.

`decide` (core/rules.py) tries the entry checks in `CHECK_ORDER` on the way to an admission: the
cheap, venue-wide ones first, credit last. An admitted entry passes them all and nothing more is
evaluated. When one fails, the visitor must be told the failure they can act on, which is not
necessarily the first one found: a pass with no entries left, scanned before opening, must hear
"no entries left" now rather than "opens at 08:00" and then, at 08:00, the truth. So a refused entry
looks for every failure ranked closer than the first one found, in `RANKING` order, and answers the
closest.

The ranking follows one principle: a failure that waiting does not cure outranks one that it does.
- Permanent: the pass itself is refused here for good (revoked, blocked, expired, not covered, no
  entries left, no pay-later credit); nothing the visitor can wait for helps.
- Dated: the pass works from a later date (not yet valid, daily limit: tomorrow).
- The holder's own recent use: anti-passback. A holder already inside is told when they may
  re-enter, never to book a slot, which would invite handing the card back over the fence.
- A booking the visitor can make now (reservation required): after any wait they would still be
  refused without it.
- Waiting alone cures the rest: closed (opens at ...), outside the holder windows (entry from ...),
  paused, full; the longest wait first.

`PRECONDITIONS` come before everything: without a known venue, an authorised gate and a known
credential there is nothing else to evaluate or to tell.
"""

from __future__ import annotations

from core.enums import Reason

PRECONDITIONS: tuple[Reason, ...] = (
    Reason.UNKNOWN_VENUE,
    Reason.NOT_AUTHORIZED,
    Reason.UNKNOWN_CREDENTIAL,
)

# The order `decide` tries the entry checks (core/rules.py keeps its check table in this order).
CHECK_ORDER: tuple[Reason, ...] = (
    Reason.REVOKED,
    Reason.BLOCKED,
    Reason.NOT_YET_VALID,
    Reason.EXPIRED,
    Reason.VENUE_NOT_COVERED,
    Reason.VENUE_CLOSED,
    Reason.VENUE_PAUSED,
    Reason.VENUE_FULL,
    Reason.RESERVATION_REQUIRED,
    Reason.OUTSIDE_TIME_WINDOW,
    Reason.ANTI_PASSBACK,
    Reason.ENTRY_LIMIT_REACHED,
    Reason.DAILY_LIMIT_REACHED,
    Reason.CREDIT_DENIED,
)

# Closest first: when several entry checks fail, the earliest here is the answer.
RANKING: tuple[Reason, ...] = (
    # permanent
    Reason.REVOKED,
    Reason.BLOCKED,
    Reason.EXPIRED,
    Reason.VENUE_NOT_COVERED,
    Reason.ENTRY_LIMIT_REACHED,
    Reason.CREDIT_DENIED,
    # dated
    Reason.NOT_YET_VALID,
    Reason.DAILY_LIMIT_REACHED,
    # the holder's own recent entry
    Reason.ANTI_PASSBACK,
    # a booking to make now
    Reason.RESERVATION_REQUIRED,
    # waiting cures it
    Reason.VENUE_CLOSED,
    Reason.OUTSIDE_TIME_WINDOW,
    Reason.VENUE_PAUSED,
    Reason.VENUE_FULL,
)

RANK: dict[Reason, int] = {reason: i for i, reason in enumerate(PRECONDITIONS + RANKING)}

# Pairs of entry failures that no scan can produce together, and why.
CANNOT_COINCIDE: dict[frozenset[Reason], str] = {
    frozenset({Reason.REVOKED, Reason.BLOCKED}): "a pass has one status",
    frozenset({Reason.NOT_YET_VALID, Reason.EXPIRED}): "an import refuses valid_until < valid_from",
    **{
        frozenset({Reason.VENUE_NOT_COVERED, reason}): "it comes from the product's rule for the "
        "venue, which a pass whose product does not cover the venue lacks"
        for reason in (
            Reason.ENTRY_LIMIT_REACHED,
            Reason.DAILY_LIMIT_REACHED,
            Reason.OUTSIDE_TIME_WINDOW,
            Reason.CREDIT_DENIED,
        )
    },
}


def closer(a: Reason, b: Reason) -> bool:
    """True when refusal `a` is the one to show rather than `b`."""
    return RANK[a] < RANK[b]


def closest(reasons: list[Reason] | tuple[Reason, ...] | set[Reason]) -> Reason:
    """The refusal to show among several that hold at once."""
    return min(reasons, key=RANK.__getitem__)


__all__ = [
    "CANNOT_COINCIDE",
    "CHECK_ORDER",
    "PRECONDITIONS",
    "RANK",
    "RANKING",
    "closer",
    "closest",
]
