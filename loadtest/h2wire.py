"""A lean HTTP/2 client that speaks gRPC, for the load generator's hot path.

Why not grpc.aio: on this 2-core machine a grpc.aio unary call costs the generator about 0.5 ms of
CPU (the call object, its task, the completion queue and the poller thread's hand-off), which is
as much as the server spends on it. The generator shares the cores with the server, so that cost
lands in the figures twice: as CPU taken from the server and as the generator's own lag, and the
echo baseline's p99 stayed above the 5 ms validity threshold. This client is one asyncio Protocol
per connection: requests are written as pre-built HEADERS (HPACK literals, no Huffman) and DATA
frames, and replies are parsed from the frame headers. It is still HTTP/2 over TLS with the same
bearer token, so the server does exactly the work any gRPC client would give it.

What it implements of HTTP/2 (RFC 9113), and no more:
- the preface and SETTINGS (both ways, acknowledged), PING acknowledgements, GOAWAY,
  RST_STREAM, CONTINUATION and padding on receipt;
- flow control both ways: the peer's connection and stream windows are respected for everything
  sent (DATA waits for WINDOW_UPDATE), and the windows it grants are refilled well before they
  run out;
- the peer's MAX_CONCURRENT_STREAMS (calls beyond it wait for a free stream) and MAX_FRAME_SIZE;
- GOAWAY as the RFC means it: the connection *drains* (no new call; calls the server saw, and
  their streams' DATA, go on until they end) until the server closes it. `on_close` tells the
  owner at once, so that it can open another connection (`wire_senders.WireSlots`).

It announces a header table of size 0, so the server's HPACK encoder cannot use its dynamic
table and every header block stands alone: blocks of calls that succeeded (a reply message came)
are never decoded; only the trailers of a failed call are, with `hpack`, for its grpc-status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 0x8, 0x9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 4, 5
MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65_535
# The windows granted to the server are topped up once this much of them has been used.
REFILL_AT = 1 << 30
MAX_STREAM_ID = (1 << 31) - 1
REFUSED_STREAM = 7
# grpc's server counts a stream as open until it has cleaned it up, a moment after its trailers
# are sent, and refuses (REFUSED_STREAM) or cancels streams over its limit meanwhile. Staying this
# far under the announced limit avoids that; a refused stream is still started again.
STREAM_LIMIT_MARGIN = 64
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0

# A 9-byte frame header: 24-bit length and 8-bit type as one word, flags, stream id.
_HEAD = struct.Struct(">IBI")
_SETTING = struct.Struct(">HI")
_WORD = struct.Struct(">I")
_PREFIX = struct.Struct(">BI")
_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# How gRPC maps an RST_STREAM error code to a status (doc/PROTOCOL-HTTP2.md).
_RST_NAMES = {7: "UNAVAILABLE", 8: "CANCELLED", 11: "RESOURCE_EXHAUSTED", 12: "PERMISSION_DENIED"}

# A call ends with the reply's bytes (None for a stream, whose messages went to on_message) and
# "" on success, or with None and the failure's status name.
OnEnd = Callable[[bytes | None, str], None]
OnMessage = Callable[[bytes], None]


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return _HEAD.pack((len(payload) << 8) | kind, flags, stream) + payload


def hpack_length(n: int) -> bytes:
    """An HPACK integer with a 7-bit prefix and the Huffman bit clear (RFC 7541, 5.1)."""
    if n < 127:
        return bytes((n,))
    out, n = [127], n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes((*out, n))


def hpack_literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name, plain strings."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_length(len(n)) + n + hpack_length(len(v)) + v


def request_headers(
    path: str, authority: str, tls: bool, bearer: str | None, timeout_s: float | None
) -> bytes:
    """The HPACK block of a gRPC request on `path`, as grpc clients send it."""
    fields = [
        (":method", "POST"),
        (":scheme", "https" if tls else "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if timeout_s is not None:
        fields.append(("grpc-timeout", f"{max(1, int(timeout_s * 1000))}m"))
    if bearer:
        fields.append(("authorization", f"Bearer {bearer}"))
    return b"".join(hpack_literal(k, v) for k, v in fields)


def grpc_message(payload: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return _PREFIX.pack(0, len(payload)) + payload


@dataclass(eq=False)
class _Call:
    on_end: OnEnd
    # Set for a stream: each reply message as it completes.
    on_message: OnMessage | None = None
    window: int = DEFAULT_WINDOW
    data: bytes = b""
    # Bytes received on the stream since its window was last topped up.
    received: int = 0
    ended_local: bool = False
    # A unary call's header block and message, to start it again if the server refuses its
    # stream unprocessed (REFUSED_STREAM). Not the _Queued itself: that refers back to the call,
    # a reference cycle per call in a worker whose collector is off during the run.
    resend: tuple[bytes, bytes] | None = None


@dataclass(eq=False)
class _Pending:
    """A DATA payload waiting for flow-control window."""

    stream: int
    payload: bytes
    end: bool


@dataclass(eq=False)
class _Queued:
    """A call waiting for a stream slot under the peer's MAX_CONCURRENT_STREAMS."""

    head: bytes
    message: bytes | None
    call: _Call
    opened: Callable[[int], None] | None = None
    end: bool = True


