"""Protobuf wire bytes for the fuzz campaign: random messages, mutations of valid ones, and strings
that are not UTF-8.

Everything here works on bytes and a seeded `random.Random`, so a campaign is reproducible from
its --seed. Nothing here knows the passgate messages; see loadtest/fuzz_inputs.py for that.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

# Wire types: 0 varint, 1 fixed64, 2 length-delimited, 3/4 (deprecated) groups, 5 fixed32;
# 6 and 7 do not exist, which is the point of sending them.
WIRE_TYPES = range(8)
MAX_FIELD = (1 << 29) - 1
# Byte sequences that no UTF-8 decoder accepts: a lone continuation byte, an invalid start byte,
# a truncated two-byte sequence, an overlong "/", a UTF-16 surrogate (what a lone surrogate
# would be), a code point above U+10FFFF, and a sequence cut short at the end.
BAD_UTF8 = (
    b"\x80",
    b"\xff",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
)
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x10, 0x12, 0x1A, 0x22)


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers take ten bytes, as protobuf encodes int32/int64."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def length_field(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def huge_varint(rng: random.Random) -> bytes:
    """A varint of 10 bytes (the maximum), or 11+ continuation bytes (malformed)."""
    if rng.random() < 0.5:
        return b"\xff" * 9 + b"\x01"
    return b"\xff" * rng.randint(10, 16) + b"\x01"


def random_bytes(rng: random.Random) -> bytes:
    n = rng.choice((0, 1, 2, rng.randint(3, 16), rng.randint(17, 256), rng.randint(257, 4096)))
    return rng.randbytes(n)


def random_wire(rng: random.Random, depth: int = 0) -> bytes:
    """A sequence of random fields: plausible field numbers, any wire type, nested messages."""
    out = bytearray()
    for _ in range(rng.randint(1, 8)):
        field = rng.choice((rng.randint(1, 12), rng.randint(1, 12), rng.randint(13, MAX_FIELD)))
        wt = rng.choice(WIRE_TYPES)
        out += key(field, wt)
        if wt == 0:
            out += huge_varint(rng) if rng.random() < 0.2 else varint(rng.getrandbits(64))
        elif wt == 1:
            out += rng.randbytes(8)
        elif wt == 5:
            out += rng.randbytes(4)
        elif wt == 2:
            inner = random_wire(rng, depth + 1) if depth < 3 and rng.random() < 0.4 else b""
            payload = inner or _random_text(rng)
            lie = rng.random() < 0.1
            out += varint(len(payload) + (rng.randint(1, 1 << 20) if lie else 0)) + payload
        # Groups (3, 4) and the undefined types (6, 7) carry no payload of their own.
    return bytes(out)


def _random_text(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.5:
        return "".join(rng.choices(string.printable, k=rng.randint(0, 40))).encode()
    if kind < 0.8:
        return rng.randbytes(rng.randint(0, 40))
    return b"ok" + rng.choice(BAD_UTF8) + b"ok"


def nested_bomb(field: int, levels: int) -> bytes:
    """`levels` messages nested in `field`; past protobuf's recursion limit (100) it must fail."""
    inner = b""
    for _ in range(levels):
        inner = length_field(field, inner)
    return inner


# -- mutations of a valid message ------------------------------------------------------------


def _flip_bit(rng: random.Random, b: bytearray) -> None:
    if b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)


def _set_byte(rng: random.Random, b: bytearray) -> None:
    if b:
        b[rng.randrange(len(b))] = rng.choice(_INTERESTING)


def _insert(rng: random.Random, b: bytearray) -> None:
    at = rng.randint(0, len(b))
    b[at:at] = rng.randbytes(rng.randint(1, 8))


def _delete(rng: random.Random, b: bytearray) -> None:
    if b:
        at = rng.randrange(len(b))
        del b[at : at + rng.randint(1, 8)]


def _truncate(rng: random.Random, b: bytearray) -> None:
    if b:
        del b[rng.randrange(len(b)) :]


def _duplicate(rng: random.Random, b: bytearray) -> None:
    if b:
        at = rng.randrange(len(b))
        chunk = b[at : at + rng.randint(1, 16)]
        to = rng.randint(0, len(b))
        b[to:to] = chunk


def _append_unknown(rng: random.Random, b: bytearray) -> None:
    b += random_wire(rng)


def _append_repeat(rng: random.Random, b: bytearray) -> None:
    # A known field number sent again: for a string field the last value wins, so a hostile
    # value can ride behind a valid one; a varint sent on a string field is a wrong wire type.
    field = rng.randint(1, 9)
    if rng.random() < 0.5:
        b += length_field(field, _random_text(rng))
    else:
        b += key(field, 0) + huge_varint(rng)


def _wrong_wire_type(rng: random.Random, b: bytearray) -> None:
    if b:
        b[0] = (b[0] & ~0x07) | rng.choice(WIRE_TYPES)


def _length_lie(rng: random.Random, b: bytearray) -> None:
    b += key(rng.randint(1, 9), 2) + varint(rng.choice((1 << 31, (1 << 32) - 1, 1 << 62)))
    b += rng.randbytes(rng.randint(0, 4))


def _nest_deep(rng: random.Random, b: bytearray) -> None:
    b += nested_bomb(rng.randint(1, 9), rng.choice((101, 200, 1000)))


_MUTATIONS: tuple[Callable[[random.Random, bytearray], None], ...] = (
    _flip_bit,
    _flip_bit,
    _set_byte,
    _insert,
    _delete,
    _truncate,
    _duplicate,
    _append_unknown,
    _append_repeat,
    _append_repeat,
    _wrong_wire_type,
    _length_lie,
    _nest_deep,
)


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """1-4 stacked mutations of `data`; returns the bytes and the names of the mutations."""
    b = bytearray(data)
    names = []
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        op = rng.choice(_MUTATIONS)
        op(rng, b)
        names.append(op.__name__.lstrip("_"))
    return bytes(b), "+".join(names)


def placeholder(rng: random.Random) -> str:
    """An ASCII marker unique enough to find once in a serialized message."""
    return "".join(rng.choices(string.ascii_letters, k=12))


def spoil_utf8(data: bytes, marker: str, rng: random.Random) -> bytes:
    """Replaces `marker` (serialized as a string field) by bytes of the same length that are not
    UTF-8, so every length prefix stays right and only the decoder can object."""
    raw = marker.encode()
    bad = rng.choice(BAD_UTF8)
    at = rng.randint(0, len(raw) - len(bad))
    spoiled = raw[:at] + bad + raw[at + len(bad) :]
    if data.count(raw) != 1:
        raise ValueError("marker not found exactly once")
    return data.replace(raw, spoiled)
