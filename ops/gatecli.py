"""A command-line gate for a person at a terminal: validate, look up, revoke, annul, watch.

python -m ops.gatecli validate --venue hz-leifeng --gate hz-leifeng-g01 --card DEMO-CARD-RESIDENT
python -m ops.gatecli pass --card DEMO-CARD-RESIDENT
python -m ops.gatecli revoke P0000000042
python -m ops.gatecli status hz-leifeng

It speaks TLS and sends a bearer token, both from the credentials directory that `make run`
creates: $PASSGATE_CREDENTIALS, else ./data/credentials, or --credentials DIR. The token is the
venue's gate token (tokens/gate-<venue>.jwt) for validate and annul when there is one, else the
admin token; --identity NAME (or a .jwt file) picks another.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import grpc

from core.credit import yuan
from ops import channels
from proto.passgate.v1 import (
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)

_KINDS = {"card": 1, "qr": 2, "id": 3}


def _credential(args: argparse.Namespace) -> common_pb2.Credential | None:
    for name, kind in _KINDS.items():
        value = getattr(args, name, None)
        if value:
            return common_pb2.Credential(kind=cast(Any, kind), value=value)
    return None


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def show_decision(d: gate_pb2.Decision) -> str:
    verdict = "ALLOWED" if d.allowed else "DENIED"
    reason = common_pb2.Reason.Name(d.reason)
    lines = [f"{verdict}  {reason}", f"  message:   {d.message}"]
    if d.pass_id:
        lines.append(f"  pass:      {d.pass_id}")
    remaining = "unlimited" if d.remaining_entries == -1 else str(d.remaining_entries)
    lines.append(f"  remaining: {remaining}")
    lines.append(f"  venue:     {common_pb2.AlertLevel.Name(d.venue_alert)}")
    if d.pay_later:
        lines.append(f"  pay later: charged {yuan(d.charge_fen)} yuan")
    if d.shared_card_suspected:
        lines.append("  shared card? the pass entered another venue too recently to be here")
    lines.append(f"  request:   {d.request_id} at {_when(d.decided_at_ms)}")
    return "\n".join(lines)


def show_pass(view: passes_pb2.PassView) -> str:
    p = getattr(view, "pass")
    creds = ", ".join(
        f"{_short(common_pb2.CredentialKind, c.kind)}:{c.value}" for c in p.credentials
    )
    status = f"  status {_short(passes_pb2.PassStatus, p.status)}"
    valid = f"  valid {p.valid_from} .. {p.valid_until}"
    lines = [f"pass {p.pass_id}  product {p.product_id}"]
    if not p.credentials and not p.credit_tier:
        # The limited view a gate or venue operator gets: no holder data at all.
        lines += [status + valid, "  holder data: not shown to this identity"]
    else:
        credit = f"  credit {_short(passes_pb2.CreditTier, p.credit_tier)}"
        lines += [
            status + credit + valid,
            f"  credentials: {creds}",
            f"  groups: {', '.join(p.groups) or '-'}",
        ]
    for u in view.usage:
        inside = " inside" if u.inside else ""
        lines.append(
            f"  {u.venue_id}: {u.entries} entries, {u.entries_today} today{inside}"
            + (f", last {_when(u.last_entry_ms)}" if u.last_entry_ms else "")
        )
    for r in view.reservations:
        state = _short(passes_pb2.ReservationState, r.state).lower()
        slot = f"{r.slot_start}-{r.slot_end} ({r.slot_id})"
        lines.append(f"  reservation {r.venue_id} {r.date} {slot}: {state}")
    for f in view.shared_card_flags:
        lines.append(
            f"  shared card? {_when(f.at_ms)} at {f.venue_id}"
            + (" (refused)" if f.refused else "")
            + f", {(f.at_ms - f.other_at_ms) // 60_000} min after {f.other_venue_id}"
            + f", {f.distance_m / 1000:.1f} km away"
        )
    if view.HasField("credit"):
        c = view.credit
        lines.append(
            f"  pay-later debt {yuan(c.debt_fen)} of {yuan(c.limit_fen)} yuan"
            f" (imported {yuan(c.imported_debt_fen)})"
        )
        for charge in c.charges:
            state = _short(passes_pb2.ChargeState, charge.state).lower()
            lines.append(
                f"    {_when(charge.at_ms)} {charge.venue_id} {yuan(charge.amount_fen)} yuan:"
                f" {state} (request {charge.request_id})"
            )
    return "\n".join(lines)


def _short(enum: Any, value: int) -> str:
    """`value`'s name without its enum's prefix (ALERT_LEVEL_GREEN -> GREEN): the prefix of the
    enum's 0, `..._UNSPECIFIED`."""
    return str(enum.Name(value)).removeprefix(enum.Name(0).removesuffix("UNSPECIFIED"))


