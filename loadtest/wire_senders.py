"""The senders of loadtest/senders.py on the lean HTTP/2 client (loadtest/h2wire.py) instead of
grpc.aio: the same scans, prepared the same way, the same accounting in the worker; only the
transport under them differs. A call's answer comes back as a callback on the worker's loop, so
no task or future is made per call.

A connection that closes (the server's GOAWAY at --max-connection-age-ms, a lost connection) is
opened again in the background (`WireSlots`), as grpc channels do; meanwhile another open
connection of the worker takes its calls, and the old one finishes what it still carries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loadtest.h2wire import WireChannel, request_headers
from loadtest.senders import (
    MAX_STREAM_RESTARTS,
    VALIDATE,
    VALIDATE_BATCH,
    VALIDATE_STREAM,
    BatchSender,
    Sender,
    StreamSender,
    UnarySender,
    _decision,
    _GateStream,
)

if TYPE_CHECKING:
    from loadtest.worker import Worker

DRAIN_POLL_S = 0.01
# A connection that cannot be opened again is tried this often, this far apart, then left closed
# (its slot's calls go to the others, or fail at once).
MAX_REOPEN_TRIES = 20
REOPEN_PAUSE_S = 0.5
# A gate stream with no accepting connection (all of the worker's got GOAWAY at once) looks again
# this soon: a connection is opened again within a TLS handshake.
STREAM_WAIT_S = 0.02


async def connect_wire(spec: Any) -> WireChannel:
    """One open connection to `spec.target` with the worker's TLS settings."""
    host, port = spec.target.rsplit(":", 1)
    return await WireChannel.connect(host, int(port), spec.auth.ssl_context(), host)


class _Held:
    """What `WireSlots.pick` hands out while none of the worker's connections takes calls: a
    unary call made on it waits for the first connection back (as a grpc channel's call waits
    while it reconnects)."""

    accepting = False

    def __init__(self, slots: WireSlots) -> None:
        self._slots = slots

    def unary(self, head: bytes, message: bytes, on_end: Any) -> None:
        self._slots.held.append((head, message, on_end))


