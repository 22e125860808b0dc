"""Hostile calls to the non-validation methods (passes, reservations, quotas, annul), request_id
hijacks against answered canary calls, and EXIT scans with credentials nobody holds."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from loadtest import fuzz_world as w
from loadtest.fuzz_inputs import REFUSE_OR_MISSING, Ctx, Probe, enum, finish, hostile_id, path
from proto.passgate.v1 import common_pb2, gate_pb2, passes_pb2, quota_pb2

# (venue, daily, instant, slots) of the trap venues as configured in the test province.
_TRAP_QUOTAS = {
    "t-quota": (10_000, 1_000, {}),
    "t-hard": (10_000, 1_000, {}),
    "t-museum": (10_000, 1_000, {"am": 20, "pm1": 10, "pm2": 10}),
}
_BAD_DATES = ("2026-02-30", "2026-13-01", "2026/10/01", "not-a-date", "10/01/2026", "-2026-10-01")
_CHECKS = {"Annul": "annul", "Reserve": "reserve", "CancelReservation": "reserve"}


def _refused(ctx: Ctx, method: str, msg: Message, markers: list[str], label: str) -> Probe:
    """A call the contract refuses: INVALID_ARGUMENT, or NOT_FOUND for an id that names nothing."""
    name = method.rsplit("/", 1)[1]
    data = finish(msg, markers, ctx.rng)
    return Probe(
        f"{name}_hostile",
        method,
        [data],
        f"{name} {label}",
        REFUSE_OR_MISSING,
        _CHECKS.get(name, ""),
    )


def _spoil(ctx: Ctx, msg: Message, fld: str, markers: list[str]) -> str:
    label, value, spoil = hostile_id(ctx.rng, getattr(msg, fld))
    setattr(msg, fld, value)
    if spoil:
        markers.append(value)
    return f"{fld}={label}"


def passes_hostile(ctx: Ctx) -> Probe:
    rng = ctx.rng
    markers: list[str] = []
    pid = w.trap_pass(rng.randrange(w.TRAP_PASSES))
    roll = rng.random()
    if roll < 0.25:
        ref = passes_pb2.PassRef(pass_id=pid)
        if rng.random() < 0.5:
            return _refused(
                ctx, path("Passes", "GetPass"), ref, markers, _spoil(ctx, ref, "pass_id", markers)
            )
        ref = passes_pb2.PassRef(
            credential=common_pb2.Credential(kind=w.CARD, value=w.trap_card(0))
        )
        if rng.random() < 0.5:
            ref.credential.kind = enum(rng.choice((0, 99, -1)))
            label = f"credential.kind={ref.credential.kind}"
        else:
            label = "credential." + _spoil(ctx, ref.credential, "value", markers)
        return _refused(ctx, path("Passes", "GetPass"), ref, markers, label)
    if roll < 0.45:
        rev = passes_pb2.RevokeRequest(pass_id=pid, reason=rng.choice(("lost", "x" * 100_000)))
        return _refused(
            ctx, path("Passes", "RevokePass"), rev, markers, _spoil(ctx, rev, "pass_id", markers)
        )
    cls = passes_pb2.ReserveRequest if roll < 0.8 else passes_pb2.CancelReservationRequest
    method = path("Passes", "Reserve" if cls is passes_pb2.ReserveRequest else "CancelReservation")
    req = cls(pass_id=pid, venue_id=w.TRAP_SLOT_VENUE, date=w.TODAY, slot_id=w.CURRENT_SLOT)
    fld = rng.choice(("pass_id", "pass_id", "venue_id", "date", "slot_id"))
    if fld == "date" and rng.random() < 0.6:
        req.date = rng.choice(_BAD_DATES)
        return _refused(ctx, method, req, markers, f"date={req.date!r}")
    return _refused(ctx, method, req, markers, _spoil(ctx, req, fld, markers))


def quota_hostile(ctx: Ctx) -> Probe:
    rng = ctx.rng
    markers: list[str] = []
    venue = rng.choice(w.ALL_TRAP_VENUES)
    if rng.random() < 0.45:
        name = rng.choice(("GetVenueStatus", "PauseEntry", "ResumeEntry", "WatchVenueStatus"))
        ref = quota_pb2.VenueRef(venue_id=venue)
        return _refused(
            ctx, path("Quota", name), ref, markers, _spoil(ctx, ref, "venue_id", markers)
        )
    daily, instant, slots = _TRAP_QUOTAS[venue]
    q = quota_pb2.VenueQuota(
        venue_id=venue,
        daily_capacity=daily,
        instant_capacity=instant,
        slot_capacities=[quota_pb2.SlotCapacity(slot_id=s, capacity=c) for s, c in slots.items()],
        alert_levels=quota_pb2.AlertLevels(yellow_pct=80, orange_pct=90, red_pct=95),
    )
    roll = rng.random()
    if roll < 0.2:
        label = _spoil(ctx, q, "venue_id", markers)
    elif roll < 0.4:
        q.daily_capacity = rng.choice((0, -1, -(2**31)))
        label = f"daily_capacity={q.daily_capacity}"
    elif roll < 0.55:
        q.instant_capacity = rng.choice((0, -5, daily + 1))
        label = f"instant_capacity={q.instant_capacity}"
    elif roll < 0.8:
        if slots and rng.random() < 0.5:
            q.slot_capacities[0].capacity = -1
            label = f"slot_capacities: {q.slot_capacities[0].slot_id} capacity=-1"
        else:
            slot = q.slot_capacities.add(slot_id=rng.choice(("zz", *slots)), capacity=5)
            label = "slot_capacities: " + _spoil(ctx, slot, "slot_id", markers)
    else:
        a = q.alert_levels
        a.yellow_pct, a.orange_pct, a.red_pct = rng.choice(
            ((90, 80, 95), (80, 90, 101), (-1, 50, 60))
        )
        label = f"alert_levels={a.yellow_pct}/{a.orange_pct}/{a.red_pct}"
    return _refused(ctx, path("Quota", "SetVenueQuota"), q, markers, label)


def _annul(rid: str, venue: str, gate_id: str, card: str) -> gate_pb2.AnnulRequest:
    fields: dict[str, Any] = {"request_id": rid, "venue_id": venue, "gate_id": gate_id}
    # The contract may also ask for the credential of the entry to annul.
    if "credential" in gate_pb2.AnnulRequest.DESCRIPTOR.fields_by_name:
        fields["credential"] = common_pb2.Credential(kind=w.CARD, value=card)
    return gate_pb2.AnnulRequest(**fields)


def annul_hostile(ctx: Ctx) -> Probe:
    venue = ctx.rng.choice(w.TRAP_VENUES)
    card = w.trap_card(ctx.rng.randrange(w.TRAP_PASSES))
    req = _annul(ctx.rid("tr"), venue, w.gate(venue, 1), card)
    markers: list[str] = []
    fld = ctx.rng.choice(("request_id", "venue_id", "gate_id"))
    return _refused(ctx, path("Gate", "Annul"), req, markers, _spoil(ctx, req, fld, markers))


def hijack(ctx: Ctx) -> Probe:
    """Reuses an answered canary call's request_id: from another gate (Validate or Annul), or from
    the same gate with a credential nobody holds. Either must reveal and change nothing."""
    if not ctx.completed:
        return annul_hostile(ctx)
    rng = ctx.rng
    rid, venue, gate_n, victim, card = rng.choice(ctx.completed[-500:])
    other = w.gate(venue, rng.choice([n for n in range(1, w.GATES_PER_VENUE + 1) if n != gate_n]))
    info = {"victim_pass": victim}
    if rng.random() < 0.3:
        req = _annul(rid, venue, other, card)
        return Probe(
            "hijack",
            path("Gate", "Annul"),
            [req.SerializeToString()],
            "Annul from another gate",
            None,
            "annul",
            info,
        )
    same = rng.random() < 0.5
    v = gate_pb2.ValidateRequest(
        request_id=rid,
        venue_id=venue,
        gate_id=w.gate(venue, gate_n) if same else other,
        credential=common_pb2.Credential(kind=w.CARD, value=ctx.rid("HJ-CARD")),
        direction=gate_pb2.DIRECTION_ENTRY,
    )
    label = "Validate, same gate, bogus card" if same else "Validate from another gate, bogus card"
    return Probe(
        "hijack", path("Gate", "Validate"), [v.SerializeToString()], label, None, "hijack", info
    )


def unknown_exit(ctx: Ctx) -> Probe:
    v = gate_pb2.ValidateRequest(
        request_id=ctx.rid("ux"),
        venue_id=w.HOLD_VENUE,
        gate_id=w.gate(w.HOLD_VENUE, ctx.rng.randint(1, w.GATES_PER_VENUE)),
        credential=common_pb2.Credential(
            kind=enum(ctx.rng.randint(1, 3)), value=ctx.rid("UX-CARD")
        ),
        direction=gate_pb2.DIRECTION_EXIT,
    )
    return Probe(
        "unknown_exit",
        path("Gate", "Validate"),
        [v.SerializeToString()],
        "EXIT, unknown credential",
    )
