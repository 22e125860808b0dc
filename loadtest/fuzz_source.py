"""The seeded stream of fuzz inputs: which kind comes next, and the valid templates that the
mutated inputs start from (fuzz venues and passes only, so a mutation that stays valid touches
nothing the state checks look at)."""

from __future__ import annotations

import random
from collections.abc import Callable

from loadtest import fuzz_ops as ops
from loadtest import fuzz_typed as typed
from loadtest import fuzz_world as w
from loadtest.fuzz_inputs import (
    Ctx,
    Probe,
    enum,
    mutated_probe,
    random_bytes_probe,
    random_wire_probe,
    unknown_method_probe,
)
from loadtest.fuzz_transport import raw_probe
from proto.passgate.v1 import common_pb2, gate_pb2, passes_pb2, quota_pb2


def _fuzz_request(ctx: Ctx) -> gate_pb2.ValidateRequest:
    rng = ctx.rng
    venue = rng.choice(w.FUZZ_VENUES)
    return gate_pb2.ValidateRequest(
        request_id=ctx.rid("fz"),
        venue_id=venue,
        gate_id=w.gate(venue, rng.randint(1, w.GATES_PER_VENUE)),
        credential=common_pb2.Credential(
            kind=rng.choice((w.CARD, w.QR)), value=w.fuzz_card(rng.randrange(w.FUZZ_PASSES))
        ),
        direction=enum(rng.choice((0, 1, 2))),
        scanned_at_ms=rng.choice((0, 1_790_000_000_000)),
        dry_run=rng.random() < 0.5,
    )


def templates(ctx: Ctx, method: str) -> list[bytes]:
    """Valid serialized requests for `method` (one per stream item) naming fuzz ids only."""
    rng = ctx.rng
    name = method.rsplit("/", 1)[1]
    venue = rng.choice(w.FUZZ_VENUES)
    pid = f"FZ-{rng.randrange(w.FUZZ_PASSES)}"
    msg: object
    if name == "Validate":
        msg = _fuzz_request(ctx)
    elif name == "ValidateStream":
        return [_fuzz_request(ctx).SerializeToString() for _ in range(rng.randint(1, 5))]
    elif name == "ValidateBatch":
        msg = gate_pb2.ValidateBatchRequest(
            requests=[_fuzz_request(ctx) for _ in range(rng.randint(1, 5))]
        )
    elif name == "Annul":
        msg = gate_pb2.AnnulRequest(
            request_id=ctx.rid("fz"), venue_id=venue, gate_id=w.gate(venue, 1)
        )
    elif name == "UpsertPasses":
        recs = [typed.good_record(ctx) for _ in range(rng.randint(1, 3))]
        return [r.SerializeToString() for r in recs]
    elif name == "GetPass":
        msg = passes_pb2.PassRef(pass_id=pid)
    elif name == "RevokePass":
        msg = passes_pb2.RevokeRequest(pass_id=pid, reason="lost")
    elif name in ("Reserve", "CancelReservation"):
        booking = (
            passes_pb2.ReserveRequest if name == "Reserve" else passes_pb2.CancelReservationRequest
        )
        msg = booking(pass_id=pid, venue_id=venue, date=w.TODAY, slot_id=w.CURRENT_SLOT)
    elif name == "SetVenueQuota":
        msg = quota_pb2.VenueQuota(
            venue_id=venue,
            daily_capacity=10_000,
            instant_capacity=1_000,
            alert_levels=quota_pb2.AlertLevels(yellow_pct=80, orange_pct=90, red_pct=95),
        )
    else:  # GetVenueStatus, WatchVenueStatus, PauseEntry, ResumeEntry
        msg = quota_pb2.VenueRef(venue_id=venue)
    return [msg.SerializeToString()]  # type: ignore[attr-defined]


Builder = Callable[[Ctx], Probe | None]
# Relative weights of the kinds of input.
WEIGHTS: dict[str, tuple[float, Builder]] = {
    "random_bytes": (10, random_bytes_probe),
    "random_wire": (8, random_wire_probe),
    "mutated": (30, lambda ctx: mutated_probe(ctx, templates)),
    "validate_invalid": (14, typed.validate_invalid),
    "validate_odd": (6, typed.validate_odd),
    "batch_mixed": (4, typed.batch_mixed),
    "batch_undecodable": (1, typed.batch_undecodable),
    "batch_oversize": (0.5, typed.batch_oversize),
    "stream_mixed": (3, typed.stream_mixed),
    "stream_undecodable": (1, typed.stream_undecodable),
    "upsert_mixed": (2, typed.upsert_mixed),
    "upsert_undecodable": (0.5, typed.upsert_undecodable),
    "passes_hostile": (7, ops.passes_hostile),
    "quota_hostile": (5, ops.quota_hostile),
    "annul_hostile": (3, ops.annul_hostile),
    "hijack": (2, ops.hijack),
    "unknown_exit": (2, ops.unknown_exit),
    "unknown_method": (1, unknown_method_probe),
    "raw_transport": (1, raw_probe),
}


class ProbeSource:
    """Draws the campaign's inputs. The first round takes every kind once, in order, so even a
    short run covers them all; after that the kinds are drawn by weight. Inputs that a mutation
    steered onto a checked id are skipped and counted (`skipped`)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self._names = list(WEIGHTS)
        self._weights = [WEIGHTS[n][0] for n in self._names]
        self._drawn = 0
        self.skipped = 0

    def next(self) -> Probe:
        for _ in range(1000):
            name = self._pick()
            probe = WEIGHTS[name][1](self.ctx)
            if probe is not None:
                return probe
            self.skipped += 1
        raise RuntimeError("the input source keeps naming protected ids")

    def _pick(self) -> str:
        self._drawn += 1
        if self._drawn <= len(self._names):
            return self._names[self._drawn - 1]
        return random.Random.choices(self.ctx.rng, self._names, self._weights)[0]
