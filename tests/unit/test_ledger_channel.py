"""The credit ledger over the channel (actors.ledger.ledger.serve_call, ChannelLedgerClient) and
the shard's batch path awaiting a hold (actors.shard.service.ShardService.decide_batch). No Ray:
real ChannelServers on 127.0.0.1 (free ports), fake ledger handles, in-memory ledgers. Holds are
gated by events, never by timing; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import gc_pauses
from actors.catalog import CatalogWriter, catalog_path
from actors.channel_frames import ChannelAddress
from actors.channel_server import ChannelServer
from actors.codec import decode_decisions, encode_batch
from actors.errors import BadRequest, StorageError
from actors.ledger.client import ChannelLedgerClient, LocalLedgerClient
from actors.ledger.ledger import Ledger, serve_call
from actors.routing import ledger_of
from actors.shard.pipeline import BROKEN
from actors.shard.service import ShardService
from core.credit import (
    RELEASE,
    SETTLE,
    ChargeState,
    HoldAnswer,
    HoldAsk,
    HoldCall,
    LedgerCall,
    Outcomes,
    Owner,
)
from core.keys import charge_key, request_key
from core.models import Product, Province, VenueRule
from core.records import Decision, encode
from tests.unit.test_ledger import NOW_MS, _owed, _pass, _province, _req, _states

HOST = "127.0.0.1"
SECRET = b"k" * 32
WAIT_S = 5.0
OWNER = Owner(0, 1)
ANSWERS = msgspec.msgpack.Decoder(list[HoldAnswer])
HELD, SETTLED, RELEASED = ChargeState.HELD, ChargeState.SETTLED, ChargeState.RELEASED


def _ask(pass_id: str, rid: str, amount: int) -> HoldAsk:
    key = charge_key(pass_id, request_key("lake", "lake-g1", rid), b"\x00" * 12)
    return HoldAsk(key, pass_id, "lake", rid, amount, 0, 500_00, NOW_MS)


# -- serve_call: one channel frame on one ledger ---------------------------------------------


def test_a_hold_frame_is_answered_as_the_ledger_holds() -> None:
    asks = [_ask("G1", "r1", 300_00), _ask("G1", "r2", 300_00), _ask("G1", "r3", 200_00)]
    served = Ledger()
    reply = serve_call(served, encode(LedgerCall(hold=HoldCall(OWNER, asks))))
    answers = ANSWERS.decode(reply)
    assert answers == Ledger().hold(HoldCall(OWNER, asks))
    expected = [(True, 0), (False, 300_00), (True, 300_00)]
    assert [(a.granted, a.owed_fen) for a in answers] == expected
    assert _states(served) == [("r1", HELD), ("r3", HELD)] and _owed(served) == 500_00


def test_an_outcomes_frame_settles_and_releases() -> None:
    led = Ledger()
    r1, r2 = _ask("G1", "r1", 300_00), _ask("G1", "r2", 100_00)
    led.hold(HoldCall(OWNER, [r1, r2]))
    assert serve_call(led, encode(LedgerCall(outcomes=Outcomes([r1.key], [r2.key])))) == b""
    assert _states(led) == [("r1", SETTLED), ("r2", RELEASED)] and _owed(led) == 300_00


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\xc1", "malformed"),
        (encode("not a call"), "malformed"),
        (encode(LedgerCall()), "exactly one of hold and outcomes"),
        (
            encode(
                LedgerCall(HoldCall(OWNER, [_ask("G1", "r9", 10_00)]), Outcomes([], [b"\x02G1"]))
            ),
            "exactly one of hold and outcomes",
        ),
        (encode(LedgerCall(outcomes=Outcomes([b""], []))), "a malformed charge key"),
        (encode(LedgerCall(outcomes=Outcomes([], [b"\x02\x01\xff"]))), "a malformed charge key"),
        (
            encode(
                LedgerCall(
                    hold=HoldCall(
                        OWNER,
                        [
                            _ask("G1", "r8", 10_00),
                            msgspec.structs.replace(_ask("G1", "r9", 10_00), key=b""),
                        ],
                    )
                )
            ),
            "a charge key that does not name its pass",
        ),
        (
            encode(
                LedgerCall(
                    hold=HoldCall(
                        OWNER, [msgspec.structs.replace(_ask("G2", "r9", 10_00), pass_id="G1")]
                    )
                )
            ),
            "a charge key that does not name its pass",
        ),
    ],
    ids=[
        "garbage",
        "wrong-shape",
        "neither",
        "both",
        "empty-key",
        "not-utf8-key",
        "good-then-empty",
        "other-pass",
    ],
)
def test_a_bad_frame_is_refused_and_changes_nothing(payload: bytes, problem: str) -> None:
    led = Ledger()
    led.hold(HoldCall(OWNER, [_ask("G1", "r1", 300_00)]))
    before = dict(led.book.charges)
    with pytest.raises(BadRequest, match=problem) as err:
        serve_call(led, payload)
    assert err.value.field == "ledger call"
    assert led.book.charges == before and _owed(led) == 300_00


# -- ChannelLedgerClient against in-process channel servers -------------------------------------


class _Method:
    def __init__(self, address: ChannelAddress) -> None:
        self.address = address

    def remote(self) -> Awaitable[ChannelAddress]:
        async def get() -> ChannelAddress:
            return self.address

        return get()


class _Handle:
    """A ledger's Ray handle, as far as the channel client uses it."""

    def __init__(self, address: ChannelAddress) -> None:
        self.channel_address = _Method(address)


