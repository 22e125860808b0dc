"""StatusFeed: one shard poll per venue per tick whatever the number of watchers, updates only on
change, the latest value for slow watchers, a watcher cap, and loops that stop with their last
watcher. A fake shard releases one poll per `tick()`, so no test depends on the clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.errors import NotFound, Overloaded
from actors.ingress import metrics
from actors.ingress.status_feed import FeedClosed, StatusFeed, Watcher

Row = dict[str, Any]


class FakeShard:
    """Answers `venue_status` only when the test lets a poll through with `tick()`."""

    def __init__(self, venues: tuple[str, ...] = ("v1",)) -> None:
        self.rows: dict[str, Row] = {
            v: {"venue_id": v, "occupancy": 0, "as_of_ms": 0} for v in venues
        }
        self.calls: dict[str, int] = {}
        self.fail: Exception | None = None
        self._gate = asyncio.Semaphore(0)

    async def venue_status(self, venue_id: str) -> Row | None:
        await self._gate.acquire()
        self.calls[venue_id] = self.calls.get(venue_id, 0) + 1
        if self.fail is not None:
            raise self.fail
        row = self.rows.get(venue_id)
        if row is None:
            return None
        row["as_of_ms"] += 500  # a fresh timestamp on every poll, as a shard gives
        return dict(row)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def tick(self, polls: int = 1) -> None:
        """Lets `polls` more polls through and waits until they have been answered."""
        target = self.total + polls
        for _ in range(polls):
            self._gate.release()
        await until(lambda: self.total >= target)
        await settle()


async def settle() -> None:
    """Lets every ready task run until the loop is idle again."""
    for _ in range(20):
        await asyncio.sleep(0)


async def until(check: Callable[[], bool], rounds: int = 1000) -> None:
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def run(test: Callable[[FakeShard, StatusFeed], Awaitable[None]], **feed_args: Any) -> None:
    async def go() -> None:
        shard = FakeShard(feed_args.pop("venues", ("v1",)))
        feed = StatusFeed(shard.venue_status, interval_s=0, **feed_args)
        try:
            await test(shard, feed)
        finally:
            feed.close()
            await settle()

    asyncio.run(go())


def collect(watcher: Watcher, into: list[Any]) -> asyncio.Task[None]:
    async def read() -> None:
        while True:
            into.append(await watcher.next())

    return asyncio.get_running_loop().create_task(read())


def test_two_hundred_watchers_cost_one_poll_per_tick() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe("v1") for _ in range(200)]
        got: list[list[Any]] = [[] for _ in watchers]
        readers = [collect(w, g) for w, g in zip(watchers, got, strict=True)]
        await shard.tick()
        for n in range(1, 6):
            shard.rows["v1"]["occupancy"] = n
            await shard.tick()
        assert shard.calls == {"v1": 6}
        assert feed.polls == 6
        assert all([row["occupancy"] for row in g] == [0, 1, 2, 3, 4, 5] for g in got)
        for r in readers:
            r.cancel()

    run(body)


def test_each_watched_venue_has_its_own_loop() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        a = [feed.subscribe("v1") for _ in range(3)]
        b = [feed.subscribe("v2") for _ in range(3)]
        assert feed.venues == 2
        await shard.tick(2)
        assert shard.calls == {"v1": 1, "v2": 1}
        assert {(await w.next())["venue_id"] for w in a} == {"v1"}
        assert {(await w.next())["venue_id"] for w in b} == {"v2"}

    run(body, venues=("v1", "v2"))


def test_a_late_watcher_gets_the_current_status_without_a_poll() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        first = feed.subscribe("v1")
        await shard.tick()
        assert (await first.next())["occupancy"] == 0
        shard.rows["v1"]["occupancy"] = 7
        await shard.tick()
        late = feed.subscribe("v1")
        assert (await asyncio.wait_for(late.next(), timeout=5))["occupancy"] == 7
        assert shard.total == 2

    run(body)


def test_only_changes_are_sent_and_as_of_is_not_a_change() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        got: list[Any] = []
        reader = collect(feed.subscribe("v1"), got)
        await shard.tick(4)  # as_of_ms moves on each, nothing else does
        assert [row["occupancy"] for row in got] == [0]
        shard.rows["v1"]["occupancy"] = 1
        await shard.tick(3)
        assert [row["occupancy"] for row in got] == [0, 1]
        reader.cancel()

    run(body)


def test_a_slow_watcher_skips_to_the_latest_and_holds_up_no_one() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        slow = feed.subscribe("v1")
        fast_got: list[Any] = []
        reader = collect(feed.subscribe("v1"), fast_got)
        await shard.tick()
        for n in (1, 2, 3):
            shard.rows["v1"]["occupancy"] = n
            await shard.tick()
        assert [row["occupancy"] for row in fast_got] == [0, 1, 2, 3]
        assert (await slow.next())["occupancy"] == 3
        pending = asyncio.get_running_loop().create_task(slow.next())
        await settle()
        assert not pending.done()  # nothing newer than what it took
        shard.rows["v1"]["occupancy"] = 4
        await shard.tick()
        assert (await asyncio.wait_for(pending, timeout=5))["occupancy"] == 4
        reader.cancel()

    run(body)


def test_the_loop_stops_with_its_last_watcher_and_restarts_with_a_new_one() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe("v1") for _ in range(3)]
        await shard.tick()
        for w in watchers:
            w.close()
            w.close()  # twice is harmless
        assert feed.venues == 0
        assert feed.watchers == 0
        shard._gate.release()  # a poll the stopped loop must not take
        await settle()
        assert shard.total == 1
        again = feed.subscribe("v1")
        await until(lambda: shard.total == 2)
        assert (await asyncio.wait_for(again.next(), timeout=5))["venue_id"] == "v1"

    run(body)


def test_past_the_cap_a_watcher_is_refused_until_one_leaves() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe(v) for v in ("v1", "v1", "v2")]
        with pytest.raises(Overloaded):
            feed.subscribe("v1")
        with pytest.raises(Overloaded):
            feed.subscribe("v3")
        watchers[0].close()
        feed.subscribe("v2")
        assert feed.watchers == 3

    run(body, max_watchers=3, venues=("v1", "v2"))


def test_an_unknown_venue_ends_its_watchers_with_not_found() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe("nowhere") for _ in range(2)]
        await shard.tick()
        for w in watchers:
            with pytest.raises(NotFound):
                await asyncio.wait_for(w.next(), timeout=5)
        assert (feed.venues, feed.watchers) == (0, 0)

    run(body)


def test_a_failed_poll_ends_the_venue_feed_with_its_error() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        w = feed.subscribe("v1")
        shard.fail = RuntimeError("shard restarting")
        await shard.tick()
        with pytest.raises(RuntimeError, match="shard restarting"):
            await asyncio.wait_for(w.next(), timeout=5)
        assert (feed.venues, feed.watchers) == (0, 0)
        shard.fail = None
        again = feed.subscribe("v1")
        await shard.tick()
        assert (await asyncio.wait_for(again.next(), timeout=5))["venue_id"] == "v1"

    run(body)


def test_close_ends_every_watch_and_refuses_new_ones() -> None:
    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe(v) for v in ("v1", "v2")]
        feed.close()
        for w in watchers:
            with pytest.raises(FeedClosed):
                await asyncio.wait_for(w.next(), timeout=5)
        with pytest.raises(FeedClosed):
            feed.subscribe("v1")
        assert (feed.venues, feed.watchers) == (0, 0)

    run(body, venues=("v1", "v2"))


def test_render_runs_once_per_change_not_per_watcher() -> None:
    rendered: list[int] = []

    def render(row: Row) -> int:
        rendered.append(row["occupancy"])
        return int(row["occupancy"])

    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe("v1") for _ in range(50)]
        await shard.tick()
        assert [await w.next() for w in watchers] == [0] * 50
        assert rendered == [0]

    run(body, render=render)


def test_a_large_fan_out_lets_other_tasks_run_between_chunks() -> None:
    turns = 0

    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.get_running_loop().create_task(count_turns())
        watchers = [feed.subscribe("v1") for _ in range(100)]
        seen_at: list[int] = []

        async def read(w: Watcher) -> None:
            await w.next()
            seen_at.append(turns)

        readers = [asyncio.get_running_loop().create_task(read(w)) for w in watchers]
        await shard.tick()
        await until(lambda: len(seen_at) == 100)
        # Ten chunks of ten: the other task ran between them, so the wake-ups span several turns.
        assert len(set(seen_at)) >= 10
        counter.cancel()
        for r in readers:
            r.cancel()

    run(body, fanout_chunk=10)


def _sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def test_polls_and_watchers_are_exported() -> None:
    polls_before = _sample("passgate_status_feed_polls_total")
    watchers_before = _sample("passgate_status_watchers")

    async def body(shard: FakeShard, feed: StatusFeed) -> None:
        watchers = [feed.subscribe("v1") for _ in range(10)]
        assert _sample("passgate_status_watchers") == watchers_before + 10
        await shard.tick(3)
        assert _sample("passgate_status_feed_polls_total") == polls_before + 3
        for w in watchers[:4]:
            w.close()
        assert _sample("passgate_status_watchers") == watchers_before + 6

    run(body)
    assert _sample("passgate_status_watchers") == watchers_before  # close() released the rest
