"""The load generator's HTTP/2 client (loadtest/h2wire.py) against a scripted peer: what it writes
is parsed back into frames, and what the server would send is fed to it frame by frame. No
socket, no server."""

from __future__ import annotations

import asyncio
import gc
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from loadtest import h2wire as hw

Frame = tuple[int, int, int, bytes]  # kind, flags, stream, payload


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def frames(self) -> list[Frame]:
        """Everything written so far, as frames (the preface skipped), and forgets it."""
        data = bytes(self.out)
        self.out.clear()
        if data.startswith(hw.PREFACE):
            data = data[len(hw.PREFACE) :]
        out: list[Frame] = []
        while data:
            length = int.from_bytes(data[:3], "big")
            kind, flags = data[3], data[4]
            stream = int.from_bytes(data[5:9], "big")
            out.append((kind, flags, stream, data[9 : 9 + length]))
            data = data[9 + length :]
        return out


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def settings(**values: int) -> bytes:
    ids = {"window": hw.SETTINGS_INITIAL_WINDOW_SIZE, "streams": 3, "frame": 5}
    body = b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items())
    return hw.frame(hw.SETTINGS, 0, 0, body)


def trailers(status: int, indexed: bool = True) -> bytes:
    """grpc-status as grpc's server writes it: a literal with incremental indexing (0x40)."""
    prefix = b"\x40" if indexed else b"\x00"
    name, value = b"grpc-status", str(status).encode()
    return prefix + bytes((len(name),)) + name + bytes((len(value),)) + value


def connect(**server_settings: int) -> tuple[hw.WireChannel, FakeTransport]:
    ch = hw.WireChannel()
    t = FakeTransport()
    ch.connection_made(t)  # type: ignore[arg-type]
    ch.data_received(settings(**server_settings))
    t.frames()  # the opening and the SETTINGS acknowledgement
    return ch, t


class Ends:
    def __init__(self) -> None:
        self.got: list[tuple[bytes | None, str]] = []

    def __call__(self, reply: bytes | None, status: str) -> None:
        self.got.append((reply, status))


def reply(ch: hw.WireChannel, stream: int, message: bytes, status: int = 0) -> None:
    ch.data_received(
        hw.frame(hw.HEADERS, hw.END_HEADERS, stream, b"\x88")  # :status 200
        + hw.frame(hw.DATA, 0, stream, hw.grpc_message(message))
        + hw.frame(hw.HEADERS, hw.END_HEADERS | hw.END_STREAM, stream, trailers(status))
    )


HEAD = hw.request_headers("/passgate.v1.Gate/Validate", "127.0.0.1:1", True, "tok", 5.0)


def test_opening_announces_settings_and_acknowledges_the_servers() -> None:
    async def body() -> None:
        ch = hw.WireChannel()
        t = FakeTransport()
        ch.connection_made(t)  # type: ignore[arg-type]
        assert bytes(t.out).startswith(hw.PREFACE)
        sent = t.frames()
        assert sent[0][0] == hw.SETTINGS
        announced = dict(struct.iter_unpack(">HI", sent[0][3]))
        assert announced[hw.SETTINGS_HEADER_TABLE_SIZE] == 0
        assert announced[hw.SETTINGS_INITIAL_WINDOW_SIZE] == hw.MAX_WINDOW
        assert sent[1][0] == hw.WINDOW_UPDATE
        ch.data_received(settings(streams=100, window=1000, frame=20_000))
        assert ch._settled is not None and ch._settled.done()
        assert [(k, f) for k, f, _, _ in t.frames()] == [(hw.SETTINGS, hw.ACK)]
        assert ch.max_streams == 100 - hw.STREAM_LIMIT_MARGIN
        assert ch.peer_stream_window == 1000 and ch.max_frame == 20_000

    run(body)


def test_unary_call_writes_headers_and_message_and_gets_the_reply() -> None:
    async def body() -> None:
        ch, t = connect()
        ends = Ends()
        ch.unary(HEAD, b"request", ends)
        (h, d) = t.frames()
        assert h[:3] == (hw.HEADERS, hw.END_HEADERS, 1) and h[3] == HEAD
        assert d[:3] == (hw.DATA, hw.END_STREAM, 1) and d[3] == hw.grpc_message(b"request")
        reply(ch, 1, b"decision")
        assert ends.got == [(b"decision", "")]
        assert ch.calls == {}

    run(body)


def test_failed_call_gets_the_status_name_from_its_trailers() -> None:
    async def body() -> None:
        ch, _ = connect()
        ends = Ends()
        for _ in range(3):
            ch.unary(HEAD, b"x", ends)
        # Trailers-only answers; the entries grpc-status would add to the table are evicted at
        # once, so each block decodes alone, in any order, some never.
        ch.data_received(hw.frame(hw.HEADERS, 0x5, 3, b"\x88" + trailers(16)))
        reply(ch, 1, b"ok")
        ch.data_received(hw.frame(hw.HEADERS, 0x5, 5, trailers(3, indexed=False)))
        assert ends.got == [(None, "UNAUTHENTICATED"), (b"ok", ""), (None, "INVALID_ARGUMENT")]

    run(body)