class WireSlots:
    """A worker's connections by slot. One that stops taking calls (GOAWAY, or lost) is opened
    again at once in the background (`on_close`; at most MAX_REOPEN_TRIES tries in a row, one
    at a time per slot); until then `pick` hands out another accepting one, or, when none is,
    a holder whose calls wait for the first one back. Replaced connections are kept until
    `close_retired`, so that the calls they still carry (a GOAWAY lets them finish) are waited
    for and counted. `listeners` hear the slot of each connection that stopped (gate streams
    move off it)."""

    def __init__(
        self,
        channels: list[WireChannel],
        connect: Callable[[], Awaitable[WireChannel]],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self.channels = channels  # the worker's own list: it closes what is in it at the end
        self.retired: list[WireChannel] = []
        self.reopened = 0
        self.listeners: list[Callable[[int], None]] = []
        self.stopped = False
        self.held: deque[tuple[bytes, bytes, Any]] = deque()
        self._holder = _Held(self)
        self._connect = connect
        self._spawn = spawn
        self._reopening: set[int] = set()
        for slot, ch in enumerate(channels):
            self._watch(slot, ch)

    def _watch(self, slot: int, ch: WireChannel) -> None:
        ch.on_close = lambda: self._closed(slot)

    def _closed(self, slot: int) -> None:
        self._reopen_soon(slot)
        for listener in self.listeners:
            listener(slot)

    def pick(self, slot: int) -> WireChannel | _Held:
        ch = self.channels[slot]
        if ch.accepting:
            return ch
        if self.stopped:
            return ch  # the run is over: the closed connection fails the call at once
        self._reopen_soon(slot)
        return next((other for other in self.channels if other.accepting), self._holder)

    def _reopen_soon(self, slot: int) -> None:
        if slot not in self._reopening and not self.stopped:
            self._reopening.add(slot)
            self._spawn(self._reopen(slot))

    async def _reopen(self, slot: int) -> None:
        try:
            for _ in range(MAX_REOPEN_TRIES):
                if self.stopped:
                    return
                try:
                    new = await self._connect()
                except (OSError, TimeoutError):
                    await asyncio.sleep(REOPEN_PAUSE_S)
                    continue
                self.retired.append(self.channels[slot])
                self.channels[slot] = new
                self._watch(slot, new)
                self.reopened += 1
                while self.held:
                    new.unary(*self.held.popleft())
                return
        finally:
            self._reopening.discard(slot)
            if not self._reopening:
                self.fail_held("UNAVAILABLE")  # no connection is coming back for them

    def fail_held(self, status: str) -> None:
        while self.held:
            self.held.popleft()[2](None, status)

    def all(self) -> list[WireChannel]:
        return [*self.channels, *self.retired]

    async def close_retired(self) -> None:
        self.stopped = True
        self.fail_held("NO_REPLY")
        retired, self.retired = self.retired, []
        await asyncio.gather(*(ch.close() for ch in retired), return_exceptions=True)


class _WireMixin(Sender):
    """Channels are WireChannels, reopened when they close (`WireSlots`); a call's headers are
    built once per method."""

    def _callable(self, channel: Any) -> Any:
        return channel

    def _adopt(self, channels: list[Any]) -> None:
        self.slots = WireSlots(channels, lambda: connect_wire(self.w.spec), self._spawn)

    def _next_call(self) -> Any:
        self._rr = (self._rr + 1) % len(self.calls)
        return self.slots.pick(self._rr)

    def _head(self, method: str, timeout: float | None) -> bytes:
        spec = self.w.spec
        return request_headers(
            method,
            spec.target,
            not spec.auth.insecure,
            spec.auth.bearer,
            timeout,
        )

    def _in_flight(self) -> int:
        return sum(ch.in_flight for ch in self.slots.all()) + len(self.slots.held)

    async def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        for ch in self.slots.all():
            ch.fail_all("NO_REPLY")
        self.reconnects = self.slots.reopened
        with contextlib.suppress(Exception):
            await self.slots.close_retired()


class WireUnarySender(_WireMixin, UnarySender):
    def __init__(self, worker: Worker, channels: list[Any]) -> None:
        super().__init__(worker, channels)
        self._adopt(channels)
        self.head = self._head(VALIDATE, self._timeout)

    def send(self, intended: float) -> None:
        kind, req, data = self._take()
        w = self.w
        w.tally.kinds[kind] += 1
        sent_at = w.on_sent(intended)

        def done(reply: bytes | None, status: str) -> None:
            if reply is None:
                w.on_error(status)
            else:
                w.on_answer(intended, sent_at, req, _decision(reply))

        self._next_call().unary(self.head, data, done)


class WireBatchSender(_WireMixin, BatchSender):
    def __init__(self, worker: Worker, channels: list[Any]) -> None:
        super().__init__(worker, channels)
        self._adopt(channels)
        self.head = self._head(VALIDATE_BATCH, self._timeout)

    def send(self, intended: float) -> None:
        reqs, data = self._take_batch()
        w = self.w
        sent_at = w.on_sent(intended, len(reqs))

        def done(reply: bytes | None, status: str) -> None:
            if reply is None:
                w.on_error(status, len(reqs))
            else:
                self._answered(reply, reqs, intended, sent_at)

        self._next_call().unary(self.head, data, done)


class WireStreamSender(_WireMixin, StreamSender):
    def __init__(self, worker: Worker, channels: list[Any]) -> None:
        Sender.__init__(self, worker, channels)
        self._adopt(channels)
        self.head = self._head(VALIDATE_STREAM, None)
        n = max(1, worker.spec.streams)
        self.streams = [_WireGateStream(self, i % len(self.calls)) for i in range(n)]
        self._route = {}
        self.slots.listeners.append(self._connection_closed)

    def _connection_closed(self, slot: int) -> None:
        for stream in self.streams:
            if isinstance(stream, _WireGateStream) and stream.slot == slot:
                stream.move()

    async def drain(self, timeout: float) -> None:
        for s in self.streams:
            s.close()
        await _WireMixin.drain(self, timeout)
        for s in self.streams:
            s.abandon()


class _WireGateStream(_GateStream):
    """One ValidateStream call on a WireChannel; reopened (up to MAX_STREAM_RESTARTS for the
    sender) when it fails, with what was waiting counted as failed."""

    def __init__(self, owner: WireStreamSender, slot: int) -> None:
        super().__init__(owner, lambda **_: None)
        self.slots = owner.slots
        self.slot = slot
        self.channel = owner.slots.channels[slot]
        self.generation = 0  # of its stream: the ends of streams it moved off are not its own
        self.head = owner.head
        self.stream_id: int | None = None
        # Sent before the stream had its id (the server's stream limit made it wait).
        self.early: list[bytes] = []

    def start(self) -> None:
        self.stream_id = None
        self.generation += 1
        picked = self.slots.pick(self.slot)
        if not isinstance(picked, WireChannel) or not picked.accepting:
            assert self.w.loop is not None  # none open: look again once a connection is back
            if not self.closing:
                self.w.loop.call_later(STREAM_WAIT_S, self._start_again, self.generation)
            return
        self.channel = picked
        gen = self.generation
        self.channel.open_stream(
            self.head,
            self._message,
            lambda reply, status: self._ended(reply, status) if gen == self.generation else None,
            lambda stream_id: self._opened(stream_id) if gen == self.generation else None,
        )

    def _start_again(self, generation: int) -> None:
        if not self.closing and self.stream_id is None and generation == self.generation:
            self.start()

    def move(self) -> None:
        """Its connection got GOAWAY: this stream ends there (the server still answers what it
        received, matched by request_id as ever) and a new one opens on an accepting connection
        for what comes next. Not a restart: nothing is counted as failed."""
        if self.closing or self.stream_id is None:
            return
        old_channel, old_id = self.channel, self.stream_id
        self.start()
        old_channel.end_stream(old_id)

    def _opened(self, stream_id: int) -> None:
        self.stream_id = stream_id
        for data in self.early:
            self.channel.send(stream_id, data)
        self.early = []
        if self.closing:
            self.channel.end_stream(stream_id)

    def put(self, req: Any, data: bytes, intended: float, sent: float) -> None:
        self.pending.setdefault(req.request_id, deque()).append((intended, sent, req))
        if self.stream_id is None:
            self.early.append(data)
        else:
            self.channel.send(self.stream_id, data)

    def close(self) -> None:
        self.closing = True
        if self.stream_id is not None:
            self.channel.end_stream(self.stream_id)

    def _message(self, raw: bytes) -> None:
        self._answer(_decision(raw))

    def _ended(self, _reply: bytes | None, status: str) -> None:
        if not status:
            self._fail_pending("NO_REPLY")
            return
        self._fail_pending(status)
        self.early = []  # what was waiting for the failed stream was just counted as failed
        if not self.closing and self.owner.restarts < MAX_STREAM_RESTARTS:
            self.owner.restarts += 1
            self.start()

    def abandon(self) -> None:
        if self.stream_id is not None:
            self.channel.cancel(self.stream_id, "NO_REPLY")
        self._fail_pending("NO_REPLY")


WIRE_SENDERS: dict[str, type[Sender]] = {
    "unary": WireUnarySender,
    "stream": WireStreamSender,
    "batch": WireBatchSender,
}