def _serving_ledger(ledger: Ledger) -> Callable[[bytes], Awaitable[bytes]]:
    async def handle(payload: bytes) -> bytes:
        return serve_call(ledger, payload)

    return handle


@contextlib.asynccontextmanager
async def _serving(
    handlers: list[Callable[[bytes], Awaitable[bytes]]],
) -> AsyncIterator[tuple[list[ChannelServer], list[_Handle]]]:
    servers = [ChannelServer(h, SECRET) for h in handlers]
    try:
        yield servers, [_Handle(await s.address(HOST)) for s in servers]
    finally:
        for server in servers:
            await server.close()


async def _delivered(client: ChannelLedgerClient, n: int) -> tuple[dict[bytes, int], list[bytes]]:
    """What the client reports delivered or failed, until `n` keys are accounted for (bounded)."""
    done: dict[bytes, int] = {}
    failed: list[bytes] = []
    for _ in range(int(WAIT_S / 0.01)):
        got, lost = client.delivered()
        done.update(got)
        failed.extend(lost)
        if len(done) + len(failed) >= n:
            break
        await asyncio.sleep(0.01)
    return done, failed


def test_holds_and_outcomes_go_to_each_pass_ledger_over_its_channel() -> None:
    a, d = "A", "D"  # one pass on each of two ledgers
    assert (ledger_of(a, 2), ledger_of(d, 2)) == (1, 0)
    ledgers = [Ledger(), Ledger()]
    asks = [
        _ask(a, "a1", 300_00),
        _ask(d, "d1", 100_00),
        _ask(a, "a2", 250_00),  # 550 > 500: refused
        _ask(d, "d2", 150_00),
        _ask(a, "a3", 200_00),
    ]

    async def body() -> None:
        async with _serving([_serving_ledger(led) for led in ledgers]) as (servers, handles):
            client = ChannelLedgerClient(handles, hold_timeout_s=WAIT_S)
            answers = await asyncio.wait_for(client.hold_async(OWNER, asks), WAIT_S)
            assert answers == LocalLedgerClient([Ledger(), Ledger()]).hold(OWNER, asks)
            assert [(x.granted, x.owed_fen) for x in answers or []] == [
                (True, 0), (True, 0), (False, 300_00), (True, 100_00), (True, 300_00),
            ]  # fmt: skip
            assert [s.frames_served for s in servers] == [1, 1]  # one call per ledger
            assert _states(ledgers[1], a) == [("a1", HELD), ("a3", HELD)]
            assert _states(ledgers[0], d) == [("d1", HELD), ("d2", HELD)]
            assert ledgers[0].charges_of(a) == [] == ledgers[1].charges_of(d)

            outcomes = {
                asks[0].key: SETTLE, asks[4].key: RELEASE,
                asks[1].key: SETTLE, asks[3].key: RELEASE,
            }  # fmt: skip
            client.send(outcomes)
            done, failed = await _delivered(client, len(outcomes))
            assert (done, failed) == (outcomes, [])
            assert _states(ledgers[1], a) == [("a1", SETTLED), ("a3", RELEASED)]
            assert _states(ledgers[0], d) == [("d1", SETTLED), ("d2", RELEASED)]
            assert (_owed(ledgers[1], a), _owed(ledgers[0], d)) == (300_00, 100_00)
            client.close()

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))


def test_a_ledger_that_does_not_answer_times_the_hold_out_and_the_client_recovers() -> None:
    led = Ledger()
    arrived: list[bytes] = []

    async def body() -> None:
        never = asyncio.Event()

        async def stuck_once(payload: bytes) -> bytes:
            arrived.append(payload)
            if len(arrived) == 1:
                await never.wait()
            return serve_call(led, payload)

        async with _serving([stuck_once]) as (_, handles):
            client = ChannelLedgerClient(handles, hold_timeout_s=0.2)
            first = [_ask("G1", "r1", 300_00)]
            assert await asyncio.wait_for(client.hold_async(OWNER, first), WAIT_S) is None
            assert len(arrived) == 1  # it reached the ledger: a timeout, not a refused connect
            assert _owed(led) == 0
            second = [_ask("G1", "r2", 100_00)]
            answers = await asyncio.wait_for(client.hold_async(OWNER, second), WAIT_S)
            assert answers == [HoldAnswer(True, 0, 500_00)]
            assert _states(led) == [("r2", HELD)]
            client.close()

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))


