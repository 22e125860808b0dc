"""LMDB keys that cannot be forged: every user string is length-prefixed, never joined by a
separator a user string might contain. Ids are at most 128 bytes (`core.limits.ID`), so one
length byte suffices and every key stays far below LMDB's 511-byte limit.
"""

from __future__ import annotations

import hashlib
import struct

_DAY = struct.Struct(">I")


def _part(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError("key part longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _parts(key: bytes, n: int) -> tuple[list[str], int]:
    out, pos = [], 0
    for _ in range(n):
        size = key[pos]
        out.append(key[pos + 1 : pos + 1 + size].decode())
        pos += 1 + size
    return out, pos


def usage_key(venue_id: str, pass_id: str) -> bytes:
    """The pass first: one pass's usage at every venue is one key range (`usage_prefix`)."""
    return _part(pass_id) + _part(venue_id)


def usage_prefix(pass_id: str) -> bytes:
    """Where the usage keys of `pass_id` start; no other pass's key starts so."""
    return _part(pass_id)


def split_usage_key(key: bytes) -> tuple[str, str]:
    """(venue_id, pass_id) of a usage key."""
    (pass_id, venue_id), _ = _parts(bytes(key), 2)
    return venue_id, pass_id


def split_venue_first_usage_key(key: bytes) -> tuple[str, str]:
    """(venue_id, pass_id) of a usage key of the layout before `usage_key` put the pass first
    (kept to move old stores, `actors.shard.store`)."""
    (venue_id, pass_id), _ = _parts(bytes(key), 2)
    return venue_id, pass_id


def request_key(venue_id: str, gate_id: str, request_id: str) -> bytes:
    """A request_id is scoped to its gate: another gate's id never finds this record."""
    return _part(venue_id) + _part(gate_id) + _part(request_id)


def reservation_key(venue_id: str, day: int, slot_id: str, pass_id: str) -> bytes:
    return _part(venue_id) + _DAY.pack(day) + _part(slot_id) + _part(pass_id)


def split_reservation_key(key: bytes) -> tuple[str, int, str, str]:
    key = bytes(key)
    (venue_id,), pos = _parts(key, 1)
    day = _DAY.unpack_from(key, pos)[0]
    (slot_id, pass_id), _ = _parts(key[pos + 4 :], 2)
    return venue_id, day, slot_id, pass_id


def credential_key(kind: int, value: str) -> bytes:
    """Catalog key of a credential: one kind byte, then the value (at most 384 bytes)."""
    return bytes((kind,)) + value.encode()


def fingerprint(kind: int, value: str) -> bytes:
    """Identifies a credential in a request record without keeping its value."""
    return hashlib.blake2b(bytes((kind,)) + value.encode(), digest_size=12).digest()


def charge_key(pass_id: str, rkey: bytes, attempt: bytes) -> bytes:
    """A credit-ledger charge: the pass first (its charges are one prefix), then the entry's
    request key (hashed: ids of 128 bytes each would pass LMDB's key limit) and the attempt
    that asked (`core.credit`)."""
    return _part(pass_id) + hashlib.blake2b(rkey, digest_size=16).digest() + attempt


def charge_pass_id(key: bytes) -> str:
    (pass_id,), _ = _parts(bytes(key), 1)
    return pass_id


def charge_prefix(pass_id: str) -> bytes:
    return _part(pass_id)
