"""Proto <-> core at the gRPC boundary, with the checks that turn a malformed call into a
`BadRequest` naming the field. Nothing here touches state."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

from actors.errors import BadRequest
from core.models import CredentialKind, CreditTier, PassRecord, PassStatus, Province
from proto.passgate.v1 import common_pb2, gate_pb2, passes_pb2

MAX_ID_LEN = 128
MAX_VALUE_LEN = 512
_KINDS = {int(k) for k in CredentialKind if k != CredentialKind.UNSPECIFIED}
_DIRECTIONS = {0, 1, 2}


def _text(value: str, field: str, limit: int = MAX_ID_LEN) -> str:
    if not value:
        raise BadRequest(field, "required")
    if len(value) > limit:
        raise BadRequest(field, f"longer than {limit} characters")
    return value


def _kind(kind: int, field: str) -> int:
    if kind == CredentialKind.UNSPECIFIED:
        raise BadRequest(field, "required (CARD, QR or ID)")
    if kind not in _KINDS:
        raise BadRequest(field, f"unknown value {kind}")
    return kind


def request_row(req: gate_pb2.ValidateRequest) -> list[Any]:
    """Checks a ValidateRequest and returns its codec row (see actors.codec.request_to_list)."""
    _text(req.request_id, "request_id")
    _text(req.venue_id, "venue_id")
    _text(req.gate_id, "gate_id")
    if not req.HasField("credential"):
        raise BadRequest("credential", "required")
    cred = req.credential
    _kind(cred.kind, "credential.kind")
    _text(cred.value, "credential.value", MAX_VALUE_LEN)
    if req.direction not in _DIRECTIONS:
        raise BadRequest("direction", f"unknown value {req.direction}")
    if req.scanned_at_ms < 0:
        raise BadRequest("scanned_at_ms", "must not be negative")
    direction = req.direction or 1
    return [
        req.request_id,
        req.venue_id,
        req.gate_id,
        cred.kind,
        cred.value,
        direction,
        req.scanned_at_ms,
        req.dry_run,
    ]


def decision_proto(row: list[Any]) -> gate_pb2.Decision:
    return gate_pb2.Decision(
        request_id=row[0],
        allowed=row[1],
        reason=row[2],
        message=row[3],
        pass_id=row[4],
        remaining_entries=row[5],
        venue_alert=row[6],
        pay_later=row[7],
        decided_at_ms=row[8],
        charge_fen=row[9],
    )


def invalid_decision(request_id: str, exc: BadRequest) -> gate_pb2.Decision:
    """The answer for one malformed item inside a batch or stream: it fails alone."""
    return gate_pb2.Decision(
        request_id=request_id, allowed=False, message=f"INVALID_ARGUMENT: {exc}"
    )


def parse_iso_date(value: str, field: str) -> int:
    try:
        return date.fromisoformat(value).toordinal()
    except (TypeError, ValueError):
        raise BadRequest(field, f"not an ISO date (YYYY-MM-DD): {value!r}") from None


@functools.lru_cache(maxsize=4096)
def iso_date(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat() if ordinal > 0 else ""


def pass_from_proto(rec: passes_pb2.PassRecord, province: Province) -> PassRecord:
    """Checks an imported PassRecord; raises BadRequest naming the field."""
    _text(rec.pass_id, "pass_id")
    if rec.product_id not in province.products:
        raise BadRequest("product_id", f"unknown product {rec.product_id!r}")
    if not rec.credentials:
        raise BadRequest("credentials", "at least one credential is required")
    creds = []
    for i, cred in enumerate(rec.credentials):
        kind = _kind(cred.kind, f"credentials[{i}].kind")
        creds.append((CredentialKind(kind), _text(cred.value, f"credentials[{i}].value")))
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
    return PassRecord(
        pass_id=rec.pass_id,
        product_id=rec.product_id,
        credentials=tuple(creds),
        valid_from=valid_from,
        valid_until=valid_until,
        status=PassStatus(rec.status or PassStatus.ACTIVE),
        credit_tier=CreditTier(rec.credit_tier or CreditTier.NORMAL),
        groups=frozenset(rec.groups),
        outstanding_debt_fen=rec.outstanding_debt_fen,
    )


def _enum(value: int) -> Any:
    """A core IntEnum as the proto enum it mirrors (same numbers)."""
    return int(value)


def pass_proto(p: PassRecord) -> passes_pb2.PassRecord:
    return passes_pb2.PassRecord(
        pass_id=p.pass_id,
        product_id=p.product_id,
        credentials=[common_pb2.Credential(kind=_enum(k), value=v) for k, v in p.credentials],
        valid_from=iso_date(p.valid_from),
        valid_until=iso_date(p.valid_until),
        status=_enum(p.status),
        credit_tier=_enum(p.credit_tier),
        groups=sorted(p.groups),
        outstanding_debt_fen=p.outstanding_debt_fen,
    )
