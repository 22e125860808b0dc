"""Well-typed protobufs with hostile field values, one builder per kind of input.

Inputs that the contract refuses name the trap venues and passes (so acceptance would show as a
changed trap); inputs whose validity is debatable use unknown credentials at fuzz venues (so they
cannot change anything checked whatever the server decides).
"""

from __future__ import annotations

from loadtest import fuzz_world as w
from loadtest.fuzz_inputs import (
    ODD_STRINGS,
    REFUSE,
    UNDECODABLE_STREAM,
    Ctx,
    Probe,
    enum,
    finish,
    hostile_id,
    path,
)
from loadtest.fuzz_wire import placeholder
from proto.passgate.v1 import common_pb2, gate_pb2, passes_pb2

VALIDATE = path("Gate", "Validate")
_HUGE = 2 << 20
_GIANT = 17 << 20  # over the server's 16 MiB receive limit


def trap_request(ctx: Ctx) -> gate_pb2.ValidateRequest:
    """A request that would admit a trap pass at a trap venue, if nothing spoiled it."""
    venue = ctx.rng.choice(w.TRAP_VENUES)
    return gate_pb2.ValidateRequest(
        request_id=ctx.rid("tr"),
        venue_id=venue,
        gate_id=w.gate(venue, ctx.rng.randint(1, w.GATES_PER_VENUE)),
        credential=common_pb2.Credential(
            kind=w.CARD, value=w.trap_card(ctx.rng.randrange(w.TRAP_PASSES))
        ),
        direction=ctx.rng.choice((gate_pb2.DIRECTION_ENTRY, gate_pb2.DIRECTION_UNSPECIFIED)),
    )


def mix_request(ctx: Ctx) -> gate_pb2.ValidateRequest:
    """A good dry run that must be admitted (REASON_OK) and changes nothing."""
    venue = ctx.rng.choice(w.MIX_VENUES)
    return gate_pb2.ValidateRequest(
        request_id=ctx.rid("mx"),
        venue_id=venue,
        gate_id=w.gate(venue, ctx.rng.randint(1, w.GATES_PER_VENUE)),
        credential=common_pb2.Credential(
            kind=w.CARD, value=w.mix_card(ctx.rng.randrange(w.MIX_PASSES))
        ),
        direction=gate_pb2.DIRECTION_ENTRY,
        dry_run=True,
    )


def spoil_request(
    ctx: Ctx, req: gate_pb2.ValidateRequest, markers: list[str], utf8: bool = True
) -> str:
    """Makes exactly one thing about `req` invalid by the contract; returns a label."""
    rng = ctx.rng
    roll = rng.random()
    if roll < 0.55:
        fld = rng.choice(("request_id", "request_id", "venue_id", "gate_id"))
        label, value, spoil = hostile_id(rng, getattr(req, fld))
        while spoil and not utf8:
            label, value, spoil = hostile_id(rng, getattr(req, fld))
        setattr(req, fld, value)
        if spoil:
            markers.append(value)
        return f"{fld}={label}"
    if roll < 0.65:
        req.credential.kind = enum(rng.choice((0, 99, -1, 2**31 - 1)))
        return f"credential.kind={req.credential.kind}"
    if roll < 0.70:
        req.ClearField("credential")
        return "credential missing"
    if roll < 0.80:
        choice = rng.choice(("", "x" * 600, "utf8") if utf8 else ("", "x" * 600))
        if choice == "utf8":
            req.credential.value = marker = placeholder(rng)
            markers.append(marker)
            return "credential.value=not UTF-8"
        req.credential.value = choice
        return f"credential.value={len(choice)} chars"
    if roll < 0.90:
        req.direction = enum(rng.choice((7, -3, 3)))
        return f"direction={req.direction}"
    req.scanned_at_ms = rng.choice((-1, -(2**63)))
    return f"scanned_at_ms={req.scanned_at_ms}"


def validate_invalid(ctx: Ctx) -> Probe:
    req = trap_request(ctx)
    markers: list[str] = []
    expect = REFUSE
    if ctx.giant_left and ctx.rng.random() < 0.0005:
        ctx.giant_left -= 1
        req.request_id, label = "g" * _GIANT, "request_id=17 MiB"
        expect = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})
    elif ctx.huge_left and ctx.rng.random() < 0.002:
        ctx.huge_left -= 1
        req.request_id, label = "h" * _HUGE, "request_id=2 MiB"
    else:
        label = spoil_request(ctx, req, markers)
    return Probe("validate_invalid", VALIDATE, [finish(req, markers, ctx.rng)], label, expect)