@dataclass(eq=False)
class _HeaderBlock:
    stream: int
    flags: int
    parts: list[bytes] = field(default_factory=list)


class WireChannel(asyncio.Protocol):
    """One HTTP/2 connection carrying gRPC calls. Use `connect`; all methods run on its loop."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.next_id = 1
        self.send_window = DEFAULT_WINDOW
        self.peer_stream_window = DEFAULT_WINDOW
        self.max_frame = 16_384
        self.max_streams = MAX_STREAM_ID
        self.blocked: deque[_Pending] = deque()
        self.queued: deque[_Queued] = deque()
        self.closed = ""
        # GOAWAY received: no new call here; the calls under way finish (`accepting`).
        self.draining = False
        # Called once when the connection stops taking calls (GOAWAY, or lost).
        self.on_close: Callable[[], None] | None = None
        self._buf = b""
        self._received = 0
        self._block: _HeaderBlock | None = None
        self._decoder: hpack.Decoder | None = None
        self._settled: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None = None,
    ) -> WireChannel:
        """Opens the connection and waits for the server's SETTINGS."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, proto = await loop.create_connection(
                cls, host, port, ssl=ssl, server_hostname=server_hostname if ssl else None
            )
            assert proto._settled is not None
            await proto._settled
        return proto

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._settled = loop.create_future()
        self._lost = loop.create_future()
        settings = b"".join(
            _SETTING.pack(k, v)
            for k, v in (
                (SETTINGS_HEADER_TABLE_SIZE, 0),
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
            )
        )
        self.transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, _WORD.pack(MAX_WINDOW - DEFAULT_WINDOW))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._shut("UNAVAILABLE")
        self._closing()
        if self._settled is not None and not self._settled.done():
            self._settled.set_exception(ConnectionError("the server closed the connection"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        off, n = 0, len(buf)
        unpack = _HEAD.unpack_from
        while n - off >= 9:
            word, flags, stream = unpack(buf, off)
            end = off + 9 + (word >> 8)
            if end > n:
                break
            kind = word & 0xFF
            payload = buf[off + 9 : end]
            stream &= MAX_STREAM_ID
            if kind == DATA:
                self._on_data(stream, flags, payload)
            elif kind in (HEADERS, CONTINUATION):
                self._on_headers(kind, stream, flags, payload)
            else:
                self._on_control(kind, stream, flags, payload)
            off = end
        self._buf = buf[off:] if off < n else b""

    # --- calls --------------------------------------------------------------------------

    def unary(self, head: bytes, message: bytes, on_end: OnEnd) -> None:
        """Starts a unary call: `head` from request_headers, `message` the serialized request.
        `on_end(reply, "")` or `on_end(None, status name)` follows, exactly once."""
        self._open(_Queued(head, grpc_message(message), _Call(on_end)))

    def open_stream(
        self, head: bytes, on_message: OnMessage, on_end: OnEnd, opened: Callable[[int], None]
    ) -> None:
        """Starts a bidirectional stream; `opened(stream_id)` once it has a stream id (at once,
        unless the peer's stream limit makes it wait). Then `send` and `end_stream`."""
        self._open(_Queued(head, None, _Call(on_end, on_message), opened, end=False))

    def send(self, stream: int, message: bytes) -> None:
        if stream in self.calls:
            self._send_data(stream, grpc_message(message), False)

    def end_stream(self, stream: int) -> None:
        call = self.calls.get(stream)
        if call is not None and not call.ended_local:
            call.ended_local = True
            self._send_data(stream, b"", True)

    def cancel(self, stream: int, status: str = "CANCELLED") -> None:
        """Resets the stream (RST_STREAM CANCEL) and ends the call with `status`."""
        call = self.calls.pop(stream, None)
        if call is None:
            return
        if self.transport is not None and not self.closed:
            self.transport.write(frame(RST_STREAM, 0, stream, _WORD.pack(8)))
        call.on_end(None, status)
        self._start_queued()

    @property
    def accepting(self) -> bool:
        """Whether a new call may start here (open, and no GOAWAY)."""
        return not self.closed and not self.draining

    def _closing(self) -> None:
        callback, self.on_close = self.on_close, None
        if callback is not None:
            callback()

    @property
    def in_flight(self) -> int:
        return len(self.calls) + len(self.queued)

    def fail_all(self, status: str) -> None:
        """Ends every waiting and open call with `status`, resetting the open ones."""
        while self.queued:
            self.queued.popleft().call.on_end(None, status)
        for stream in list(self.calls):
            self.cancel(stream, status)

    async def close(self) -> None:
        if self.transport is None:
            return
        self.fail_all("CANCELLED")
        if not self.closed:
            self.transport.write(frame(GOAWAY, 0, 0, _WORD.pack(0) + _WORD.pack(0)))
        self.transport.close()
        if self._lost is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._lost

    # --- sending ------------------------------------------------------------------------

    def _open(self, q: _Queued) -> None:
        if not self.accepting:
            q.call.on_end(None, "UNAVAILABLE")
        elif self.queued or len(self.calls) >= self.max_streams:
            self.queued.append(q)
        else:
            self._start(q)

    def _start(self, q: _Queued) -> None:
        stream = self.next_id
        if stream > MAX_STREAM_ID:
            q.call.on_end(None, "UNAVAILABLE")
            return
        self.next_id += 2
        call = q.call
        if q.message is not None:
            call.resend = (q.head, q.message)
        call.window = self.peer_stream_window
        self.calls[stream] = call
        assert self.transport is not None
        head = frame(HEADERS, END_HEADERS, stream, q.head)
        body = q.message
        if body is None:
            self.transport.write(head)
        elif not self.blocked and len(body) <= min(self.send_window, call.window, self.max_frame):
            # The common case, one write: HEADERS and the whole message.
            self.send_window -= len(body)
            call.window -= len(body)
            call.ended_local = True
            self.transport.write(head + frame(DATA, END_STREAM, stream, body))
        else:
            self.transport.write(head)
            call.ended_local = True
            self._send_data(stream, body, True)
        if q.opened is not None:
            q.opened(stream)

    def _start_queued(self) -> None:
        while self.queued and len(self.calls) < self.max_streams and self.accepting:
            self._start(self.queued.popleft())

    def _send_data(self, stream: int, payload: bytes, end: bool) -> None:
        self.blocked.append(_Pending(stream, payload, end))
        self._flush_blocked()

    def _flush_blocked(self) -> None:
        """Sends waiting DATA in order while the windows allow, splitting at MAX_FRAME_SIZE."""
        transport, blocked = self.transport, self.blocked
        assert transport is not None
        while blocked and not self.closed:
            p = blocked[0]
            call = self.calls.get(p.stream)
            if call is None:
                blocked.popleft()
                continue
            n = min(len(p.payload), self.send_window, call.window, self.max_frame)
            if n <= 0 and p.payload:
                return
            chunk, rest = p.payload[:n], p.payload[n:]
            self.send_window -= n
            call.window -= n
            flags = END_STREAM if p.end and not rest else 0
            transport.write(frame(DATA, flags, p.stream, chunk))
            if rest:
                p.payload = rest
            else:
                blocked.popleft()

    # --- receiving ----------------------------------------------------------------------

    def _on_data(self, stream: int, flags: int, payload: bytes) -> None:
        size = len(payload)
        if flags & PADDED and payload:
            payload = payload[1 : len(payload) - payload[0]]
        self._received += size
        if self._received >= REFILL_AT:
            self._grant(0, self._received)
            self._received = 0
        call = self.calls.get(stream)
        if call is None:
            return
        if call.on_message is None:
            call.data = call.data + payload if call.data else payload
        else:
            call.received += size
            if call.received >= REFILL_AT:
                self._grant(stream, call.received)
                call.received = 0
            self._stream_messages(call, payload)
        if flags & END_STREAM:
            self._end(stream, None)

    def _stream_messages(self, call: _Call, payload: bytes) -> None:
        buf = call.data + payload if call.data else payload
        off, n = 0, len(buf)
        assert call.on_message is not None
        while n - off >= 5:
            size = _WORD.unpack_from(buf, off + 1)[0]
            if n - off - 5 < size:
                break
            call.on_message(buf[off + 5 : off + 5 + size])
            off += 5 + size
        call.data = buf[off:] if off < n else b""

    def _on_headers(self, kind: int, stream: int, flags: int, payload: bytes) -> None:
        if kind == HEADERS:
            if flags & PADDED and payload:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            block = _HeaderBlock(stream, flags, [payload])
        elif self._block is not None and self._block.stream == stream:
            block = self._block
            block.parts.append(payload)
        else:
            self._shut("INTERNAL")  # a CONTINUATION out of place is a connection error
            return
        if not flags & END_HEADERS:
            self._block = block
            return
        self._block = None
        if block.flags & END_STREAM:
            self._end(stream, b"".join(block.parts))
        # Response headers without END_STREAM say nothing a reply or the trailers will not.

    def _end(self, stream: int, trailers: bytes | None) -> None:
        call = self.calls.pop(stream, None)
        if call is None:
            return
        if call.on_message is None and len(call.data) >= 5 and trailers is not None:
            # A reply came: grpc sends a message only with status OK, so its trailers are not
            # decoded (with a 0-byte header table they need not be, to decode later ones).
            status = "OK"
        else:
            status = self._status(trailers) if trailers is not None else "INTERNAL"
        if call.on_message is not None:
            call.on_end(None, "" if status == "OK" else status)
        elif status == "OK" and len(call.data) >= 5:
            size = _WORD.unpack_from(call.data, 1)[0]
            if len(call.data) == 5 + size:
                call.on_end(call.data[5:], "")
            else:
                call.on_end(None, "BAD_REPLY_FRAMING")
        else:
            call.on_end(None, "EMPTY_REPLY" if status == "OK" else status)
        self._start_queued()

    def _status(self, block: bytes) -> str:
        """The grpc-status of a trailers block, by name."""
        if self._decoder is None:
            self._decoder = hpack.Decoder()
            # As announced in SETTINGS: entries the server adds are evicted at once.
            self._decoder.header_table_size = 0
            self._decoder.max_allowed_table_size = 0
        try:
            headers = self._decoder.decode(block)
        except hpack.HPACKError:
            return "UNDECODED_TRAILERS"
        for name, value in headers:
            if name == "grpc-status":
                try:
                    return _STATUS_NAMES.get(int(value), "UNKNOWN")
                except ValueError:
                    return "UNKNOWN"
        for name, value in headers:
            if name == ":status" and value != "200":
                return f"HTTP_{value!s}"
        return "UNKNOWN"

    def _on_control(self, kind: int, stream: int, flags: int, payload: bytes) -> None:
        assert self.transport is not None
        if kind == SETTINGS:
            if flags & ACK:
                return
            self._apply_settings(payload)
            self.transport.write(frame(SETTINGS, ACK, 0, b""))
            if self._settled is not None and not self._settled.done():
                self._settled.set_result(None)
            self._start_queued()
            self._flush_blocked()
        elif kind == PING:
            if not flags & ACK:
                self.transport.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            inc = _WORD.unpack_from(payload)[0] & MAX_WINDOW
            if stream == 0:
                self.send_window += inc
            elif (call := self.calls.get(stream)) is not None:
                call.window += inc
            self._flush_blocked()
        elif kind == RST_STREAM:
            code = _WORD.unpack_from(payload)[0] if len(payload) >= 4 else 2
            call = self.calls.pop(stream, None)
            if call is None:
                return
            if code == REFUSED_STREAM and call.resend is not None:
                # A unary call not processed: started again, as grpc clients do (transparent
                # retry). Counts of open streams can differ for a moment, the server's being
                # the later. A refused stream fails instead: what was sent on it is gone.
                self.queued.appendleft(_Queued(*call.resend, call))
            else:
                call.on_end(None, _RST_NAMES.get(code, "INTERNAL"))
            self._start_queued()
        elif kind == GOAWAY:
            last = _WORD.unpack_from(payload)[0] & MAX_STREAM_ID if len(payload) >= 4 else 0
            # Calls above `last` were never seen; those at or below may still finish.
            for s in [s for s in self.calls if s > last]:
                self.calls.pop(s).on_end(None, "UNAVAILABLE")
            self.draining = True
            while self.queued:
                self.queued.popleft().call.on_end(None, "UNAVAILABLE")
            self._closing()
        # PRIORITY, PUSH_PROMISE (refused by ENABLE_PUSH 0) and unknown types are ignored.

    def _apply_settings(self, payload: bytes) -> None:
        for off in range(0, len(payload) - len(payload) % 6, 6):
            key, value = _SETTING.unpack_from(payload, off)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_stream_window
                self.peer_stream_window = value
                for call in self.calls.values():
                    call.window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self.max_frame = value
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = max(1, value - STREAM_LIMIT_MARGIN)

    def _grant(self, stream: int, n: int) -> None:
        assert self.transport is not None
        self.transport.write(frame(WINDOW_UPDATE, 0, stream, _WORD.pack(n)))

    def _shut(self, status: str) -> None:
        """The connection is gone or unusable: every call ends with `status`."""
        if self.closed and not self.calls and not self.queued:
            return
        self.closed = self.closed or status
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call.on_end(None, status)
        while self.queued:
            self.queued.popleft().call.on_end(None, status)
        if status == "INTERNAL" and self.transport is not None:
            self.transport.close()
