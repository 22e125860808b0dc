"""The Ray shard's credit-ledger recovery at start (ShardService._ready): awaited on the event
loop before the first call, once, never blocking the loop; a failed recovery fails the calls for
a retry and exits the process so that Ray restarts the shard. No Ray: the ledger client is an
in-process one whose recovery the test gates."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import gc_pauses
from actors.catalog import CatalogWriter, catalog_path
from actors.codec import decode_decisions, encode_batch
from actors.errors import ShardUnavailable
from actors.ledger.client import LocalLedgerClient
from actors.ledger.ledger import Ledger
from actors.shard import service as service_module
from actors.shard.service import FATAL_EXIT_DELAY_S, RECOVERING, ShardService
from actors.shard.store import BatchWrites, ShardStore
from actors.shard.venue_shard import shard_dir
from core.credit import SETTLE, Owner
from core.keys import charge_key, request_key
from tests.unit.test_ledger import NOW_MS, _pass, _province, _req

WAIT_S = 5.0
LEFT_OVER = charge_key("G1", request_key("hill", "hill-g1", "x1"), b"\x00" * 12)


class GatedRecovery(LocalLedgerClient):
    """An in-process ledger whose recovery answers only once the test opens the gate (or
    fails, when told to)."""

    def __init__(self) -> None:
        super().__init__([Ledger()])
        self.gate = asyncio.Event()
        self.recoveries = 0
        self.replayed: dict[bytes, int] = {}
        self.fail = False

    def recover(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        raise AssertionError("the Ray shard must not recover blocking")

    async def recover_async(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        self.recoveries += 1
        self.replayed = dict(outcomes)
        await self.gate.wait()
        if self.fail:
            raise TimeoutError("no ledger answered")
        return 0


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ShardService, Any]]:
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert([_pass("G1")])
    writer.close()
    # What an earlier incarnation left to tell the ledger: a settle in the shard's outbox.
    store = ShardStore(shard_dir(tmp_path, 0))
    store.commit(BatchWrites(outbox={LEFT_OVER: SETTLE}))
    store.close()
    client = GatedRecovery()
    monkeypatch.setattr(service_module, "ChannelLedgerClient", lambda handles: client)
    monkeypatch.setattr(gc_pauses, "settle", gc_pauses.GcPauses)  # no gc.freeze in pytest
    switch = sys.getswitchinterval()
    svc = ShardService(0, 1, _province(), str(tmp_path), lambda: NOW_MS, ledgers=[object()])
    try:
        yield svc, client
    finally:
        svc.pipeline.close()
        svc.shard.close()
        sys.setswitchinterval(switch)


def _decide(svc: ShardService) -> asyncio.Task[Any]:
    async def go() -> Any:
        return decode_decisions(await svc.decide_batch(encode_batch([_req("c1", "hill")])))

    return asyncio.ensure_future(go())


def test_calls_wait_for_one_recovery_on_the_loop(started: tuple[ShardService, Any]) -> None:
    svc, client = started
    assert svc.shard.credit.recovered is False  # the constructor did not recover (nor block)

    async def body() -> None:
        batch, ping = _decide(svc), asyncio.ensure_future(svc.ping())
        for _ in range(20):  # the loop keeps turning while the recovery waits
            await asyncio.sleep(0.005)
        assert not batch.done() and not ping.done()
        assert client.recoveries == 1  # one recovery for every waiting call
        # Reads (the ingress's metrics poll) are served meanwhile, and send the ledger nothing:
        # the outbox goes to it with the recovery.
        await svc.stats()
        assert client.delivered() == ({}, [])
        assert list(svc.shard.store.iter_requests()) == []  # nothing decided before it
        client.gate.set()
        [decision] = await asyncio.wait_for(batch, WAIT_S)
        assert decision.allowed and decision.pay_later
        assert await asyncio.wait_for(ping, WAIT_S) is True
        assert svc.shard.credit.recovered and client.recoveries == 1
        assert client.replayed == {LEFT_OVER: SETTLE}

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))


def test_a_failed_recovery_fails_the_calls_and_exits_for_a_restart(
    started: tuple[ShardService, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, client = started
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)

    async def body() -> None:
        client.fail = True
        client.gate.set()
        with pytest.raises(ShardUnavailable, match=RECOVERING[:40]):
            await asyncio.wait_for(_decide(svc), WAIT_S)
        with pytest.raises(ShardUnavailable):
            await asyncio.wait_for(svc.ping(), WAIT_S)  # the same failed recovery
        assert client.recoveries == 1 and list(svc.shard.store.iter_requests()) == []
        await asyncio.sleep(FATAL_EXIT_DELAY_S + 0.2)
        assert exits == [70]

    asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))