def validate_odd(ctx: Ctx) -> Probe:
    rng = ctx.rng
    venue = rng.choice((*w.FUZZ_VENUES, f"fz-venue-{rng.randrange(8)}"))
    req = gate_pb2.ValidateRequest(
        request_id=ctx.rid("od"),
        venue_id=venue,
        gate_id=w.gate(venue, rng.randint(1, w.GATES_PER_VENUE)),
        credential=common_pb2.Credential(kind=enum(rng.randint(1, 3)), value=ctx.rid("UNK")),
        scanned_at_ms=rng.choice((0, 1, 2**63 - 1, 1_790_000_000_000)),
        dry_run=rng.random() < 0.3,
    )
    fld = rng.choice(("request_id", "venue_id", "gate_id", "credential.value"))
    odd = rng.choice(ODD_STRINGS)
    if fld == "credential.value":
        req.credential.value = odd + ctx.rid("")
    else:
        setattr(req, fld, odd)
    label = f"{fld}={odd[:12]!r}... ({len(odd.encode())} B)"
    # An entry with a credential nobody holds is never admitted, whatever else is odd about it.
    return Probe("validate_odd", VALIDATE, [req.SerializeToString()], label, check="deny")


def _mixed_items(
    ctx: Ctx, utf8: bool
) -> tuple[list[gate_pb2.ValidateRequest], list[str], list[str]]:
    rng = ctx.rng
    kinds = ["good"] * rng.randint(1, 20) + ["bad"] * rng.randint(1, 5)
    rng.shuffle(kinds)
    items, labels = [], []
    markers: list[str] = []
    for kind in kinds:
        if kind == "good":
            items.append(mix_request(ctx))
        else:
            req = trap_request(ctx)
            labels.append(spoil_request(ctx, req, markers, utf8=utf8))
            items.append(req)
    return items, kinds, labels


def batch_mixed(ctx: Ctx) -> Probe:
    items, kinds, labels = _mixed_items(ctx, utf8=False)
    msg = gate_pb2.ValidateBatchRequest(requests=items)
    info = {"kinds": kinds, "rids": [r.request_id for r in items]}
    label = f"{len(items)} items, bad: {'; '.join(labels)}"
    path_ = path("Gate", "ValidateBatch")
    return Probe(
        "batch_mixed", path_, [msg.SerializeToString()], label, frozenset({"OK"}), "batch", info
    )


def batch_undecodable(ctx: Ctx) -> Probe:
    items, _, _ = _mixed_items(ctx, utf8=False)
    markers = [placeholder(ctx.rng)]
    ctx.rng.choice(items).request_id = markers[0]
    data = finish(gate_pb2.ValidateBatchRequest(requests=items), markers, ctx.rng)
    label = f"{len(items)} items, one request_id not UTF-8"
    return Probe("batch_undecodable", path("Gate", "ValidateBatch"), [data], label, REFUSE)


def batch_oversize(ctx: Ctx) -> Probe:
    # Items that would each admit a trap pass: only the size makes this call invalid.
    n = ctx.rng.randint(1001, 1500)
    msg = gate_pb2.ValidateBatchRequest(requests=[trap_request(ctx) for _ in range(n)])
    return Probe(
        "batch_oversize",
        path("Gate", "ValidateBatch"),
        [msg.SerializeToString()],
        f"{n} items",
        REFUSE,
    )


def stream_mixed(ctx: Ctx) -> Probe:
    items, kinds, labels = _mixed_items(ctx, utf8=False)
    info = {"kinds": kinds, "rids": [r.request_id for r in items]}
    label = f"{len(items)} items, bad: {'; '.join(labels)}"
    payloads = [r.SerializeToString() for r in items]
    return Probe(
        "stream_mixed",
        path("Gate", "ValidateStream"),
        payloads,
        label,
        frozenset({"OK"}),
        "stream",
        info,
    )


