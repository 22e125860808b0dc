"""Shared-card detection: could the holder have travelled from their last entry to this venue?

One card shown at two venues 40 km apart within ten minutes is two people. A pass is suspected
when its previous admitted entry was at another venue and less time has passed since than the
straight-line (great-circle) distance between the two venues takes at the province's travel
speed. The product decides what follows (`SharedCardPolicy`): admit and flag, or refuse with
SHARED_CARD_SUSPECTED and a message naming the other venue, how long ago and how far.

Pure: distances, the rule and the rewritten outcome; the shard supplies the last sighting and
keeps it (`actors.shard.sightings`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from core.models import UNLIMITED, Decision, Outcome, Reason, SharedCardPolicy

# Mean Earth radius (IUGG), km: the haversine error against the ellipsoid is under 0.5 %.
EARTH_RADIUS_KM = 6371.0088
_MS_PER_HOUR = 3_600_000
_MS_PER_MIN = 60_000

Location = tuple[float, float]  # (latitude, longitude) in degrees


def distance_km(a: Location, b: Location) -> float:
    """Great-circle distance between two points (haversine formula)."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = math.sin((lat2 - lat1) / 2) ** 2 + (
        math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def travel_ms(km: float, speed_kmh: float) -> int:
    """The least time a holder needs to cover `km` in a straight line at `speed_kmh`."""
    return int(km / speed_kmh * _MS_PER_HOUR)


def horizon_ms(locations: Iterable[Location], speed_kmh: float) -> int:
    """The longest travel time between any two of `locations`: a sighting older than this can
    never make a later entry suspect, so it may be forgotten."""
    points = sorted(set(locations))
    longest = max((distance_km(a, b) for a, b in itertools.combinations(points, 2)), default=0.0)
    return travel_ms(longest, speed_kmh)


@dataclass(frozen=True, slots=True)
class Suspicion:
    """Why an entry at `venue_id` looks like a second person on the same pass."""

    other_venue_id: str
    other_at_ms: int
    distance_km: float
    elapsed_ms: int


def suspect(
    last_venue_id: str,
    last_at_ms: int,
    last_location: Location,
    venue_id: str,
    location: Location,
    now_ms: int,
    speed_kmh: float,
) -> Suspicion | None:
    """A Suspicion when the last entry (at another venue) is closer in time than the travel time
    between the two venues allows, else None. The same venue is anti-passback's business."""
    if last_venue_id == venue_id:
        return None
    km = distance_km(last_location, location)
    # A sighting stamped after now (clocks of two processes) counts as simultaneous.
    elapsed = max(0, now_ms - last_at_ms)
    if elapsed >= travel_ms(km, speed_kmh):
        return None
    return Suspicion(last_venue_id, last_at_ms, km, elapsed)


def describe(s: Suspicion, other_name: str) -> str:
    """'card seen at Lingyin Temple 12 min ago, 40 km away': for the gate and the log."""
    minutes = s.elapsed_ms // _MS_PER_MIN
    ago = f"{minutes} min ago" if minutes else "under a minute ago"
    km = s.distance_km
    far = f"{km:.0f} km" if km >= 10 else f"{km:.1f} km"
    return f"card seen at {other_name} {ago}, {far} away"


def judge(outcome: Outcome, s: Suspicion, policy: SharedCardPolicy, message: str) -> Outcome:
    """The outcome of an admitted entry once it is suspected: the same entry with its decision
    flagged, or a refusal that changes nothing (no usage, no entry counted)."""
    decision = outcome.decision
    if policy is SharedCardPolicy.FLAG:
        flagged = msgspec.structs.replace(decision, shared_card=True)
        return Outcome(flagged, outcome.usage, outcome.entered, outcome.exited)
    remaining = decision.remaining_entries
    refused = Decision(
        decision.request_id,
        False,
        Reason.SHARED_CARD_SUSPECTED,
        message,
        decision.pass_id,
        remaining if remaining == UNLIMITED else remaining + 1,  # this entry was not used
        decision.venue_alert,
        False,
        decision.decided_at_ms,
        shared_card=True,
    )
    return Outcome(refused)


__all__ = [
    "EARTH_RADIUS_KM",
    "Location",
    "Suspicion",
    "describe",
    "distance_km",
    "horizon_ms",
    "judge",
    "suspect",
    "travel_ms",
]