def show_status(s: quota_pb2.VenueStatus) -> str:
    mtf = "not filling" if s.minutes_to_full < 0 else f"{s.minutes_to_full:.0f} min"
    lines = [
        f"{s.venue_id}: {_short(common_pb2.AlertLevel, s.alert)}"
        + ("  PAUSED" if s.paused else ""),
        f"  inside {s.occupancy}/{s.instant_capacity}  today {s.entries_today}/{s.daily_capacity}"
        f"  exits {s.exits_today}"
        + (f" (+{s.unmatched_exits_today} unmatched)" if s.unmatched_exits_today else ""),
        f"  {s.entries_per_minute:.1f} entries/min, full in {mtf}",
    ]
    for slot in s.slots:
        lines.append(f"  slot {slot.slot_id}: {slot.reserved}/{slot.capacity} reserved")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatecli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--target", default="127.0.0.1:50051", help="passgate host:port")
    p.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="credentials directory (default: $PASSGATE_CREDENTIALS, else ./data/credentials)",
    )
    p.add_argument(
        "--identity",
        default=None,
        help="whose token to send: a name under <credentials>/tokens/ or a .jwt file "
        "(default: gate-<venue> for validate and annul when it exists, else admin)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, for a server started with --insecure (the token is still sent)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="ask whether a credential may enter")
    v.add_argument("--venue", required=True)
    v.add_argument("--gate", required=True)
    v.add_argument("--exit", action="store_true", help="an exit instead of an entry")
    v.add_argument("--dry-run", action="store_true")
    v.add_argument("--request-id", default=None, help="reuse to retry idempotently")
    g = sub.add_parser("pass", help="look up a pass and its usage")
    g.add_argument("--pass-id", default=None)
    a = sub.add_parser("annul", help="undo an entry whose turnstile did not turn")
    a.add_argument("request_id")
    a.add_argument("--venue", required=True)
    a.add_argument("--gate", required=True)
    for cmd in (v, g, a):
        for name in _KINDS:
            cmd.add_argument(f"--{name}", default=None, help=f"{name.upper()} credential value")
    r = sub.add_parser("revoke", help="revoke a pass (reported lost)")
    r.add_argument("pass_id")
    r.add_argument("--reason", default="reported lost")
    s = sub.add_parser("status", help="a venue's live capacity")
    s.add_argument("venue")
    return p


def run(args: argparse.Namespace, channel: grpc.Channel) -> str:
    gate = gate_pb2_grpc.GateStub(channel)
    passes = passes_pb2_grpc.PassesStub(channel)
    if args.cmd == "validate":
        req = gate_pb2.ValidateRequest(
            request_id=args.request_id or uuid.uuid4().hex,
            venue_id=args.venue,
            gate_id=args.gate,
            credential=_credential(args),
            direction=cast(Any, 2 if args.exit else 1),
            dry_run=args.dry_run,
        )
        return show_decision(gate.Validate(req, timeout=5))
    if args.cmd == "pass":
        ref = passes_pb2.PassRef(pass_id=args.pass_id or "", credential=_credential(args))
        return show_pass(passes.GetPass(ref, timeout=5))
    if args.cmd == "revoke":
        revoke = passes_pb2.RevokeRequest(pass_id=args.pass_id, reason=args.reason)
        return "revoked\n" + show_pass(passes.RevokePass(revoke, timeout=5))
    if args.cmd == "annul":
        ann = gate_pb2.AnnulRequest(
            request_id=args.request_id,
            venue_id=args.venue,
            gate_id=args.gate,
            credential=_credential(args),
        )
        resp = gate.Annul(ann, timeout=5)
        return f"{'annulled' if resp.annulled else 'not annulled'}: {resp.reason}"
    quota = quota_pb2_grpc.QuotaStub(channel)
    return show_status(quota.GetVenueStatus(quota_pb2.VenueRef(venue_id=args.venue), timeout=5))


def identity_for(args: argparse.Namespace, creds_dir: Path) -> str:
    """--identity, else the venue's gate token for a gate's own calls when there is one, else
    the admin token."""
    if args.identity:
        return str(args.identity)
    if args.cmd in ("validate", "annul"):
        gate = f"gate-{args.venue}"
        if (creds_dir / "tokens" / f"{gate}.jwt").is_file():
            return gate
    return "admin"


def _open(args: argparse.Namespace) -> grpc.Channel:
    creds_dir = args.credentials or channels.default_credentials_dir()
    who = identity_for(args, creds_dir)
    return channels.channel(args.target, who, creds_dir, insecure=args.insecure)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        channel = _open(args)
    except OSError as exc:
        where = args.credentials or channels.default_credentials_dir()
        print(
            f"error: cannot read the credentials in {where} ({exc.strerror or exc}): start "
            "passgate once (make run) or run `python -m ops.credentials init`, or pass "
            "--credentials DIR",
            file=sys.stderr,
        )
        return 2
    with channel:
        try:
            print(run(args, channel))
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