def stream_undecodable(ctx: Ctx) -> Probe:
    items, _, _ = _mixed_items(ctx, utf8=False)
    payloads = [r.SerializeToString() for r in items]
    k = ctx.rng.randrange(len(payloads) + 1)
    bad = trap_request(ctx)
    bad.request_id = marker = placeholder(ctx.rng)
    payloads.insert(k, finish(bad, [marker], ctx.rng))
    label = f"{len(payloads)} items, item {k} not UTF-8"
    return Probe(
        "stream_undecodable", path("Gate", "ValidateStream"), payloads, label, UNDECODABLE_STREAM
    )


def good_record(ctx: Ctx) -> passes_pb2.PassRecord:
    rid = ctx.rid("FZG")
    return passes_pb2.PassRecord(
        pass_id=rid,
        product_id="t-annual",
        credentials=[common_pb2.Credential(kind=w.CARD, value=f"CARD-{rid}")],
        valid_from="2026-01-01",
        valid_until="2027-12-31",
    )


def _spoil_record(ctx: Ctx, rec: passes_pb2.PassRecord) -> str:
    rng = ctx.rng
    roll = rng.random()
    if roll < 0.4:
        label, value, spoil = hostile_id(rng, rec.pass_id)
        while spoil:  # a record that cannot be decoded is upsert_undecodable's business
            label, value, spoil = hostile_id(rng, rec.pass_id)
        rec.pass_id = value
        return f"pass_id={label}"
    if roll < 0.5:
        rec.product_id = rng.choice(("no-such-product", "", "t-annual\x00"))
        return f"product_id={rec.product_id!r}"
    if roll < 0.7:
        fld = rng.choice(("valid_from", "valid_until"))
        setattr(rec, fld, rng.choice(("2026-02-30", "2026-13-01", "not-a-date", "", "2026/10/01")))
        if rng.random() < 0.3:
            rec.valid_from, rec.valid_until, fld = (
                "2027-12-31",
                "2026-01-01",
                "valid_until<valid_from",
            )
        return f"{fld}={getattr(rec, fld.split('<')[0])!r}"
    if roll < 0.8:
        status, tier = rng.choice(((9, 0), (0, 7), (-1, 0)))
        rec.status, rec.credit_tier = enum(status), enum(tier)
        return f"status={rec.status} credit_tier={rec.credit_tier}"
    if roll < 0.9:
        rec.credentials[0].kind = enum(rng.choice((0, 99)))
        return f"credentials[0].kind={rec.credentials[0].kind}"
    rec.outstanding_debt_fen = -rng.randint(1, 10**6)
    return "outstanding_debt_fen<0"


def upsert_mixed(ctx: Ctx) -> Probe:
    rng = ctx.rng
    n_good = rng.choice((rng.randint(1, 5), rng.randint(1, 5), 99))
    kinds = ["good"] * n_good + ["bad"] * rng.randint(1, 4)
    rng.shuffle(kinds)
    records, labels = [], []
    good_ids, bad_cards = [], []
    for kind in kinds:
        rec = good_record(ctx)
        if kind == "bad":
            labels.append(_spoil_record(ctx, rec))
            bad_cards.append(f"CARD-{ctx.rid('FZB')}")
            rec.credentials.add(kind=w.CARD, value=bad_cards[-1])
        else:
            good_ids.append(rec.pass_id)
        records.append(rec.SerializeToString())
    info = {"good_ids": good_ids, "bad_cards": bad_cards}
    label = f"{n_good} good + {len(bad_cards)} bad: {'; '.join(labels)}"
    path_ = path("Passes", "UpsertPasses")
    return Probe("upsert_mixed", path_, records, label, frozenset({"OK"}), "upsert", info)


def upsert_undecodable(ctx: Ctx) -> Probe:
    records = [good_record(ctx).SerializeToString() for _ in range(ctx.rng.randint(1, 5))]
    bad = good_record(ctx)
    bad.pass_id = marker = placeholder(ctx.rng)
    k = ctx.rng.randrange(len(records) + 1)
    records.insert(k, finish(bad, [marker], ctx.rng))
    label = f"{len(records)} records, record {k} pass_id not UTF-8"
    return Probe(
        "upsert_undecodable", path("Passes", "UpsertPasses"), records, label, UNDECODABLE_STREAM
    )
