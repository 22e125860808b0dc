"""The frames of the ingress-to-shard channel, shared by both ends (it imports neither of them).

A frame is a 6-byte prefix (body length, header length; big-endian), a small MessagePack header
(`Header`: call id and kind) and a payload. A batch frame's payload is an encoded batch of
`actors.codec` as it is, and a result frame's payload its encoded decisions, so nothing is copied
into another envelope. A call frame carries one of the server's other calls (the shard's are
`actors.shard_calls` records) and is answered the same way. The client's first frame is a `Hello`
with the cluster's channel secret; the server answers `WELCOME` or closes without a word. A
shard-side error travels as an `ERROR` frame whose `ErrorBody` names one of the passgate error
classes in `ERROR_CLASSES`, and is raised as that class again at the ingress, so error_map.py sees
what the shard raised.
"""

from __future__ import annotations

import asyncio
import enum
import struct

import msgspec

from actors.errors import (
    BadRequest,
    DataDirMismatch,
    NotFound,
    Overloaded,
    PassgateError,
    ShardUnavailable,
    StorageError,
    StorageFull,
    StoreCorrupt,
)

PROTOCOL_VERSION = 1
# A batch of 1,000 requests (the public batch limit) is about 250 kB; leave room, not a door.
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 256
MAX_ERROR_CHARS = 200
_PREFIX = struct.Struct(">IH")
PREFIX_BYTES = _PREFIX.size


class Kind(enum.IntEnum):
    HELLO = 1  # client -> server, first frame: a Hello
    WELCOME = 2  # server -> client: the hello was good
    BATCH = 3  # client -> server: an encoded batch (actors.codec.encode_batch)
    RESULT = 4  # server -> client: its encoded decisions (after their commit)
    ERROR = 5  # server -> client: an ErrorBody
    CALL = 6  # client -> server: a named call (actors.shard_calls), answered RESULT or ERROR


class Header(msgspec.Struct, array_like=True, frozen=True):
    call_id: int
    kind: Kind


class Hello(msgspec.Struct, array_like=True, frozen=True):
    version: int
    secret: bytes


class ErrorBody(msgspec.Struct, array_like=True, frozen=True):
    error: str  # a key of ERROR_CLASSES
    message: str


class ChannelAddress(msgspec.Struct, array_like=True, frozen=True):
    """Where a shard serves its channel, as its `channel_address` tells the ingress."""

    host: str
    port: int
    secret: bytes


class FrameError(Exception):
    """A frame that breaks the protocol (too large, malformed, unexpected): the connection ends."""


# The only error classes a frame may name; anything else arrives as PassgateError (INTERNAL).
ERROR_CLASSES: dict[str, type[PassgateError]] = {
    cls.__name__: cls
    for cls in (
        StorageFull,
        StorageError,
        ShardUnavailable,
        Overloaded,
        BadRequest,
        NotFound,
        StoreCorrupt,
        DataDirMismatch,
        PassgateError,
    )
}
_INTERNAL = "internal error in the shard"

_ENCODER = msgspec.msgpack.Encoder()
_HEADER = msgspec.msgpack.Decoder(Header)
_HELLO = msgspec.msgpack.Decoder(Hello)
_ERROR = msgspec.msgpack.Decoder(ErrorBody)


def frame(call_id: int, kind: Kind, payload: bytes = b"") -> bytes:
    """One whole frame, ready to write."""
    header = _ENCODER.encode(Header(call_id, kind))
    return _PREFIX.pack(len(header) + len(payload), len(header)) + header + payload


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> tuple[Header, bytes]:
    """The next frame; FrameError when it is over `max_bytes` (its body is never read) or
    malformed; asyncio.IncompleteReadError when the peer closes."""
    body_len, head_len = _PREFIX.unpack(await reader.readexactly(PREFIX_BYTES))
    if body_len > max_bytes:
        raise FrameError(f"frame of {body_len} bytes over the {max_bytes}-byte limit")
    if head_len > min(body_len, MAX_HEADER_BYTES):
        raise FrameError("frame header length out of range")
    body = await reader.readexactly(body_len)
    try:
        header = _HEADER.decode(body[:head_len])
    except msgspec.DecodeError:
        raise FrameError("malformed frame header") from None
    return header, body[head_len:]


def hello(secret: bytes) -> bytes:
    return frame(0, Kind.HELLO, _ENCODER.encode(Hello(PROTOCOL_VERSION, secret)))


def decode_hello(payload: bytes) -> Hello | None:
    try:
        return _HELLO.decode(payload)
    except msgspec.DecodeError:
        return None


def error_body(exc: BaseException) -> bytes:
    """What an ERROR frame carries for `exc`: its nearest whitelisted class and a short message;
    anything that is not a passgate error says nothing of itself."""
    name = next((c.__name__ for c in type(exc).__mro__ if ERROR_CLASSES.get(c.__name__) is c), "")
    if name in ("", PassgateError.__name__):
        return _ENCODER.encode(ErrorBody(PassgateError.__name__, _INTERNAL))
    return _ENCODER.encode(ErrorBody(name, str(exc)[:MAX_ERROR_CHARS]))


def rebuild_error(payload: bytes) -> PassgateError:
    """The passgate error an ERROR frame names, raised again at the ingress."""
    try:
        body = _ERROR.decode(payload)
    except msgspec.DecodeError:
        return PassgateError("malformed error frame")
    cls = ERROR_CLASSES.get(body.error, PassgateError)
    message = body.message[:MAX_ERROR_CHARS]
    if cls is BadRequest:
        return BadRequest.from_text(message)
    return cls(message)