@pytest.mark.parametrize("where", ["in the ledger", "in the client"])
def test_outcomes_that_fail_are_reported_failed_for_the_outbox_to_resend(where: str) -> None:
    led = Ledger()
    r1 = _ask("G1", "r1", 300_00)
    led.hold(HoldCall(OWNER, [r1]))

    async def broken(payload: bytes) -> bytes:
        raise RuntimeError("a bug in the ledger")  # reaches the client as an internal error

    async def body() -> None:
        async with _serving([broken]) as (_, handles):
            client = ChannelLedgerClient(handles)
            if where == "in the client":

                async def fails(payload: bytes) -> bytes:
                    raise ValueError("not a passgate error")

                client._channels[0].call = fails  # type: ignore[method-assign]
            client.send({r1.key: SETTLE})
            done, failed = await _delivered(client, 1)
            assert done == {} and failed == [r1.key]
            client.close()
        assert _states(led) == [("r1", HELD)]  # nothing applied: the outbox keeps it

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))


# -- the shard's batch path awaits the hold on its loop -------------------------------------------


class GatedLedger(LocalLedgerClient):
    """The ledger grants at once, but its answer arrives only when the test opens the gate."""

    def __init__(self, ledgers: list[Ledger]) -> None:
        super().__init__(ledgers)
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()

    async def hold_async(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        answers = self.hold(owner, asks)
        self.asked.set()
        await self.gate.wait()
        return answers


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShardService]:
    plain = msgspec.structs.replace(_pass("P1"), product_id="plain")
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert([_pass("G1"), plain])
    writer.close()
    province: Province = _province()
    products = {**province.products, "plain": Product("plain", "Plain", {"lake": VenueRule()})}
    province = dataclasses.replace(province, products=products)
    monkeypatch.setattr(gc_pauses, "settle", gc_pauses.GcPauses)  # no gc.freeze in pytest
    switch = sys.getswitchinterval()
    svc = ShardService(0, 1, province, str(tmp_path), lambda: NOW_MS)
    try:
        yield svc
    finally:
        svc.pipeline.close()
        svc.shard.close()
        sys.setswitchinterval(switch)
    assert not svc.pipeline._thread.is_alive(), "the commit thread outlived the test"


def _send(service: ShardService, *reqs: Any) -> asyncio.Task[list[Decision]]:
    async def go() -> list[Decision]:
        return decode_decisions(await service.decide_batch(encode_batch(list(reqs))))

    return asyncio.create_task(go())


async def _held_back(
    service: ShardService, led: Ledger
) -> tuple[GatedLedger, asyncio.Task[list[Decision]]]:
    """A pay-later batch (c1 at hill) whose hold the ledger granted but whose answer waits for
    the returned client's gate."""
    client = GatedLedger([led])
    service.shard.credit.client = client
    task = _send(service, _req("c1", "hill"))
    await asyncio.wait_for(client.asked.wait(), WAIT_S)
    return client, task


def test_a_batch_waiting_for_its_hold_does_not_hold_up_the_next(service: ShardService) -> None:
    led = Ledger()

    async def body() -> None:
        client, on_credit = await _held_back(service, led)
        [plain] = await asyncio.wait_for(_send(service, _req("p1", "lake", "P1")), WAIT_S)
        assert plain.allowed and not plain.pay_later
        assert not on_credit.done() and _states(led) == [("c1", HELD)]
        stored = dict(service.shard.store.iter_requests())
        assert list(stored) == [request_key("lake", "lake-g1", "p1")]

        client.gate.set()
        [d] = await asyncio.wait_for(on_credit, WAIT_S)
        assert d.allowed and d.pay_later and d.charge_fen == 300_00
        rkey = request_key("hill", "hill-g1", "c1")
        assert dict(service.shard.store.iter_requests())[rkey].decision == d
        link = service.shard.store.credit_link(rkey)
        assert link is not None and link.amount_fen == 300_00
        assert _states(led) == [("c1", SETTLED)] and _owed(led) == 300_00

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))


@pytest.mark.parametrize("how", ["cancelled", "pipeline-refuses"])
def test_a_batch_never_decided_after_its_hold_releases_it(
    service: ShardService, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    led = Ledger()

    async def body() -> None:
        client, task = await _held_back(service, led)
        assert _states(led) == [("c1", HELD)] and _owed(led) == 300_00
        if how == "cancelled":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            monkeypatch.setattr(service.pipeline, "_broken", StorageError(BROKEN))
            client.gate.set()
            with pytest.raises(StorageError, match="memory could not be rebuilt"):
                await asyncio.wait_for(task, WAIT_S)
        assert _states(led) == [("c1", RELEASED)] and _owed(led) == 0
        assert list(service.shard.store.iter_requests()) == []

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))
