"""service Gate: validation for gate fleets, routed by venue to the owning shard's batcher.

Errors leave through `error_map` (the interceptor for unary calls, `status_of` for items of a
batch or stream); a malformed item of a batch or stream gets its own decision and fails alone, and
so does an item for a venue or gate the caller's credential does not cover (PERMISSION_DENIED).
The interceptor has already admitted the caller (`auth.py`); a stream re-checks its credential
at every item, so a gate revoked mid-stream is cut off.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from actors.errors import BadRequest, Overloaded, PermissionDenied, ShardUnavailable
from actors.ingress import metrics
from actors.ingress.auth import Principal, caller, item_allowed, recheck_caller
from actors.ingress.batcher import ShardBatcher
from actors.ingress.convert import (
    credential,
    decision_proto,
    invalid_decision,
    request_from_proto,
    text,
)
from actors.ingress.error_map import Undecodable, status_of
from actors.routing import shard_of
from core.models import Reason
from core.records import Decision, Request
from proto.passgate.v1 import gate_pb2, gate_pb2_grpc

MAX_BATCH_ITEMS = 1000
# Without a client deadline, a gate still gets an answer (or RESOURCE_EXHAUSTED) within this.
DEFAULT_BUDGET_S = 5.0
# Answer RESOURCE_EXHAUSTED this long before the client's deadline, never after it.
DEADLINE_MARGIN_S = 0.002
_REASON_LABELS = {int(r): f"REASON_{r.name}" for r in Reason}
Annul = Callable[[int, str, str, str, int, str], Any]


def _budget(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None:
        return DEFAULT_BUDGET_S
    return min(DEFAULT_BUDGET_S, remaining - DEADLINE_MARGIN_S)


# Metric children looked up once: `labels()` costs about 1.2 µs a call, twice per decision.
_LATENCY = {
    m: metrics.DECISION_LATENCY.labels(m) for m in ("Validate", "ValidateBatch", "ValidateStream")
}
_DECIDED: dict[tuple[int, bool], Any] = {}


def _count(d: Decision) -> None:
    child = _DECIDED.get((d.reason, d.allowed))
    if child is None:
        label = _REASON_LABELS.get(d.reason, "REASON_UNSPECIFIED")
        child = _DECIDED[(d.reason, d.allowed)] = metrics.DECISIONS.labels(label, d.allowed)
    child.inc()
    if d.shared_card:
        metrics.SHARED_CARDS.labels("flag" if d.allowed else "refuse").inc()


async def _answer(fut: asyncio.Future[Decision]) -> Decision:
    """The committed decision of a sent item: never abandoned for RESOURCE_EXHAUSTED. Shielded,
    so a call that goes away does not cancel the item its batch may still commit; the batcher
    settles every future it took, within its answer timeout."""
    return await asyncio.shield(fut)


def _all_settled(futs: list[asyncio.Future[Decision]]) -> asyncio.Future[None]:
    """Resolves once every future of a batch's items is settled: one waiter and one callback per
    item instead of an awaited shield per item. Cancelling the waiter (the call went away)
    leaves the items alone, as a shield would: the batcher settles every future it took."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(futs)

    def one(_: asyncio.Future[Decision]) -> None:
        nonlocal left
        left -= 1
        if not left and not waiter.done():
            waiter.set_result(None)

    for fut in futs:
        fut.add_done_callback(one)
    return waiter


def _answer_of(fut: asyncio.Future[Decision], request_id: str) -> gate_pb2.Decision:
    """A settled item's answer in a batch or stream: its decision, or its error through the
    error map."""
    if fut.cancelled():
        return _error_decision(request_id, ShardUnavailable("shard unavailable"))
    exc = fut.exception()
    if exc is not None:
        return _error_decision(request_id, exc)
    d = fut.result()
    if d.invalid:
        return invalid_decision(d.request_id, d.message)
    _count(d)
    return decision_proto(d)


