"""Reservation holders: before the traffic starts, some passes book the current time slot at the
venues that require a reservation (Passes.Reserve), so the mix has holders and non-holders.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime
from typing import Any

import grpc

from core.models import Province, Venue
from core.population import pass_id_of
from loadtest.client import ClientAuth
from loadtest.mix import MixPlan, pick_pass
from proto.passgate.v1 import passes_pb2, passes_pb2_grpc

CHUNK = 64
CALL_TIMEOUT_S = 10.0


def current_slot(venue: Venue, at: datetime) -> tuple[str, str] | None:
    """(local ISO date, slot_id) of the slot a scan at `at` would use, honouring the tolerance."""
    local = at.astimezone(venue.tz)
    minute = local.hour * 60 + local.minute
    for slot in venue.slots:
        lo = slot.start_min - venue.reservation_tolerance_before_min
        hi = slot.end_min + venue.reservation_tolerance_after_min
        if lo <= minute < hi:
            return local.date().isoformat(), slot.slot_id
    return None


def book_holders(
    target: str,
    province: Province,
    plan: MixPlan,
    at: datetime,
    per_venue: int,
    seed: int,
    auth: ClientAuth | None = None,
) -> tuple[MixPlan, dict[str, Any]]:
    """Books up to `per_venue` passes per reservation venue; returns the plan with its holders
    and {"requested", "confirmed", "venues"} counts, plus "error" when the server refused
    (the echo server has no Passes service): the run then goes on without holders."""
    rng = random.Random(seed + 17)
    wanted: list[tuple[int, int, passes_pb2.ReserveRequest]] = []
    for k, venue in enumerate(plan.venues):
        slot = current_slot(province.venues[venue.venue_id], at)
        if not venue.needs_reservation or slot is None or per_venue <= 0:
            continue
        chosen = {pick_pass(plan, venue, rng) for _ in range(per_venue)} - {None}
        for p in sorted(i for i in chosen if i is not None):
            req = passes_pb2.ReserveRequest(
                pass_id=pass_id_of(p), venue_id=venue.venue_id, date=slot[0], slot_id=slot[1]
            )
            wanted.append((k, p, req))
    holders: dict[int, list[int]] = {}
    error = None
    try:
        _reserve(target, wanted, holders, auth if auth is not None else ClientAuth.find())
    except grpc.RpcError as exc:
        holders, error = {}, f"Passes.Reserve: {exc.code().name}"  # type: ignore[attr-defined]
    venues = tuple(
        dataclasses.replace(v, holders=tuple(holders.get(k, ()))) for k, v in enumerate(plan.venues)
    )
    counts: dict[str, Any] = {
        "requested": len(wanted),
        "confirmed": sum(len(h) for h in holders.values()),
        "venues": len(holders),
    }
    if error:
        counts["error"] = error
    return dataclasses.replace(plan, venues=venues), counts


def _reserve(
    target: str,
    wanted: list[tuple[int, int, passes_pb2.ReserveRequest]],
    holders: dict[int, list[int]],
    auth: ClientAuth,
) -> None:
    with auth.channel(target) as channel:
        stub = passes_pb2_grpc.PassesStub(channel)
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start : start + CHUNK]
            futures = [stub.Reserve.future(req, timeout=CALL_TIMEOUT_S) for _, _, req in part]
            for (k, p, _), fut in zip(part, futures, strict=True):
                if fut.result().confirmed:
                    holders.setdefault(k, []).append(p)
