"""How a worker puts scans on the wire: unary calls, multiplexed streams, or batch calls.

Every sender is fire-and-forget from the scheduler's point of view: `send(intended)` starts the
work and returns at once; answers come back through the worker's `on_answer` / `on_error`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc

from proto.passgate.v1 import gate_pb2, gate_pb2_grpc

if TYPE_CHECKING:
    from loadtest.worker import Worker

# A gate controller's stream that breaks is reopened, but not forever.
MAX_STREAM_RESTARTS = 5


class Sender:
    """Base: round-robin over the worker's channels; `drain` waits for what is still out."""

    def __init__(self, worker: Worker, channels: list[grpc.aio.Channel]) -> None:
        self.w = worker
        self.stubs = [gate_pb2_grpc.GateStub(ch) for ch in channels]
        self.tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self._rr = 0

    def _stub(self) -> gate_pb2_grpc.GateStub:
        self._rr = (self._rr + 1) % len(self.stubs)
        return self.stubs[self._rr]

    def _spawn(self, coro: Any) -> None:
        assert self.w.loop is not None
        task = self.w.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

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
        kind, req = self.w.mix.next()
        self.w.tally.kinds[kind] += 1
        sent_at = self.w.on_sent(intended)
        self._spawn(self._call(self._stub(), req, intended, sent_at))

    async def _call(
        self, stub: gate_pb2_grpc.GateStub, req: Any, intended: float, sent_at: float
    ) -> None:
        try:
            decision = await stub.Validate(
                req, timeout=self.w.spec.deadline_s, metadata=self.w.metadata
            )
        except grpc.aio.AioRpcError as exc:
            self.w.on_error(exc.code().name)
        except asyncio.CancelledError:
            self.w.on_error("NO_REPLY")
        else:
            self.w.on_answer(intended, sent_at, req, decision)


class BatchSender(Sender):
    """One Gate.ValidateBatch call per arrival, carrying batch_size scans; every decision in it
    gets the call's latency from the call's intended send time."""

    def send(self, intended: float) -> None:
        reqs = []
        for _ in range(self.w.spec.batch_size):
            kind, req = self.w.mix.next()
            self.w.tally.kinds[kind] += 1
            reqs.append(req)
        sent_at = self.w.on_sent(intended, len(reqs))
        self._spawn(self._call(self._stub(), reqs, intended, sent_at))

    async def _call(
        self, stub: gate_pb2_grpc.GateStub, reqs: list[Any], intended: float, sent_at: float
    ) -> None:
        batch = gate_pb2.ValidateBatchRequest(requests=reqs)
        try:
            resp = await stub.ValidateBatch(
                batch, timeout=self.w.spec.deadline_s, metadata=self.w.metadata
            )
        except grpc.aio.AioRpcError as exc:
            self.w.on_error(exc.code().name, len(reqs))
            return
        except asyncio.CancelledError:
            self.w.on_error("NO_REPLY", len(reqs))
            return
        for req, decision in zip(reqs, resp.decisions, strict=False):
            self.w.on_answer(intended, sent_at, req, decision)
        if len(resp.decisions) != len(reqs):
            missing = len(reqs) - len(resp.decisions)
            self.w.on_error("BATCH_SIZE_MISMATCH", max(missing, 0))


class StreamSender(Sender):
    """Gate controllers: `streams` long-lived ValidateStream calls per worker, each carrying the
    scans of the gates hashed to it; replies are matched by request_id (order is not promised)."""

    def __init__(self, worker: Worker, channels: list[grpc.aio.Channel]) -> None:
        super().__init__(worker, channels)
        n = max(1, worker.spec.streams)
        self.streams = [_GateStream(self, self.stubs[i % len(self.stubs)]) for i in range(n)]
        self._route: dict[str, _GateStream] = {}

    async def open(self) -> None:
        for s in self.streams:
            s.start()

    def send(self, intended: float) -> None:
        kind, req = self.w.mix.next()
        self.w.tally.kinds[kind] += 1
        stream = self._route.get(req.gate_id)
        if stream is None:
            stream = self.streams[zlib.crc32(req.gate_id.encode()) % len(self.streams)]
            self._route[req.gate_id] = stream
        stream.put(req, intended, self.w.on_sent(intended))

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
    def __init__(self, owner: StreamSender, stub: gate_pb2_grpc.GateStub) -> None:
        self.owner = owner
        self.w = owner.w
        self.stub = stub
        self.pending: dict[str, deque[tuple[float, float, Any]]] = {}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.closing = False
        self.call: Any = None

    def start(self) -> None:
        assert self.w.loop is not None
        self.queue = asyncio.Queue()
        self.call = self.stub.ValidateStream(metadata=self.w.metadata)
        self.writer = self.w.loop.create_task(self._write(self.call, self.queue))
        self.reader = self.w.loop.create_task(self._read(self.call))

    def put(self, req: Any, intended: float, sent_at: float) -> None:
        # A retry reuses a request_id, so several scans may wait under one id.
        self.pending.setdefault(req.request_id, deque()).append((intended, sent_at, req))
        self.queue.put_nowait(req)

    def close(self) -> None:
        self.closing = True
        self.queue.put_nowait(None)

    async def _write(self, call: Any, queue: asyncio.Queue[Any]) -> None:
        try:
            while (req := await queue.get()) is not None:
                await call.write(req)
            await call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the reader sees the same failure and accounts for it

    async def _read(self, call: Any) -> None:
        try:
            while (decision := await call.read()) is not grpc.aio.EOF:
                self._answer(decision)
        except grpc.aio.AioRpcError as exc:
            self._fail_pending(exc.code().name)
            if not self.closing and self.owner.restarts < MAX_STREAM_RESTARTS:
                self.owner.restarts += 1
                self.queue.put_nowait(None)  # ends the old writer
                self.start()
        except asyncio.CancelledError:
            call.cancel()
            raise

    def _answer(self, decision: Any) -> None:
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
