"""A rate per caller for the calls that are not validations: a dashboard polling flat out, or a
script gone wrong, with a valid token, must not take the ingress's CPU from the gates.

Each caller (the token's subject) has a bucket of `per_s` calls that refills at `per_s` a
second. A call over it is not refused at once: it waits its turn (so a client that calls again
as soon as it is answered slows to the rate, and its waiting calls cost no CPU), unless its turn
is more than `max_wait_s` away or past its deadline: then RESOURCE_EXHAUSTED, "retry ... later".
Validation (Validate, ValidateStream, ValidateBatch) is never limited here: it is the traffic
this protects. Per ingress process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from actors.errors import RETRY, Overloaded

# The unary calls a caller may make only at its rate (full method names).
LIMITED = frozenset(
    {
        "/passgate.v1.Gate/Annul",
        "/passgate.v1.Passes/GetPass",
        "/passgate.v1.Passes/RevokePass",
        "/passgate.v1.Passes/Reserve",
        "/passgate.v1.Passes/CancelReservation",
        "/passgate.v1.Quota/GetVenueStatus",
        "/passgate.v1.Quota/SetVenueQuota",
        "/passgate.v1.Quota/PauseEntry",
        "/passgate.v1.Quota/ResumeEntry",
    }
)
MAX_WAIT_S = 2.0
# Buckets kept before idle (full) ones are forgotten.
MAX_CALLERS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class CallBudget:
    def __init__(
        self,
        per_s: float,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_s <= 0:
            raise ValueError("per_s must be > 0 (no budget at all: do not make one)")
        self.per_s = per_s
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.waited = 0  # calls that waited their turn
        self.refused = 0  # calls refused: their turn was too far away

    def turn(self, caller: str, deadline_s: float | None = None) -> float:
        """Takes the caller's next turn: seconds to wait for it (0: now). Raises Overloaded when
        the turn is more than `max_wait_s` away, or `deadline_s` (the time the call has left)
        would pass first; then nothing is taken."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= MAX_CALLERS:
                self._forget_idle(now)
            bucket = self._buckets[caller] = _Bucket(self.per_s, now)
        bucket.tokens = min(self.per_s, bucket.tokens + (now - bucket.at) * self.per_s)
        bucket.at = now
        wait = max(0.0, (1.0 - bucket.tokens) / self.per_s)
        if wait > self.max_wait_s or (deadline_s is not None and wait > deadline_s):
            self.refused += 1
            raise Overloaded(f"over {self.per_s:g} calls/s for this caller; {RETRY} later")
        bucket.tokens -= 1.0  # may go below 0: the calls already waiting their turn
        if wait > 0:
            self.waited += 1
        return wait

    def _forget_idle(self, now: float) -> None:
        """Drops the buckets that have refilled: they would start full anyway."""
        full = [
            caller
            for caller, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.per_s >= self.per_s
        ]
        for caller in full:
            del self._buckets[caller]
