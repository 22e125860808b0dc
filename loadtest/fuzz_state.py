"""Before and after the fuzz campaign: import the world, admit the holders, snapshot and compare.

All calls here are well-formed and go through the ordinary generated stubs on a plain channel;
the campaign's hostile traffic is not running while they do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from loadtest import fuzz_world as w
from proto.passgate.v1 import (
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)

CALL_TIMEOUT_S = 30.0
# Venue figures that only well-formed traffic may move; rates and alert follow from them.
_VENUE_FIELDS = (
    "occupancy",
    "entries_today",
    "exits_today",
    "daily_capacity",
    "instant_capacity",
    "paused",
)
Snapshot = dict[str, dict[str, Any]]


@dataclass
class CanaryLedger:
    """What the canary flow was told: the state checks expect exactly this much change."""

    entries: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    # (pass_id, venue) -> entries admitted
    pass_entries: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Calls whose outcome stayed unknown after retries, per venue: each may or may not count.
    uncertain: Counter[str] = field(default_factory=Counter)


def setup_world(channel: grpc.Channel, token: str) -> dict[str, Any]:
    """Imports the world's passes and admits the holders at HOLD_VENUE; returns what happened."""
    _require_venues(channel)
    summary = passes_pb2_grpc.PassesStub(channel).UpsertPasses(
        w.world_records(), timeout=CALL_TIMEOUT_S
    )
    if summary.upserted != w.world_size() or summary.rejected:
        raise RuntimeError(f"importing the fuzz world failed: {MessageToDict(summary)}")
    gate = gate_pb2_grpc.GateStub(channel)
    admitted = 0
    for i in range(w.HOLD_PASSES):
        d = gate.Validate(
            gate_pb2.ValidateRequest(
                request_id=f"hold-{token}-{i}",
                venue_id=w.HOLD_VENUE,
                gate_id=w.gate(w.HOLD_VENUE, 1),
                credential=common_pb2.Credential(kind=w.CARD, value=w.hold_card(i)),
                direction=gate_pb2.DIRECTION_ENTRY,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        admitted += d.allowed
    return {"imported": summary.upserted, "holders_admitted": admitted}


def _require_venues(channel: grpc.Channel) -> None:
    quota = quota_pb2_grpc.QuotaStub(channel)
    for venue in (*w.checked_venues(), *w.FUZZ_VENUES):
        try:
            quota.GetVenueStatus(quota_pb2.VenueRef(venue_id=venue), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise RuntimeError(
                f"venue {venue!r}: {exc.code().name}; the fuzz campaign needs a server running "
                "the test province (run_cluster.py --config tests/e2e/province)"
            ) from None


def snapshot(channel: grpc.Channel) -> Snapshot:
    """The checked venues' figures and the checked passes' records and usage."""
    quota = quota_pb2_grpc.QuotaStub(channel)
    passes = passes_pb2_grpc.PassesStub(channel)
    venues: dict[str, Any] = {}
    for venue in w.checked_venues():
        st = quota.GetVenueStatus(quota_pb2.VenueRef(venue_id=venue), timeout=CALL_TIMEOUT_S)
        row = {f: getattr(st, f) for f in _VENUE_FIELDS}
        row["slots"] = {s.slot_id: (s.capacity, s.reserved, s.admitted) for s in st.slots}
        venues[venue] = row
    views: dict[str, Any] = {}
    for pass_id in w.checked_passes():
        view = passes.GetPass(passes_pb2.PassRef(pass_id=pass_id), timeout=CALL_TIMEOUT_S)
        views[pass_id] = {
            "record": MessageToDict(getattr(view, "pass")),
            "usage": {u.venue_id: (u.entries, u.inside) for u in view.usage},
        }
    return {"venues": venues, "passes": views}


class _Findings:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def same(self, what: str, before: Any, after: Any) -> None:
        if before == after:
            return
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(set(before) | set(after)):
                self.same(f"{what}.{key}", before.get(key), after.get(key))
            return
        self.problems.append(f"{what}: {before!r} -> {after!r}")

    def expect(self, what: str, got: int, low: int, high: int) -> None:
        if not low <= got <= high:
            want = str(low) if low == high else f"{low}..{high}"
            self.problems.append(f"{what}: expected {want}, got {got}")

    def result(self) -> dict[str, Any]:
        return {"ok": not self.problems, "count": len(self.problems), "samples": self.problems}


def compare(before: Snapshot, after: Snapshot, ledger: CanaryLedger) -> dict[str, dict[str, Any]]:
    """One result per state check: trap, canary, holders' occupancy, mixed passes."""
    return {
        "trap_state_unchanged": _traps(before, after),
        "canary_state_exact": _canaries(before, after, ledger),
        "occupancy_not_lowered": _holders(before, after),
        "mix_passes_unchanged": _unchanged(
            before, after, [f"MIX-{i}" for i in range(w.MIX_PASSES)]
        ),
    }


def _traps(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    f = _Findings()
    for venue in w.ALL_TRAP_VENUES:
        f.same(venue, before["venues"][venue], after["venues"][venue])
    for i in range(w.TRAP_PASSES):
        pid = w.trap_pass(i)
        f.same(pid, before["passes"][pid], after["passes"][pid])
    return f.result()


def _unchanged(before: Snapshot, after: Snapshot, pass_ids: list[str]) -> dict[str, Any]:
    f = _Findings()
    for pid in pass_ids:
        f.same(pid, before["passes"][pid], after["passes"][pid])
    for venue in w.MIX_VENUES:
        f.same(venue, before["venues"][venue], after["venues"][venue])
    return f.result()


def _canaries(before: Snapshot, after: Snapshot, ledger: CanaryLedger) -> dict[str, Any]:
    f = _Findings()
    for venue in w.CANARY_VENUES:
        b, a = before["venues"][venue], after["venues"][venue]
        slack = ledger.uncertain[venue]
        for fld, delta in (("entries_today", ledger.entries), ("exits_today", ledger.exits)):
            want = b[fld] + delta[venue]
            f.expect(f"{venue}.{fld}", a[fld], want, want + slack)
        occ = b["occupancy"] + ledger.entries[venue] - ledger.exits[venue]
        f.expect(f"{venue}.occupancy", a["occupancy"], occ - slack, occ + slack)
        for fld in ("daily_capacity", "instant_capacity", "paused", "slots"):
            f.same(f"{venue}.{fld}", b[fld], a[fld])
    for i in range(w.CANARY_PASSES):
        pid = w.canary_pass(i)
        b, a = before["passes"][pid], after["passes"][pid]
        f.same(f"{pid}.record", b["record"], a["record"])
        for venue in w.CANARY_VENUES:
            got = a["usage"].get(venue, (0, False))[0]
            want = b["usage"].get(venue, (0, False))[0] + ledger.pass_entries[(pid, venue)]
            f.expect(f"{pid}.usage[{venue}].entries", got, want, want + ledger.uncertain[venue])
        for venue in set(a["usage"]) - set(w.CANARY_VENUES):
            f.same(f"{pid}.usage[{venue}]", b["usage"].get(venue), a["usage"][venue])
    return f.result()


def _holders(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    f = _Findings()
    b, a = before["venues"][w.HOLD_VENUE], after["venues"][w.HOLD_VENUE]
    # Unknown exits may be recorded (and counted apart), but must not move these figures.
    for fld in ("occupancy", "entries_today", "daily_capacity", "instant_capacity", "paused"):
        f.same(f"{w.HOLD_VENUE}.{fld}", b[fld], a[fld])
    for i in range(w.HOLD_PASSES):
        pid = w.hold_pass(i)
        f.same(pid, before["passes"][pid], after["passes"][pid])
    return f.result()
