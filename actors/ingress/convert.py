"""Proto <-> records at the gRPC boundary, with the checks that turn a malformed call into a
`BadRequest` naming the field. Limits come from `core.limits` (characters and bytes). Nothing here
touches state, and no message quotes more than a short prefix of caller input."""

from __future__ import annotations

import functools
from datetime import date

from actors.errors import BadRequest
from core.limits import (
    CREDENTIAL_VALUE,
    ID,
    MAX_CREDENTIALS_PER_PASS,
    MAX_GROUPS_PER_PASS,
    Limit,
    echo,
    text_problem,
)
from core.models import CredentialKind, CreditTier, PassStatus, Province
from core.records import Decision, PassRecord, Request, SharedFlag
from proto.passgate.v1 import common_pb2, gate_pb2, passes_pb2

_KINDS = {int(k) for k in CredentialKind if k != CredentialKind.UNSPECIFIED}
_DIRECTIONS = {0, 1, 2}
_MAX_MS = 1 << 53


def text(value: str, field: str, limit: Limit = ID, *, required: bool = True) -> str:
    problem = text_problem(value, limit, required=required)
    if problem is not None:
        raise BadRequest(field, problem)
    return value


def kind(value: int, field: str) -> int:
    if value == CredentialKind.UNSPECIFIED:
        raise BadRequest(field, "required (CARD, QR or ID)")
    if value not in _KINDS:
        raise BadRequest(field, f"unknown value {value}")
    return value


def credential(cred: common_pb2.Credential, field: str) -> tuple[int, str]:
    return kind(cred.kind, f"{field}.kind"), text(cred.value, f"{field}.value", CREDENTIAL_VALUE)


def request_from_proto(req: gate_pb2.ValidateRequest) -> Request:
    """Checks a ValidateRequest and returns the record its shard decides."""
    text(req.request_id, "request_id")
    text(req.venue_id, "venue_id")
    text(req.gate_id, "gate_id")
    if not req.HasField("credential"):
        raise BadRequest("credential", "required")
    cred_kind, value = credential(req.credential, "credential")
    if req.direction not in _DIRECTIONS:
        raise BadRequest("direction", f"unknown value {req.direction}")
    if not 0 <= req.scanned_at_ms < _MAX_MS:
        raise BadRequest("scanned_at_ms", "out of range")
    # Plain ints for the enums: msgspec does not validate on construction (see core.records).
    return Request(
        req.request_id,
        req.venue_id,
        req.gate_id,
        cred_kind,  # type: ignore[arg-type]
        value,
        req.direction or 1,  # type: ignore[arg-type]
        req.scanned_at_ms,
        req.dry_run,
    )


def decision_proto(d: Decision) -> gate_pb2.Decision:
    return gate_pb2.Decision(
        request_id=d.request_id,
        allowed=d.allowed,
        reason=d.reason,  # type: ignore[arg-type]
        message=d.message,
        pass_id=d.pass_id,
        remaining_entries=d.remaining_entries,
        venue_alert=d.venue_alert,  # type: ignore[arg-type]
        pay_later=d.pay_later,
        decided_at_ms=d.decided_at_ms,
        charge_fen=d.charge_fen,
        shared_card_suspected=d.shared_card,
    )


def shared_flag_proto(f: SharedFlag) -> passes_pb2.SharedCardFlag:
    return passes_pb2.SharedCardFlag(
        at_ms=f.at_ms,
        venue_id=f.venue_id,
        other_venue_id=f.other_venue_id,
        other_at_ms=f.other_at_ms,
        distance_m=f.distance_m,
        refused=f.refused,
    )


def invalid_decision(request_id: str, problem: str) -> gate_pb2.Decision:
    """The answer for one malformed item inside a batch or stream: it fails alone."""
    rid = request_id if text_problem(request_id) is None else ""
    return gate_pb2.Decision(request_id=rid, allowed=False, message=f"INVALID_ARGUMENT: {problem}")


def parse_iso_date(value: str, field: str) -> int:
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value).toordinal()
    except (TypeError, ValueError):
        raise BadRequest(field, f"not an ISO date (YYYY-MM-DD): {echo(value)}") from None


@functools.lru_cache(maxsize=4096)
def iso_date(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat() if ordinal > 0 else ""


def pass_from_proto(rec: passes_pb2.PassRecord, province: Province) -> PassRecord:
    """Checks an imported PassRecord; raises BadRequest naming the field."""
    text(rec.pass_id, "pass_id")
    text(rec.product_id, "product_id")
    if rec.product_id not in province.products:
        raise BadRequest("product_id", f"unknown product {echo(rec.product_id)}")
    if not rec.credentials:
        raise BadRequest("credentials", "at least one credential is required")
    if len(rec.credentials) > MAX_CREDENTIALS_PER_PASS:
        raise BadRequest("credentials", f"more than {MAX_CREDENTIALS_PER_PASS}")
    creds = tuple(credential(cred, f"credentials[{i}]") for i, cred in enumerate(rec.credentials))
    valid_from = parse_iso_date(rec.valid_from, "valid_from")
    valid_until = parse_iso_date(rec.valid_until, "valid_until")
    if valid_until < valid_from:
        raise BadRequest("valid_until", "is before valid_from")
    if rec.status not in (0, 1, 2, 3):
        raise BadRequest("status", f"unknown value {rec.status}")
    if rec.credit_tier not in (0, 1, 2, 3):
        raise BadRequest("credit_tier", f"unknown value {rec.credit_tier}")
    if rec.outstanding_debt_fen < 0:
        raise BadRequest("outstanding_debt_fen", "must not be negative")
    if len(rec.groups) > MAX_GROUPS_PER_PASS:
        raise BadRequest("groups", f"more than {MAX_GROUPS_PER_PASS}")
    for i, group in enumerate(rec.groups):
        text(group, f"groups[{i}]")
    return PassRecord(
        pass_id=rec.pass_id,
        product_id=rec.product_id,
        credentials=creds,  # type: ignore[arg-type]
        valid_from=valid_from,
        valid_until=valid_until,
        status=PassStatus(rec.status or PassStatus.ACTIVE),
        credit_tier=CreditTier(rec.credit_tier or CreditTier.NORMAL),
        groups=frozenset(rec.groups),
        outstanding_debt_fen=rec.outstanding_debt_fen,
    )


def pass_proto(p: PassRecord) -> passes_pb2.PassRecord:
    return passes_pb2.PassRecord(
        pass_id=p.pass_id,
        product_id=p.product_id,
        credentials=[common_pb2.Credential(kind=int(k), value=v) for k, v in p.credentials],  # type: ignore[arg-type]
        valid_from=iso_date(p.valid_from),
        valid_until=iso_date(p.valid_until),
        status=int(p.status),  # type: ignore[arg-type]
        credit_tier=int(p.credit_tier),  # type: ignore[arg-type]
        groups=sorted(p.groups),
        outstanding_debt_fen=p.outstanding_debt_fen,
    )
