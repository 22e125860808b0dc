"""How a worker puts scans on the wire: unary calls, multiplexed streams, or batch calls.

Every sender is fire-and-forget from the scheduler's point of view: `send(intended)` starts the
work and returns at once; answers come back through the worker's `on_answer` / `on_error`.

The hot path is lean, because the generator's own cost is what the echo baseline must keep
small: calls are generic raw-bytes multicallables (no protobuf serializer in gRPC's call path),
requests are made and serialized ahead of time by `prepare()` while the scheduler would otherwise
sleep, and replies are parsed straight from bytes.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from proto.passgate.v1 import gate_pb2

if TYPE_CHECKING:
    from loadtest.worker import Worker

# A gate controller's stream that breaks is reopened, but not forever.
MAX_STREAM_RESTARTS = 5
VALIDATE = "/passgate.v1.Gate/Validate"
VALIDATE_BATCH = "/passgate.v1.Gate/ValidateBatch"
VALIDATE_STREAM = "/passgate.v1.Gate/ValidateStream"
# Scans made ahead of their send time: enough for the gaps between sleeps, few enough that exits
# and repeated scans still follow recent decisions closely.
LOOKAHEAD = 256
PREPARE_CHUNK = 32
_decision = gate_pb2.Decision.FromString
_batch_response = gate_pb2.ValidateBatchResponse.FromString
# ValidateBatchRequest.requests is field 1, length-delimited: tag byte 0x0a.
_REQUESTS_TAG = b"\x0a"

# (kind, request, its serialized bytes)
Prepared = tuple[str, gate_pb2.ValidateRequest, bytes]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def batch_bytes(items: list[bytes]) -> bytes:
    """A serialized ValidateBatchRequest from serialized ValidateRequests, without building the
    message: repeated field 1, each item length-prefixed."""
    return b"".join(_REQUESTS_TAG + _varint(len(b)) + b for b in items)


class Sender:
    """Base: round-robin over the worker's channels; requests prepared ahead of time; `drain`
    waits for what is still out."""

    method = VALIDATE

    def __init__(self, worker: Worker, channels: list[grpc.aio.Channel]) -> None:
        self.w = worker
        self.calls = [self._callable(ch) for ch in channels]
        self.tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self.reconnects = 0  # connections opened again after they closed (the wire client)
        self._rr = 0
        self._ready: deque[Prepared] = deque()
        self._timeout = worker.spec.deadline_s
        self._metadata = worker.metadata

    def _callable(self, channel: grpc.aio.Channel) -> Any:
        # None (de)serializers: gRPC passes bytes through untouched.
        return channel.unary_unary(self.method, request_serializer=None, response_deserializer=None)

    def _next_call(self) -> Any:
        self._rr = (self._rr + 1) % len(self.calls)
        return self.calls[self._rr]

    def _spawn(self, coro: Any) -> None:
        assert self.w.loop is not None
        task = self.w.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def prepare(self) -> int:
        """Makes up to PREPARE_CHUNK scans ahead, up to `lookahead` waiting (called when idle);
        returns how many it made."""
        ready, mix = self._ready, self.w.mix
        n = max(0, min(PREPARE_CHUNK, self.lookahead - len(ready)))
        for _ in range(n):
            kind, req = mix.next()
            ready.append((kind, req, req.SerializeToString()))
        return n

    @property
    def lookahead(self) -> int:
        return LOOKAHEAD

    @property
    def ready(self) -> int:
        """Scans made and waiting to be sent."""
        return len(self._ready)

    @property
    def low_water(self) -> int:
        """Below this many waiting scans, more are made even while calls are out."""
        return 2 * PREPARE_CHUNK

    def _take(self) -> Prepared:
        if self._ready:
            return self._ready.popleft()
        kind, req = self.w.mix.next()
        return kind, req, req.SerializeToString()

    async def open(self) -> None:
        return None

    def send(self, intended: float) -> None:
        raise NotImplementedError

    async def drain(self, timeout: float) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=1.0)


class UnarySender(Sender):
    """One Gate.Validate call per scan."""

    def send(self, intended: float) -> None:
        kind, req, data = self._take()
        self.w.tally.kinds[kind] += 1
        sent_at = self.w.on_sent(intended)
        self._spawn(self._call(self._next_call(), req, data, intended, sent_at))

    async def _call(
        self, call: Any, req: gate_pb2.ValidateRequest, data: bytes, intended: float, sent_at: float
    ) -> None:
        try:
            raw = await call(data, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self.w.on_error(exc.code().name)
        except asyncio.CancelledError:
            self.w.on_error("NO_REPLY")
        else:
            self.w.on_answer(intended, sent_at, req, _decision(raw))


class BatchSender(Sender):
    """One Gate.ValidateBatch call per arrival, carrying batch_size scans; every decision in it
    gets the call's latency from the call's intended send time."""

    method = VALIDATE_BATCH

    @property
    def lookahead(self) -> int:
        """Two calls' worth, made PREPARE_CHUNK at a time like single scans: a whole batch at
        once would hold the loop for milliseconds, and a reply read after that would be
        charged with it."""
        return max(LOOKAHEAD, 2 * self.w.spec.batch_size)

    @property
    def low_water(self) -> int:
        """One call's worth: the next call never waits for its scans to be made."""
        return self.w.spec.batch_size

    def _take_batch(self) -> tuple[list[gate_pb2.ValidateRequest], bytes]:
        """The next call's scans (counted by kind) and its serialized body."""
        items = [self._take() for _ in range(self.w.spec.batch_size)]
        kinds = self.w.tally.kinds
        for kind, _, _ in items:
            kinds[kind] += 1
        return [r for _, r, _ in items], batch_bytes([b for _, _, b in items])

    def send(self, intended: float) -> None:
        reqs, data = self._take_batch()
        sent_at = self.w.on_sent(intended, len(reqs))
        self._spawn(self._call(self._next_call(), reqs, data, intended, sent_at))

    async def _call(
        self, call: Any, reqs: list[gate_pb2.ValidateRequest], data: bytes, intended: float,
        sent_at: float,
    ) -> None:  # fmt: skip
        try:
            raw = await call(data, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self.w.on_error(exc.code().name, len(reqs))
            return
        except asyncio.CancelledError:
            self.w.on_error("NO_REPLY", len(reqs))
            return
        self._answered(raw, reqs, intended, sent_at)

    def _answered(
        self, raw: bytes, reqs: list[gate_pb2.ValidateRequest], intended: float, sent_at: float
    ) -> None:
        """A call's reply: its decisions counted, and any it lacks counted as errors."""
        decisions = _batch_response(raw).decisions
        self.w.on_batch_answer(intended, sent_at, reqs, decisions)
        if len(decisions) != len(reqs):
            missing = len(reqs) - len(decisions)
            self.w.on_error("BATCH_SIZE_MISMATCH", max(missing, 0))


class StreamSender(Sender):
    """Gate controllers: `streams` long-lived ValidateStream calls per worker, each carrying the
    scans of the gates hashed to it; replies are matched by request_id (order is not promised)."""

    method = VALIDATE_STREAM

    def __init__(self, worker: Worker, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(worker, channels)
        n = max(1, worker.spec.streams)
        self.streams = [_GateStream(self, self.calls[i % len(self.calls)]) for i in range(n)]
        self._route: dict[str, _GateStream] = {}

    def _callable(self, channel: grpc.aio.Channel) -> Any:
        return channel.stream_stream(
            self.method, request_serializer=None, response_deserializer=None
        )

    async def open(self) -> None:
        for s in self.streams:
            s.start()

    def send(self, intended: float) -> None:
        kind, req, data = self._take()
        self.w.tally.kinds[kind] += 1
        stream = self._route.get(req.gate_id)
        if stream is None:
            stream = self.streams[zlib.crc32(req.gate_id.encode()) % len(self.streams)]
            self._route[req.gate_id] = stream
        stream.put(req, data, intended, self.w.on_sent(intended))

    async def drain(self, timeout: float) -> None:
        for s in self.streams:
            s.close()
        readers = [s.reader for s in self.streams if s.reader is not None]
        if readers:
            await asyncio.wait(readers, timeout=timeout)
        for s in self.streams:
            s.abandon()
        await super().drain(1.0)


class _GateStream:
    def __init__(self, owner: StreamSender, open_call: Callable[..., Any]) -> None:
        self.owner = owner
        self.w = owner.w
        self.open_call = open_call
        self.pending: dict[str, deque[tuple[float, float, gate_pb2.ValidateRequest]]] = {}
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.closing = False
        self.call: Any = None

    def start(self) -> None:
        assert self.w.loop is not None
        self.queue = asyncio.Queue()
        self.call = self.open_call(metadata=self.w.metadata)
        self.writer = self.w.loop.create_task(self._write(self.call, self.queue))
        self.reader = self.w.loop.create_task(self._read(self.call))

    def put(self, req: gate_pb2.ValidateRequest, data: bytes, intended: float, sent: float) -> None:
        # A retry reuses a request_id, so several scans may wait under one id.
        self.pending.setdefault(req.request_id, deque()).append((intended, sent, req))
        self.queue.put_nowait(data)

    def close(self) -> None:
        self.closing = True
        self.queue.put_nowait(None)

    async def _write(self, call: Any, queue: asyncio.Queue[bytes | None]) -> None:
        try:
            while (data := await queue.get()) is not None:
                await call.write(data)
            await call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the reader sees the same failure and accounts for it

    async def _read(self, call: Any) -> None:
        try:
            while (raw := await call.read()) is not grpc.aio.EOF:
                self._answer(_decision(raw))
        except grpc.aio.AioRpcError as exc:
            self._fail_pending(exc.code().name)
            if not self.closing and self.owner.restarts < MAX_STREAM_RESTARTS:
                self.owner.restarts += 1
                self.queue.put_nowait(None)  # ends the old writer
                self.start()
        except asyncio.CancelledError:
            call.cancel()
            raise

    def _answer(self, decision: gate_pb2.Decision) -> None:
        waiting = self.pending.get(decision.request_id)
        if not waiting:
            self.w.tally.errors_by_code["UNMATCHED_REPLY"] += 1
            return
        intended, sent_at, req = waiting.popleft()
        if not waiting:
            del self.pending[decision.request_id]
        self.w.on_answer(intended, sent_at, req, decision)

    def _fail_pending(self, code: str) -> None:
        n = sum(len(q) for q in self.pending.values())
        self.pending.clear()
        if n:
            self.w.on_error(code, n)

    def abandon(self) -> None:
        """After the drain timeout: whatever is still unanswered never will be."""
        for task in (self.reader, self.writer):
            if task is not None and not task.done():
                task.cancel()
        if self.call is not None:
            self.call.cancel()
        self._fail_pending("NO_REPLY")


SENDERS: dict[str, type[Sender]] = {
    "unary": UnarySender,
    "stream": StreamSender,
    "batch": BatchSender,
}
