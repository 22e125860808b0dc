"""Checks a venue quota change (service Quota) before anything is stored.

Returns the problems as (field, problem) pairs so the boundary can answer INVALID_ARGUMENT naming
the field; an empty list means the quota is acceptable.
"""

from __future__ import annotations

from core.limits import echo
from core.models import Venue


def quota_problems(
    venue: Venue,
    daily: int,
    instant: int,
    slot_caps: dict[str, int],
    alerts: tuple[int, int, int] | None,
    allow_slot_overbooking: bool,
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if daily <= 0:
        problems.append(("daily_capacity", f"must be positive, got {daily}"))
    if instant <= 0:
        problems.append(("instant_capacity", f"must be positive, got {instant}"))
    if 0 < daily < instant:
        problems.append(("instant_capacity", f"{instant} is above the daily capacity {daily}"))
    known = {s.slot_id for s in venue.slots}
    for slot_id, cap in slot_caps.items():
        if slot_id not in known:
            problems.append(("slot_capacities", f"unknown slot {echo(slot_id)}"))
        elif cap < 0:
            problems.append(("slot_capacities", f"slot {echo(slot_id)}: negative capacity {cap}"))
    total = sum(slot_caps.get(s.slot_id, s.capacity) for s in venue.slots)
    if venue.slots and total > daily > 0 and not allow_slot_overbooking:
        problems.append(
            (
                "slot_capacities",
                f"slots sum to {total}, above the daily capacity {daily} "
                "(set allow_slot_overbooking to permit)",
            )
        )
    if alerts is not None and not 0 < alerts[0] < alerts[1] < alerts[2] <= 100:
        problems.append(("alert_levels", f"need 0 < yellow < orange < red <= 100, got {alerts}"))
    return problems
