"""ShardBatcher: flush by size or timer, bounded queue, late items dropped, errors per batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from actors.batcher import ShardBatcher
from actors.codec import packb, unpackb
from actors.errors import Overloaded, ShardUnavailable


class FakeShard:
    """Echoes each row's request_id as its decision; counts calls and batch sizes."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self, payload: bytes) -> bytes:
        rows = unpackb(payload)
        self.sizes.append(len(rows))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("worker died")
        return packb([[row[0], True] for row in rows])


def _far() -> float:
    return time.monotonic() + 10


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_share_few_calls() -> None:
    shard = FakeShard(delay_s=0.002)

    async def go() -> list[Any]:
        b = ShardBatcher(0, shard, max_batch=64, max_delay_us=500)
        futs = [b.submit([f"r{i}"], _far()) for i in range(1000)]
        return await asyncio.gather(*futs)

    results = _run(go())
    assert [r[0] for r in results] == [f"r{i}" for i in range(1000)]
    assert sum(shard.sizes) == 1000
    assert len(shard.sizes) <= 1000 // 64 + 2


def test_timer_flushes_a_partial_batch() -> None:
    shard = FakeShard()

    async def go() -> Any:
        b = ShardBatcher(0, shard, max_batch=256, max_delay_us=1000)
        return await asyncio.wait_for(b.submit(["only"], _far()), 1.0)

    assert _run(go())[0] == "only"
    assert shard.sizes == [1]


def test_full_queue_is_refused() -> None:
    shard = FakeShard(delay_s=0.05)

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=4, max_delay_us=100000, max_inflight=1, max_queue=3)
        b.submit(["a"], _far())
        b.submit(["b"], _far())
        b.submit(["c"], _far())
        with pytest.raises(Overloaded):
            b.submit(["d"], _far())

    _run(go())


def test_item_past_its_deadline_never_reaches_the_shard() -> None:
    shard = FakeShard()

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=8, max_delay_us=1000)
        late = b.submit(["late"], time.monotonic() - 1)
        ok = b.submit(["ok"], _far())
        assert (await ok)[0] == "ok"
        with pytest.raises(Overloaded):
            await late

    _run(go())
    assert shard.sizes == [1]


def test_shard_failure_fails_the_batch_items() -> None:
    shard = FakeShard(fail=True)

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=2, max_delay_us=100)
        futs = [b.submit([str(i)], _far()) for i in range(2)]
        for f in futs:
            with pytest.raises(ShardUnavailable):
                await f

    _run(go())


def test_inflight_is_bounded() -> None:
    shard = FakeShard(delay_s=0.01)
    seen: list[int] = []

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=10, max_delay_us=100, max_inflight=2)
        futs = [b.submit([str(i)], _far()) for i in range(100)]
        while not all(f.done() for f in futs):
            seen.append(b.inflight)
            await asyncio.sleep(0.001)

    _run(go())
    assert max(seen) <= 2
    assert sum(shard.sizes) == 100
