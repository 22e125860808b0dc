"""service Gate: validation for gate fleets, routed by venue to the owning shard's batcher."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from actors import metrics
from actors.batcher import ShardBatcher
from actors.convert import decision_proto, invalid_decision, request_row
from actors.errors import BadRequest, Overloaded, ShardUnavailable
from actors.shard import shard_of
from core.models import Reason
from proto.passgate.v1 import gate_pb2, gate_pb2_grpc

MAX_BATCH_ITEMS = 1000
# Without a client deadline, a gate still gets an answer (or RESOURCE_EXHAUSTED) within this.
DEFAULT_BUDGET_S = 5.0
# Answer RESOURCE_EXHAUSTED this long before the client's deadline, never after it.
DEADLINE_MARGIN_S = 0.002
_REASON_LABELS = {int(r): f"REASON_{r.name}" for r in Reason}


def _budget(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None:
        return DEFAULT_BUDGET_S
    return min(DEFAULT_BUDGET_S, remaining - DEADLINE_MARGIN_S)


def _count(row: list[Any]) -> None:
    metrics.DECISIONS.labels(_REASON_LABELS.get(row[2], "REASON_UNSPECIFIED"), row[1]).inc()


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, text: str) -> None:
    metrics.GRPC_ERRORS.labels(code.name).inc()
    await context.abort(code, text)


class GateService(gate_pb2_grpc.GateServicer):
    def __init__(
        self,
        batchers: list[ShardBatcher],
        annul: Callable[[int, str, str, str], Any],
    ) -> None:
        self._batchers = batchers
        self._annul = annul
        self._n = len(batchers)

    def _submit(self, row: list[Any], deadline: float) -> asyncio.Future[list[Any]]:
        return self._batchers[shard_of(row[1], self._n)].submit(row, deadline)

    async def Validate(
        self, request: gate_pb2.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.Decision:
        t0 = time.perf_counter()
        try:
            row = request_row(request)
        except BadRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        budget = _budget(context)
        try:
            fut = self._submit(row, time.monotonic() + budget)
            decision = await asyncio.wait_for(fut, budget)
        except (Overloaded, TimeoutError) as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, _overload_text(exc))
            raise
        except ShardUnavailable as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, _retry_text(exc))
            raise
        _count(decision)
        metrics.DECISION_LATENCY.labels("Validate").observe(time.perf_counter() - t0)
        return decision_proto(decision)

    async def ValidateBatch(
        self, request: gate_pb2.ValidateBatchRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.ValidateBatchResponse:
        t0 = time.perf_counter()
        n = len(request.requests)
        if n > MAX_BATCH_ITEMS:
            text = f"requests: batch of {n} exceeds the limit of {MAX_BATCH_ITEMS}"
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, text)
        budget = _budget(context)
        deadline = time.monotonic() + budget
        slots: list[Any] = []
        try:
            for req in request.requests:
                try:
                    slots.append(self._submit(request_row(req), deadline))
                except BadRequest as exc:
                    slots.append(invalid_decision(req.request_id, exc))
            futures = [s for s in slots if isinstance(s, asyncio.Future)]
            await asyncio.wait_for(asyncio.gather(*futures), budget)
        except (Overloaded, TimeoutError) as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, _overload_text(exc))
        except ShardUnavailable as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, _retry_text(exc))
        decisions = []
        for s in slots:
            if isinstance(s, asyncio.Future):
                row = s.result()
                _count(row)
                decisions.append(decision_proto(row))
            else:
                decisions.append(s)
        metrics.DECISION_LATENCY.labels("ValidateBatch").observe(time.perf_counter() - t0)
        return gate_pb2.ValidateBatchResponse(decisions=decisions)

    async def ValidateStream(
        self,
        request_iterator: AsyncIterator[gate_pb2.ValidateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gate_pb2.Decision]:
        out: asyncio.Queue[gate_pb2.Decision | None] = asyncio.Queue()
        pending = 0
        reading = True

        def _done(fut: asyncio.Future[list[Any]], rid: str, t0: float) -> None:
            nonlocal pending
            pending -= 1
            out.put_nowait(_stream_answer(fut, rid, t0))
            if not reading and pending == 0:
                out.put_nowait(None)

        async def _read() -> None:
            nonlocal pending, reading
            async for req in request_iterator:
                t0 = time.perf_counter()
                try:
                    fut = self._submit(request_row(req), time.monotonic() + DEFAULT_BUDGET_S)
                except BadRequest as exc:
                    out.put_nowait(invalid_decision(req.request_id, exc))
                    continue
                except Overloaded as exc:
                    out.put_nowait(_overload_decision(req.request_id, exc))
                    continue
                pending += 1
                fut.add_done_callback(functools.partial(_done, rid=req.request_id, t0=t0))
            reading = False
            if pending == 0:
                out.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(_read())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            reader.cancel()

    async def Annul(
        self, request: gate_pb2.AnnulRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.AnnulResponse:
        for field in ("request_id", "venue_id", "gate_id"):
            if not getattr(request, field):
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{field}: required")
        shard = shard_of(request.venue_id, self._n)
        try:
            ok, reason = await asyncio.wait_for(
                self._annul(shard, request.request_id, request.venue_id, request.gate_id),
                _budget(context),
            )
        except TimeoutError as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, _overload_text(exc))
            raise
        return gate_pb2.AnnulResponse(annulled=ok, reason=reason)


def _overload_text(exc: BaseException) -> str:
    detail = str(exc) or "no answer in time"
    return f"overloaded: {detail}; retry with the same request_id"


def _retry_text(exc: BaseException) -> str:
    return f"shard unavailable ({exc}); retry with the same request_id"


def _overload_decision(request_id: str, exc: BaseException) -> gate_pb2.Decision:
    return gate_pb2.Decision(request_id=request_id, allowed=False, message=_overload_text(exc))


def _stream_answer(fut: asyncio.Future[list[Any]], rid: str, t0: float) -> gate_pb2.Decision:
    if fut.cancelled():
        return _overload_decision(rid, TimeoutError())
    exc = fut.exception()
    if exc is not None:
        text = _retry_text(exc) if isinstance(exc, ShardUnavailable) else _overload_text(exc)
        return gate_pb2.Decision(request_id=rid, allowed=False, message=text)
    row = fut.result()
    _count(row)
    metrics.DECISION_LATENCY.labels("ValidateStream").observe(time.perf_counter() - t0)
    return decision_proto(row)
