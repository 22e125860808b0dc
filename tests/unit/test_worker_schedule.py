"""The load generator's schedule makes scans ahead only while none of its calls is out (or too
few are left): on two cores, its work while a call is out would delay the server's answer to
that very call and be charged to the server. It wakes as soon as the last call returns, so the
next send still finds its scans made.

The schedule runs on an event loop with a virtual clock: a sleep advances the clock at once, so a
busy machine cannot make a reply late and the test's counts are exact."""

from __future__ import annotations

import asyncio
import selectors
from pathlib import Path
from typing import Any

import numpy as np

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from core.models import PassStatus
from loadtest.client import ClientAuth
from loadtest.mix import MixShares, build_plan
from loadtest.population import PopulationIndex
from loadtest.profiles import flat
from loadtest.worker import Worker, WorkerSpec

REPLY_AFTER_S = 0.003
RATE = 50.0
DURATION_S = 0.4


class Stop:
    def is_set(self) -> bool:
        return False


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0


class VirtualSelector(selectors.DefaultSelector):
    """Never waits: a select with a timeout moves the virtual clock on by that timeout."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> Any:
        if timeout:
            self.clock.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = VirtualClock()
        super().__init__(VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now


class FakeSender:
    """Counts what the schedule asks of a sender; each call is answered REPLY_AFTER_S later."""

    lookahead = 4
    low_water = 2

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.ready = self.lookahead
        self.sends = 0
        self.dry_sends = 0  # sends that found no scan made
        self.made_while_out = 0  # scans made with a call out and enough left
        self.made_when_idle = 0

    def prepare(self) -> int:
        n = min(1, self.lookahead - self.ready)
        if n and self.w.outstanding:
            if self.ready >= self.low_water:
                self.made_while_out += n
        elif n:
            self.made_when_idle += n
        self.ready += n
        return n

    def send(self, intended: float) -> None:
        self.sends += 1
        if self.ready:
            self.ready -= 1
        else:
            self.dry_sends += 1
        self.w.on_sent(intended)
        assert self.w.loop is not None
        self.w.loop.call_later(REPLY_AFTER_S, self.w.on_error, "TEST_REPLY")


def _worker(creds: Path) -> Worker:
    province = load_province(DEFAULT_CONFIG_DIR)
    ids = tuple(sorted(province.products))
    n = 50
    index = PopulationIndex(
        ids,
        product=np.arange(n, dtype=np.int32) % len(ids),
        status=np.full(n, int(PassStatus.ACTIVE), dtype=np.int8),
        tier=np.full(n, 2, dtype=np.int8),
    )
    spec = WorkerSpec(
        worker_id=0,
        workers=1,
        target="127.0.0.1:1",
        auth=ClientAuth(creds, "admin", True),
        mode="unary",
        profile=flat(RATE, DURATION_S),
        seed=1,
        id_prefix="t",
        plan=build_plan(province, index, 7, MixShares()),
        arrivals="uniform",
    )
    return Worker(spec, out=None)


def test_scans_are_made_only_between_calls_and_never_run_out(
    tmp_path: Path, monkeypatch: Any
) -> None:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "admin.jwt").write_text("not-a-real-token")
    loop = VirtualTimeLoop()
    worker = _worker(tmp_path)
    worker.loop = loop
    monkeypatch.setattr(worker, "now", loop.time)
    sender = FakeSender(worker)

    async def main() -> None:
        await worker._schedule(sender, Stop())  # type: ignore[arg-type]
        await asyncio.sleep(REPLY_AFTER_S * 3)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    # The schedule ran its whole profile on the virtual clock: the last arrival is within one
    # interval of the end.
    assert loop.time() >= DURATION_S - 1 / RATE
    assert sender.sends >= RATE * DURATION_S * 0.9
    assert sender.made_while_out == 0
    # Every call's scan was made after the call before it returned, ahead of the next send.
    assert sender.made_when_idle >= sender.sends - 1
    assert sender.dry_sends == 0
