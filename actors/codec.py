"""Compact msgpack encodings of passes, usage, requests and decisions.

Used both for LMDB values and for the payloads that cross Ray between ingress and shards, so each
side speaks positional lists rather than pickled objects.
"""

from __future__ import annotations

from typing import Any

import msgpack

from core.models import (
    AlertLevel,
    CredentialKind,
    CreditTier,
    Decision,
    PassRecord,
    PassStatus,
    Reason,
    Request,
    Usage,
)

packb = msgpack.Packer(use_bin_type=True).pack
_NO_GROUPS: frozenset[str] = frozenset()


def unpackb(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)


def pass_to_list(p: PassRecord) -> list[Any]:
    return [
        p.pass_id,
        p.product_id,
        [[int(k), v] for k, v in p.credentials],
        p.valid_from,
        p.valid_until,
        int(p.status),
        int(p.credit_tier),
        sorted(p.groups),
        p.outstanding_debt_fen,
    ]


def pass_from_list(row: list[Any]) -> PassRecord:
    # Hot path (every validation): enum fields keep their plain int values; IntEnum members
    # compare and hash equal to them, and building IntEnums costs ~1 µs each.
    fast: Any = PassRecord
    return fast(
        row[0],
        row[1],
        tuple(map(tuple, row[2])),
        row[3],
        row[4],
        row[5],
        row[6],
        frozenset(row[7]) if row[7] else _NO_GROUPS,
        row[8],
    )


def pass_from_list_typed(row: list[Any]) -> PassRecord:
    """The same record with real enum members, for display and export paths."""
    return PassRecord(
        pass_id=row[0],
        product_id=row[1],
        credentials=tuple((CredentialKind(k), v) for k, v in row[2]),
        valid_from=row[3],
        valid_until=row[4],
        status=PassStatus(row[5]),
        credit_tier=CreditTier(row[6]),
        groups=frozenset(row[7]),
        outstanding_debt_fen=row[8],
    )


def usage_to_list(u: Usage) -> list[Any]:
    return [
        u.entries,
        u.day,
        u.entries_today,
        u.last_entry_ms,
        u.inside,
        u.free_visits,
        u.charges_fen,
        u.exits,
    ]


def usage_from_list(row: list[Any]) -> Usage:
    return Usage(*row)


def request_to_list(r: Request) -> list[Any]:
    return [
        r.request_id,
        r.venue_id,
        r.gate_id,
        int(r.kind),
        r.value,
        int(r.direction),
        r.scanned_at_ms,
        r.dry_run,
    ]


def request_from_list(row: list[Any]) -> Request:
    # Hot path: kind and direction stay plain ints (see pass_from_list).
    fast: Any = Request
    return fast(*row)  # type: ignore[no-any-return]


def decision_to_list(d: Decision) -> list[Any]:
    return [
        d.request_id,
        d.allowed,
        int(d.reason),
        d.message,
        d.pass_id,
        d.remaining_entries,
        int(d.venue_alert),
        d.pay_later,
        d.decided_at_ms,
        d.charge_fen,
        d.soft_passback,
        d.free_visit,
    ]


def decision_from_list(row: list[Any]) -> Decision:
    return Decision(
        request_id=row[0],
        allowed=row[1],
        reason=Reason(row[2]),
        message=row[3],
        pass_id=row[4],
        remaining_entries=row[5],
        venue_alert=AlertLevel(row[6]),
        pay_later=row[7],
        decided_at_ms=row[8],
        charge_fen=row[9],
        soft_passback=row[10],
        free_visit=row[11],
    )


def credential_key(kind: int, value: str) -> bytes:
    return b"%d:%s" % (kind, value.encode())