def test_a_header_block_may_continue_in_continuation_frames_and_frames_may_arrive_cut() -> None:
    async def body() -> None:
        ch, _ = connect()
        ends = Ends()
        ch.unary(HEAD, b"x", ends)
        block = b"\x88" + trailers(14)
        wire = hw.frame(hw.HEADERS, hw.END_STREAM, 1, block[:4]) + hw.frame(
            hw.CONTINUATION, hw.END_HEADERS, 1, block[4:]
        )
        for i in range(len(wire)):
            ch.data_received(wire[i : i + 1])
        assert ends.got == [(None, "UNAVAILABLE")]

    run(body)


def test_data_waits_for_the_peers_window_and_is_cut_at_its_frame_size() -> None:
    async def body() -> None:
        ch, t = connect(window=10, frame=16_384)
        ends = Ends()
        ch.unary(HEAD, b"m" * 25, ends)  # 30 bytes with its prefix
        sent = t.frames()
        assert [f[0] for f in sent] == [hw.HEADERS, hw.DATA]
        assert len(sent[1][3]) == 10 and sent[1][1] == 0
        ch.data_received(hw.frame(hw.WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))
        (rest,) = t.frames()
        assert rest[:3] == (hw.DATA, hw.END_STREAM, 1)
        assert sent[1][3] + rest[3] == hw.grpc_message(b"m" * 25)

    run(body)


def test_the_connection_window_holds_back_every_stream_in_order() -> None:
    async def body() -> None:
        ch, t = connect()
        ch.send_window = 5
        ends = Ends()
        ch.unary(HEAD, b"aaaa", ends)  # 9 bytes
        ch.unary(HEAD, b"b", ends)  # 6 bytes, must not overtake
        data = [f for f in t.frames() if f[0] == hw.DATA]
        assert [(s, len(p)) for _, _, s, p in data] == [(1, 5)]
        ch.data_received(hw.frame(hw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 100)))
        data = [f for f in t.frames() if f[0] == hw.DATA]
        assert [(s, len(p), fl) for _, fl, s, p in data] == [(1, 4, 1), (3, 6, 1)]

    run(body)


def test_calls_over_the_stream_limit_wait_for_a_free_stream() -> None:
    async def body() -> None:
        ch, t = connect(streams=hw.STREAM_LIMIT_MARGIN + 1)
        ends = Ends()
        ch.unary(HEAD, b"1", ends)
        ch.unary(HEAD, b"2", ends)
        assert [f[2] for f in t.frames()] == [1, 1]
        assert ch.in_flight == 2
        reply(ch, 1, b"r1")
        assert [f[2] for f in t.frames()] == [3, 3]
        reply(ch, 3, b"r2")
        assert ends.got == [(b"r1", ""), (b"r2", "")]

    run(body)


def test_a_refused_stream_is_started_again_and_answered_once() -> None:
    async def body() -> None:
        ch, t = connect()
        ends = Ends()
        ch.unary(HEAD, b"q", ends)
        t.frames()
        ch.data_received(hw.frame(hw.RST_STREAM, 0, 1, struct.pack(">I", hw.REFUSED_STREAM)))
        again = t.frames()
        assert [(f[0], f[2]) for f in again] == [(hw.HEADERS, 3), (hw.DATA, 3)]
        assert again[1][3] == hw.grpc_message(b"q")
        assert ends.got == []
        reply(ch, 3, b"r")
        assert ends.got == [(b"r", "")]

    run(body)


def test_other_resets_fail_the_call_with_grpcs_mapping() -> None:
    async def body() -> None:
        ch, _ = connect()
        ends = Ends()
        ch.unary(HEAD, b"q", ends)
        ch.unary(HEAD, b"q", ends)
        ch.data_received(hw.frame(hw.RST_STREAM, 0, 1, struct.pack(">I", 8)))
        ch.data_received(hw.frame(hw.RST_STREAM, 0, 3, struct.pack(">I", 2)))
        assert ends.got == [(None, "CANCELLED"), (None, "INTERNAL")]

    run(body)


def test_pings_are_acknowledged_with_their_payload() -> None:
    async def body() -> None:
        ch, t = connect()
        ch.data_received(hw.frame(hw.PING, 0, 0, b"12345678"))
        assert t.frames() == [(hw.PING, hw.ACK, 0, b"12345678")]
        ch.data_received(hw.frame(hw.PING, hw.ACK, 0, b"87654321"))
        assert t.frames() == []

    run(body)


