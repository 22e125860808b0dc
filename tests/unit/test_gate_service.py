"""GateService's batch and stream paths against a fake batcher: each item is answered when its
own future settles, in any order, a failed item fails alone, and a call that goes away leaves
the items it sent to be settled by the batcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from actors.errors import ShardUnavailable
from actors.ingress.auth import Principal, Role, bind
from actors.ingress.gate_service import GateService
from core.records import Decision, Request
from proto.passgate.v1 import common_pb2, gate_pb2


class FakeBatcher:
    """Takes every item and keeps its future, for the test to settle."""

    def __init__(self) -> None:
        self.taken: list[tuple[Request, asyncio.Future[Decision]]] = []
        self.sent_now = 0  # times told the caller queued all it had

    def send_now(self) -> None:
        self.sent_now += 1

    def submit(self, req: Request, deadline: float) -> asyncio.Future[Decision]:
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self.taken.append((req, fut))
        return fut


class PassingAuthenticator:
    def recheck(self, principal: Principal) -> None:
        return None


class Context:
    def time_remaining(self) -> float | None:
        return None


def _admin() -> None:
    who = Principal("t", Role.ADMIN, frozenset(), frozenset(), "j", time.time() + 60)
    bind(who, PassingAuthenticator())  # type: ignore[arg-type]


def _request(i: int) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=f"r{i}",
        venue_id="v1",
        gate_id="g1",
        credential=common_pb2.Credential(kind=common_pb2.CREDENTIAL_KIND_CARD, value=f"C{i}"),
        direction=1,
    )


def _decision(req: Request) -> Decision:
    return Decision(req.request_id, True, 1, "ok", "p-" + req.request_id)


def _service() -> tuple[GateService, FakeBatcher]:
    batcher = FakeBatcher()
    return GateService([batcher], lambda *a: None), batcher  # type: ignore[list-item]


async def _until(cond: Any) -> None:
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_a_batch_answers_each_item_in_order_when_all_have_settled_in_any_order() -> None:
    async def main() -> None:
        _admin()
        service, batcher = _service()
        bad = gate_pb2.ValidateRequest(request_id="r-bad", venue_id="v1", gate_id="g1")
        request = gate_pb2.ValidateBatchRequest(requests=[_request(0), bad, _request(2)])
        call = asyncio.ensure_future(service.ValidateBatch(request, Context()))  # type: ignore[arg-type]
        await _until(lambda: len(batcher.taken) == 2)
        assert batcher.sent_now == 1  # the call's items go at once, not after the delay
        (req2, fut2), fut0 = batcher.taken[1], batcher.taken[0][1]
        fut2.set_result(_decision(req2))
        await asyncio.sleep(0)
        assert not call.done()  # item 0 is not settled yet
        fut0.set_exception(ShardUnavailable("shard unavailable"))
        reply = await call
        ids = [d.request_id for d in reply.decisions]
        assert ids == ["r0", "r-bad", "r2"]
        assert reply.decisions[0].message.startswith("UNAVAILABLE")
        assert reply.decisions[1].message.startswith("INVALID_ARGUMENT: credential")
        assert reply.decisions[2].allowed and reply.decisions[2].pass_id == "p-r2"

    asyncio.run(main())


def test_a_batch_call_that_goes_away_leaves_its_sent_items_to_the_batcher() -> None:
    async def main() -> None:
        _admin()
        service, batcher = _service()
        request = gate_pb2.ValidateBatchRequest(requests=[_request(0), _request(1)])
        call = asyncio.ensure_future(service.ValidateBatch(request, Context()))  # type: ignore[arg-type]
        await _until(lambda: len(batcher.taken) == 2)
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        assert call.cancelled()
        assert not any(fut.cancelled() for _, fut in batcher.taken)
        for req, fut in batcher.taken:
            fut.set_result(_decision(req))  # still settable: nothing cancelled it

    asyncio.run(main())


def test_a_stream_answers_items_as_they_settle_and_ends_after_the_last() -> None:
    async def main() -> None:
        _admin()
        service, batcher = _service()
        sent = asyncio.Queue[gate_pb2.ValidateRequest | None]()

        async def requests() -> AsyncIterator[gate_pb2.ValidateRequest]:
            while (req := await sent.get()) is not None:
                yield req

        answers: list[gate_pb2.Decision] = []

        async def consume() -> None:
            async for d in service.ValidateStream(requests(), Context()):  # type: ignore[arg-type]
                answers.append(d)

        consumer = asyncio.ensure_future(consume())
        for i in range(3):
            sent.put_nowait(_request(i))
        sent.put_nowait(None)  # the client half-closes with three items unanswered
        await _until(lambda: len(batcher.taken) == 3)
        (_, f0), (r1, f1), (r2, f2) = batcher.taken
        f2.set_result(_decision(r2))
        await _until(lambda: len(answers) == 1)  # answered before the items sent ahead of it
        f0.set_exception(ShardUnavailable("shard unavailable"))
        await _until(lambda: len(answers) == 2)
        assert not consumer.done()  # one item is still out: the stream stays open
        f1.set_result(_decision(r1))
        await asyncio.wait_for(consumer, 1)
        assert [d.request_id for d in answers] == ["r2", "r0", "r1"]
        assert answers[1].message.startswith("UNAVAILABLE")

    asyncio.run(main())


def test_an_empty_stream_ends_at_once() -> None:
    async def main() -> None:
        _admin()
        service, _ = _service()

        async def requests() -> AsyncIterator[gate_pb2.ValidateRequest]:
            return
            yield  # an async generator with no items

        got = [d async for d in service.ValidateStream(requests(), Context())]  # type: ignore[arg-type]
        assert got == []

    asyncio.run(main())
