"""Size limits of every id and string passgate accepts, stated once, in characters AND bytes.

LMDB refuses keys over 511 bytes, and stored keys are built from these ids (length-prefixed, see
`core.keys`), so a limit in characters alone would let 128 emoji (512 bytes) poison a whole group
commit. Every boundary (gRPC ingress, shard, catalog writer) checks with `text_problem`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    chars: int
    bytes: int


# request_id, venue_id, gate_id, pass_id, product_id, slot_id, group names.
ID = Limit(chars=128, bytes=128)
# A credential's value (card number, QR payload, identity document number).
CREDENTIAL_VALUE = Limit(chars=256, bytes=384)
# Free text a caller may send (a revocation reason).
FREE_TEXT = Limit(chars=200, bytes=600)
MAX_CREDENTIALS_PER_PASS = 16
MAX_GROUPS_PER_PASS = 16
# Longest prefix of caller input an error message may quote.
ECHO_CHARS = 32

# C0 and C1 controls and DEL: never part of an id, and NUL would forge key separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def text_problem(value: str, limit: Limit = ID, *, required: bool = True) -> str | None:
    """Why `value` is not acceptable, or None. Never quotes the value itself."""
    if not value:
        return "required" if required else None
    # Nearly every id is short printable ASCII: one byte per character, no control character.
    if len(value) <= min(limit.chars, limit.bytes) and value.isascii() and value.isprintable():
        return None
    if len(value) > limit.chars:
        return f"longer than {limit.chars} characters"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size > limit.bytes:
        return f"longer than {limit.bytes} bytes in UTF-8"
    if _CONTROL.search(value) is not None:
        return "contains a control character"
    return None


def echo(value: str) -> str:
    """A short, printable prefix of caller input, safe to put in an error message."""
    short = _CONTROL.sub("?", value[:ECHO_CHARS])
    return repr(short + ("..." if len(value) > ECHO_CHARS else ""))