def test_goaway_fails_unseen_calls_and_lets_seen_ones_finish() -> None:
    async def body() -> None:
        ch, _ = connect()
        ends = Ends()
        ch.unary(HEAD, b"a", ends)
        ch.unary(HEAD, b"b", ends)
        ch.data_received(hw.frame(hw.GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
        assert ends.got == [(None, "UNAVAILABLE")]  # stream 3, never seen by the server
        reply(ch, 1, b"done")
        ch.unary(HEAD, b"c", ends)
        assert ends.got[1:] == [(b"done", ""), (None, "UNAVAILABLE")]

    run(body)


def test_a_lost_connection_fails_every_open_and_waiting_call() -> None:
    async def body() -> None:
        ch, _ = connect(streams=hw.STREAM_LIMIT_MARGIN + 1)
        ends = Ends()
        ch.unary(HEAD, b"a", ends)
        ch.unary(HEAD, b"b", ends)  # waiting for a stream
        ch.connection_lost(None)
        assert ends.got == [(None, "UNAVAILABLE")] * 2
        ch.unary(HEAD, b"c", ends)
        assert ends.got[-1] == (None, "UNAVAILABLE")

    run(body)


def test_stream_messages_are_delivered_whole_however_the_data_is_cut() -> None:
    async def body() -> None:
        ch, t = connect()
        got: list[bytes] = []
        ends = Ends()
        opened: list[int] = []
        ch.open_stream(HEAD, got.append, ends, opened.append)
        assert opened == [1]
        ch.send(1, b"one")
        ch.send(1, b"two")
        ch.end_stream(1)
        sent = t.frames()
        assert [(f[0], f[1]) for f in sent] == [(hw.HEADERS, 4), (hw.DATA, 0), (hw.DATA, 0), (0, 1)]
        wire = hw.grpc_message(b"first") + hw.grpc_message(b"") + hw.grpc_message(b"third")
        ch.data_received(hw.frame(hw.DATA, 0, 1, wire[:3]))
        ch.data_received(hw.frame(hw.DATA, 0, 1, wire[3:11]))
        ch.data_received(hw.frame(hw.DATA, 0, 1, wire[11:]))
        assert got == [b"first", b"", b"third"]
        ch.data_received(hw.frame(hw.HEADERS, 0x5, 1, trailers(0)))
        assert ends.got == [(None, "")]

    run(body)


def test_fail_all_resets_open_calls_and_ends_waiting_ones() -> None:
    async def body() -> None:
        ch, t = connect(streams=hw.STREAM_LIMIT_MARGIN + 1)
        ends = Ends()
        ch.unary(HEAD, b"a", ends)
        ch.unary(HEAD, b"b", ends)
        t.frames()
        ch.fail_all("NO_REPLY")
        assert ends.got == [(None, "NO_REPLY")] * 2
        assert ch.in_flight == 0
        assert [(f[0], f[2]) for f in t.frames()] == [(hw.RST_STREAM, 1)]

    run(body)


def test_padded_data_and_headers_are_unpadded() -> None:
    async def body() -> None:
        ch, _ = connect()
        ends = Ends()
        ch.unary(HEAD, b"a", ends)
        msg = hw.grpc_message(b"padded")
        ch.data_received(hw.frame(hw.DATA, hw.PADDED, 1, b"\x03" + msg + b"\x00\x00\x00"))
        block = trailers(0)
        ch.data_received(hw.frame(hw.HEADERS, hw.PADDED | 0x5, 1, b"\x02" + block + b"\x00\x00"))
        assert ends.got == [(b"padded", "")]

    run(body)


def test_a_refused_stream_fails_rather_than_lose_what_was_sent_on_it() -> None:
    async def body() -> None:
        ch, t = connect()
        ends = Ends()
        ch.open_stream(HEAD, lambda _m: None, ends, lambda _s: None)
        ch.send(1, b"scan")
        t.frames()
        ch.data_received(hw.frame(hw.RST_STREAM, 0, 1, struct.pack(">I", hw.REFUSED_STREAM)))
        assert ends.got == [(None, "UNAVAILABLE")]
        assert t.frames() == [] and ch.in_flight == 0

    run(body)


def test_a_finished_call_leaves_no_reference_cycle() -> None:
    """The generator's workers run with the collector off: a call must be freed by reference
    counting alone, refused and started again or not."""

    async def body() -> None:
        ch, _ = connect()
        ends = Ends()
        ch.unary(HEAD, b"a", ends)
        ch.data_received(hw.frame(hw.RST_STREAM, 0, 1, struct.pack(">I", hw.REFUSED_STREAM)))
        reply(ch, 3, b"r")
        ch.unary(HEAD, b"b", ends)
        reply(ch, 5, b"s")
        assert ends.got == [(b"r", ""), (b"s", "")]

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run(body)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, (hw._Call, hw._Queued))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