class GateService(gate_pb2_grpc.GateServicer):
    def __init__(self, batchers: list[ShardBatcher], annul: Annul) -> None:
        self._batchers = batchers
        self._annul = annul
        self._n = len(batchers)

    def _submit(
        self, req: Request, deadline: float, touched: set[ShardBatcher] | None = None
    ) -> asyncio.Future[Decision]:
        """Queues `req` on its shard's batcher (noted in `touched`, when given)."""
        batcher = self._batchers[shard_of(req.venue_id, self._n)]
        fut = batcher.submit(req, deadline)
        if touched is not None:
            touched.add(batcher)
        return fut

    async def Validate(
        self, request: gate_pb2.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.Decision:
        t0 = time.perf_counter()
        req = request_from_proto(request)
        decision = await _answer(self._submit(req, time.monotonic() + _budget(context)))
        if decision.invalid:
            raise BadRequest.from_text(decision.message)
        _count(decision)
        _LATENCY["Validate"].observe(time.perf_counter() - t0)
        return decision_proto(decision)

    async def ValidateBatch(
        self, request: gate_pb2.ValidateBatchRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.ValidateBatchResponse:
        t0 = time.perf_counter()
        n = len(request.requests)
        if n > MAX_BATCH_ITEMS:
            raise BadRequest("requests", f"batch of {n} exceeds the limit of {MAX_BATCH_ITEMS}")
        deadline = time.monotonic() + _budget(context)
        principal = caller()
        touched: set[ShardBatcher] = set()
        slots = [self._item(req, deadline, principal, touched) for req in request.requests]
        sent = [slot for slot in slots if isinstance(slot, asyncio.Future)]
        for batcher in touched:
            batcher.send_now()
        if sent:
            await _all_settled(sent)
        decisions = [
            _answer_of(slot, req.request_id) if isinstance(slot, asyncio.Future) else slot
            for slot, req in zip(slots, request.requests, strict=True)
        ]
        _LATENCY["ValidateBatch"].observe(time.perf_counter() - t0)
        return gate_pb2.ValidateBatchResponse(decisions=decisions)

    def _item(
        self,
        req: gate_pb2.ValidateRequest,
        deadline: float,
        principal: Principal,
        touched: set[ShardBatcher] | None = None,
    ) -> asyncio.Future[Decision] | gate_pb2.Decision:
        """One item of a batch or stream: its future, or its own answer when it fails alone."""
        try:
            parsed = request_from_proto(req)
        except BadRequest as exc:
            return invalid_decision(req.request_id, str(exc))
        problem = item_allowed(principal, parsed.venue_id, parsed.gate_id)
        if problem is not None:
            return _error_decision(parsed.request_id, PermissionDenied(problem))
        try:
            return self._submit(parsed, deadline, touched)
        except Overloaded as exc:
            return _error_decision(req.request_id, exc)

    async def ValidateStream(
        self,
        request_iterator: AsyncIterator[gate_pb2.ValidateRequest | Undecodable],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gate_pb2.Decision]:
        out: asyncio.Queue[gate_pb2.Decision | BaseException | None] = asyncio.Queue()
        observe = _LATENCY["ValidateStream"].observe
        waiting = 0  # items sent to a shard, not yet answered
        reading = True

        def _settled(rid: str, t0: float, fut: asyncio.Future[Decision]) -> None:
            nonlocal waiting
            out.put_nowait(_answer_of(fut, rid))
            observe(time.perf_counter() - t0)
            waiting -= 1
            if not waiting and not reading:
                out.put_nowait(None)

        async def _read() -> None:
            nonlocal waiting, reading
            try:
                async for req in request_iterator:
                    if isinstance(req, Undecodable):
                        out.put_nowait(invalid_decision("", f"request: {req.problem}"))
                        continue
                    t0 = time.perf_counter()
                    principal = recheck_caller()
                    slot = self._item(req, time.monotonic() + DEFAULT_BUDGET_S, principal)
                    if not isinstance(slot, asyncio.Future):
                        out.put_nowait(slot)
                        continue
                    waiting += 1
                    slot.add_done_callback(functools.partial(_settled, req.request_id, t0))
            except Exception as exc:  # the reader failed: end the call with a status, never hang
                out.put_nowait(exc)
                return
            reading = False
            if not waiting:
                out.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(_read())
        try:
            while (item := await out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()

    async def Annul(
        self, request: gate_pb2.AnnulRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.AnnulResponse:
        text(request.request_id, "request_id")
        text(request.venue_id, "venue_id")
        text(request.gate_id, "gate_id")
        if not request.HasField("credential"):
            raise BadRequest("credential", "required: the credential of the entry to annul")
        kind, value = credential(request.credential, "credential")
        shard = shard_of(request.venue_id, self._n)
        ok, reason = await asyncio.wait_for(
            self._annul(shard, request.request_id, request.venue_id, request.gate_id, kind, value),
            max(0.001, _budget(context)),
        )
        return gate_pb2.AnnulResponse(annulled=ok, reason=reason)


def _error_decision(request_id: str, exc: BaseException) -> gate_pb2.Decision:
    """An item of a batch or stream that got an error instead of a decision: the error map's
    code and text, as that item's message."""
    code, message = status_of(exc)
    return gate_pb2.Decision(
        request_id=request_id, allowed=False, message=f"{code.name}: {message}"
    )
