"""The bytes that cross Ray: batches of requests and decisions, and imported passes.

Every payload is a MessagePack array of named `core.records` types; decoding a whole batch is one
msgspec call. A batch that does not decode as a whole is decoded item by item, so one bad item
fails alone (`decode_requests_each`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.records import Decision, PassRecord, Request, decoder, encode

_REQUESTS = decoder(list[Request])
_DECISIONS = decoder(list[Decision])
_PASSES = decoder(list[PassRecord])
_RAW_LIST = decoder(list[msgspec.Raw])
_REQUEST = decoder(Request)
_ANY = msgspec.msgpack.Decoder()


def encode_batch(items: list[Any]) -> bytes:
    return encode(items)


def decode_requests_each(payload: bytes) -> list[Request | str]:
    """Each request, or the problem that kept it from decoding (one bad item fails alone)."""
    try:
        return list(_REQUESTS.decode(payload))
    except msgspec.DecodeError:
        pass
    out: list[Request | str] = []
    for raw in _RAW_LIST.decode(payload):
        try:
            out.append(_REQUEST.decode(raw))
        except msgspec.DecodeError as exc:
            out.append(f"request: malformed item ({str(exc)[:80]})")
    return out


def decode_decisions(payload: bytes) -> list[Decision]:
    return _DECISIONS.decode(payload)


def decode_passes(payload: bytes) -> list[PassRecord]:
    return _PASSES.decode(payload)


def decode_any(payload: bytes | memoryview) -> Any:
    return _ANY.decode(payload)
