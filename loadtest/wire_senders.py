"""The senders of loadtest/senders.py on the lean HTTP/2 client (loadtest/h2wire.py) instead of
grpc.aio: the same scans, prepared the same way, the same accounting in the worker; only the
transport under them differs. A call's answer comes back as a callback on the worker's loop, so
no task or future is made per call."""

from __future__ import annotations

import asyncio
import time
from collections import deque
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


class _WireMixin(Sender):
    """Channels are WireChannels; a call's headers are built once per method."""

    def _callable(self, channel: Any) -> Any:
        return channel

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
        return sum(ch.in_flight for ch in self.calls)

    async def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        for ch in self.calls:
            ch.fail_all("NO_REPLY")


class WireUnarySender(_WireMixin, UnarySender):
    def __init__(self, worker: Worker, channels: list[Any]) -> None:
        super().__init__(worker, channels)
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
        self.head = self._head(VALIDATE_STREAM, None)
        n = max(1, worker.spec.streams)
        self.streams = [_WireGateStream(self, self.calls[i % len(self.calls)]) for i in range(n)]
        self._route = {}

    async def drain(self, timeout: float) -> None:
        for s in self.streams:
            s.close()
        await _WireMixin.drain(self, timeout)
        for s in self.streams:
            s.abandon()


class _WireGateStream(_GateStream):
    """One ValidateStream call on a WireChannel; reopened (up to MAX_STREAM_RESTARTS for the
    sender) when it fails, with what was waiting counted as failed."""

    def __init__(self, owner: WireStreamSender, channel: WireChannel) -> None:
        super().__init__(owner, lambda **_: None)
        self.channel = channel
        self.head = owner.head
        self.stream_id: int | None = None
        # Sent before the stream had its id (the server's stream limit made it wait).
        self.early: list[bytes] = []

    def start(self) -> None:
        self.stream_id = None
        self.early = []
        self.channel.open_stream(self.head, self._message, self._ended, self._opened)

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
