"""ShardBatcher: flush by size or timer, bounded queue, overload refused at admission (never
after sending), errors per batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from actors.codec import decode_requests_each, encode_batch
from actors.errors import Overloaded, ShardUnavailable
from actors.ingress.batcher import ShardBatcher
from core.models import Reason
from core.records import Decision, Request


def _req(rid: str) -> Request:
    return Request(rid, "v", "g", 1, "card")  # type: ignore[arg-type]


class FakeShard:
    """Echoes each row's request_id as its decision; counts calls and batch sizes."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self, payload: bytes) -> bytes:
        reqs = decode_requests_each(payload)
        self.sizes.append(len(reqs))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("worker died")
        return encode_batch([Decision(r.request_id, True, Reason.OK, "ok") for r in reqs])  # type: ignore[union-attr]


def _far() -> float:
    return time.monotonic() + 10


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_share_few_calls() -> None:
    shard = FakeShard(delay_s=0.002)

    async def go() -> list[Any]:
        b = ShardBatcher(0, shard, max_batch=64, max_delay_us=500)
        futs = [b.submit(_req(f"r{i}"), _far()) for i in range(1000)]
        return await asyncio.gather(*futs)

    results = _run(go())
    assert [r.request_id for r in results] == [f"r{i}" for i in range(1000)]
    assert sum(shard.sizes) == 1000
    assert len(shard.sizes) <= 1000 // 64 + 2


def test_timer_flushes_a_partial_batch() -> None:
    shard = FakeShard()

    async def go() -> Any:
        b = ShardBatcher(0, shard, max_batch=256, max_delay_us=1000)
        return await asyncio.wait_for(b.submit(_req("only"), _far()), 1.0)

    assert _run(go()).request_id == "only"
    assert shard.sizes == [1]


def test_full_queue_is_refused() -> None:
    shard = FakeShard(delay_s=0.05)

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=4, max_delay_us=100000, max_inflight=1, max_queue=3)
        b.submit(_req("a"), _far())
        b.submit(_req("b"), _far())
        b.submit(_req("c"), _far())
        with pytest.raises(Overloaded):
            b.submit(_req("d"), _far())

    _run(go())


def test_item_past_its_deadline_is_refused_at_admission() -> None:
    shard = FakeShard()

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=8, max_delay_us=1000)
        with pytest.raises(Overloaded):
            b.submit(_req("late"), time.monotonic() - 1)
        ok = b.submit(_req("ok"), _far())
        assert (await ok).request_id == "ok"

    _run(go())
    assert shard.sizes == [1]


def test_admission_refuses_what_the_queue_ahead_would_make_late() -> None:
    """With batches observed to take ~10 ms, the 50th item of a queue cannot meet a 30 ms
    deadline: it is refused at once, while the first ones are admitted."""
    shard = FakeShard(delay_s=0.0)

    async def go() -> tuple[int, int]:
        b = ShardBatcher(0, shard, max_batch=4, max_delay_us=100, max_inflight=1)
        for _ in range(20):
            b.model.observe(4, 0.010)
        admitted = refused = 0
        deadline = time.monotonic() + 0.030
        futs = []
        for i in range(50):
            try:
                futs.append(b.submit(_req(str(i)), deadline))
                admitted += 1
            except Overloaded:
                refused += 1
        for f in futs:
            with contextlib.suppress(Overloaded):
                await f
        return admitted, refused

    admitted, refused = _run(go())
    assert 0 < admitted < 50 and refused == 50 - admitted


def test_a_sent_item_is_answered_even_past_its_deadline() -> None:
    """Once its batch left, an item's decision may be committed: it is never turned into
    RESOURCE_EXHAUSTED, however late the shard answers."""
    shard = FakeShard(delay_s=0.05)

    async def go() -> str:
        b = ShardBatcher(0, shard, max_batch=1, max_delay_us=0)
        b.model.observe(1, 0.0001)
        fut = b.submit(_req("slow"), time.monotonic() + 0.01)
        return (await fut).request_id

    assert _run(go()) == "slow"


def test_shard_failure_fails_the_batch_items() -> None:
    shard = FakeShard(fail=True)

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=2, max_delay_us=100)
        futs = [b.submit(_req(str(i)), _far()) for i in range(2)]
        for f in futs:
            with pytest.raises(ShardUnavailable):
                await f

    _run(go())


def test_inflight_is_bounded() -> None:
    shard = FakeShard(delay_s=0.01)
    seen: list[int] = []

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=10, max_delay_us=100, max_inflight=2)
        futs = [b.submit(_req(str(i)), _far()) for i in range(100)]
        while not all(f.done() for f in futs):
            seen.append(b.inflight)
            await asyncio.sleep(0.001)

    _run(go())
    assert max(seen) <= 2
    assert sum(shard.sizes) == 100


def test_a_batch_the_shard_never_answers_fails_with_retry_and_frees_its_slot() -> None:
    """One bound per sent batch: its items are told the shard did not answer (retry with the
    same request_id), and the next batch goes out."""
    calls: list[int] = []

    async def silent_then_answering(payload: bytes) -> bytes:
        calls.append(len(decode_requests_each(payload)))
        if len(calls) == 1:
            await asyncio.Event().wait()  # never answers
        return await FakeShard()(payload)

    async def go() -> tuple[list[Any], Decision]:
        b = ShardBatcher(0, silent_then_answering, max_delay_us=100, answer_timeout_s=0.05)
        first = [b.submit(_req(f"a{i}"), _far()) for i in range(3)]
        await asyncio.sleep(0.001)  # the first batch leaves
        later = b.submit(_req("b0"), _far())
        failed = await asyncio.gather(*first, return_exceptions=True)
        return failed, await later

    failed, later = _run(go())
    assert all(isinstance(e, ShardUnavailable) for e in failed)
    assert all("no answer from the shard" in str(e) for e in failed)
    assert later.request_id == "b0" and calls == [3, 1]


async def _turns(n: int) -> None:
    """Lets the loop run `n` turns, far less than any timer here."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_send_now_skips_the_delay_only_while_a_slot_is_free() -> None:
    shard = FakeShard(delay_s=0.05)

    async def go() -> None:
        b = ShardBatcher(0, shard, max_batch=64, max_delay_us=2_000_000)
        first = [b.submit(_req(f"a{i}"), _far()) for i in range(3)]
        b.send_now()  # the slot is free: sent at once, not after the (2 s) delay
        await _turns(20)
        assert shard.sizes == [3]
        second = [b.submit(_req(f"b{i}"), _far()) for i in range(2)]
        b.send_now()  # the slot is taken: these wait for the batch in flight
        await _turns(20)
        assert shard.sizes == [3]
        await asyncio.wait_for(asyncio.gather(*first, *second), 5)
        assert shard.sizes == [3, 2]

    _run(go())
