"""Raw-socket inputs below gRPC: garbage, cut HTTP/2 frames and gRPC messages whose length prefix
lies. Built by hand (HPACK literals, no Huffman), so no HTTP/2 library is needed.

They go inside a TLS session (the ssl module, trusting the server's CA, ALPN h2) with the
campaign's bearer token in their headers, so they reach the HTTP/2 and gRPC decoders as before;
one kind sends its garbage on the bare TCP connection instead, for the TLS handshake itself.

The server's reply is summarised as an outcome (answered: a HEADERS frame; goaway; other frames
only; nothing); what matters is that it survives them and that no canary call notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

from loadtest import fuzz_world as w
from loadtest.fuzz_inputs import Ctx, Probe
from loadtest.h2wire import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PREFACE,
    SETTINGS,
    frame,
    hpack_literal,
)
from proto.passgate.v1 import common_pb2, gate_pb2

READ_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 5.0
PLAINTEXT = "garbage_without_tls"
KINDS = (
    PLAINTEXT,
    "garbage",
    "preface_then_garbage",
    "truncated_message",
    "length_prefix_bomb",
    "compressed_flag_no_encoding",
    "headers_then_close",
    "half_frame",
    "oversized_frame_header",
)


def _headers(ctx: Ctx, path: str, end_stream: bool = False) -> bytes:
    fields = [
        (":method", "POST"),
        (":scheme", "https" if ctx.tls else "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if ctx.bearer:
        fields.append(("authorization", f"Bearer {ctx.bearer}"))
    block = b"".join(hpack_literal(k, v) for k, v in fields)
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), 1, block)


def _message() -> bytes:
    req = gate_pb2.ValidateRequest(
        request_id="raw-1",
        venue_id=w.FUZZ_VENUES[0],
        gate_id=w.gate(w.FUZZ_VENUES[0], 1),
        credential=common_pb2.Credential(kind=w.CARD, value="RAW-CARD"),
    )
    return req.SerializeToString()


def build(kind: str, ctx: Ctx) -> bytes:
    rng = ctx.rng
    start = PREFACE + frame(SETTINGS, 0, 0, b"") + _headers(ctx, "/passgate.v1.Gate/Validate")
    body = _message()
    if kind in ("garbage", PLAINTEXT):
        return rng.randbytes(rng.randint(1, 512))
    if kind == "preface_then_garbage":
        return PREFACE + rng.randbytes(rng.randint(1, 512))
    if kind == "truncated_message":
        return start + frame(
            DATA, END_STREAM, 1, b"\x00" + struct.pack(">I", len(body) + 50) + body
        )
    if kind == "length_prefix_bomb":
        return start + frame(DATA, END_STREAM, 1, b"\x00\xff\xff\xff\xf0" + body)
    if kind == "compressed_flag_no_encoding":
        return start + frame(DATA, END_STREAM, 1, b"\x01" + struct.pack(">I", len(body)) + body)
    if kind == "headers_then_close":
        return start
    if kind == "half_frame":
        whole = _headers(ctx, "/passgate.v1.Gate/Validate")
        return PREFACE + frame(SETTINGS, 0, 0, b"") + whole[: rng.randint(1, len(whole) - 1)]
    # A DATA frame header announcing 16 MiB - 1 bytes, followed by a few.
    return (
        start + struct.pack(">I", 0xFFFFFF)[1:] + bytes((DATA, 0)) + struct.pack(">I", 1) + b"x" * 8
    )


def raw_probe(ctx: Ctx) -> Probe:
    kind = ctx.rng.choice(KINDS)
    return Probe("raw_transport", "", [build(kind, ctx)], kind, info={"kind": kind})


def _outcome(data: bytes) -> str:
    """The first telling frame type in what the server sent back."""
    kinds = set()
    at = 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        kinds.add(data[at + 3])
        at += 9 + length
    if HEADERS in kinds:
        return "answered"
    if GOAWAY in kinds:
        return "goaway"
    return "other frames only" if data else "nothing"


def tls_for(probe: Probe, tls: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The TLS context to send `probe` in (None: on the bare TCP connection)."""
    return None if probe.info.get("kind") == PLAINTEXT else tls


async def send_raw(host: str, port: int, payload: bytes, tls: ssl.SSLContext | None) -> str:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if tls is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host
            )
    try:
        writer.write(payload)
        await writer.drain()
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
            async with asyncio.timeout(READ_TIMEOUT_S):
                while chunk := await reader.read(65536):
                    received += chunk
                    if len(received) > 1 << 20:
                        break
        return _outcome(received)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(READ_TIMEOUT_S):
                await writer.wait_closed()
