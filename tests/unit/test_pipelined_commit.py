"""The commit pipeline (`actors.shard.pipeline.CommitPipeline` over a real VenueShard and LMDB):
batch N+1 is decided against memory that includes batch N while N commits, every answer waits for
its own commit (and a write-free answer for the commit before it), a failed commit fails its batch
and every batch staged after it and memory is rebuilt from LMDB, capacity holds however far the
staging runs ahead, and a SIGKILL between two commits loses nothing that was told. No Ray.

Commits are gated by the test (each waits in the commit thread until the test opens its gate), so
the order is checked by events, never by timing.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from actors.catalog import CatalogWriter, catalog_path
from actors.errors import ShardUnavailable, StorageFull
from actors.shard.pipeline import CommitPipeline
from actors.shard.store import BatchWrites
from actors.shard.venue_shard import VenueShard
from core.models import CredentialKind, Direction, Reason
from core.records import Decision, Request
from tests.unit.test_shard import Clock, _pass, _province

WAIT_S = 10.0
GATES = 64


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert(_pass(i) for i in range(50))
    writer.close()
    return tmp_path


def _shard(data_dir: Path) -> VenueShard:
    return VenueShard(0, 1, _province(), str(data_dir), Clock())


def _scan(rid: str, venue: str, card: str, *, exit_: bool = False, dry: bool = False) -> Request:
    direction = Direction.EXIT if exit_ else Direction.ENTRY
    return Request(rid, venue, f"{venue}-g1", CredentialKind.CARD, card, direction, 0, dry)


class GatedCommit:
    """The pipeline's commit: in the commit thread, waits for the test to open its gate, then
    commits for real (or fails, for the `fail_on`-th commit). Logs the order of events."""

    def __init__(self, shard: VenueShard, fail_on: int = 0) -> None:
        self.shard = shard
        self.fail_on = fail_on
        self.events: list[str] = []
        self.groups: list[int] = []
        self.started = threading.Semaphore(0)
        self.gates = [threading.Event() for _ in range(GATES)]
        self.calls = 0

    def __call__(self, group: list[BatchWrites], written: Callable[[], None]) -> None:
        self.calls += 1
        n = self.calls
        self.groups.append(len(group))
        self.events.append(f"commit{n}-start")
        self.started.release()
        assert self.gates[n - 1].wait(WAIT_S)
        if n == self.fail_on:
            raise StorageFull("shard commit failed: storage full")
        self.shard.commit_writes(group, written)
        self.events.append(f"commit{n}-end")

    def open(self, *ns: int) -> None:
        for n in ns:
            self.gates[n - 1].set()

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()

    async def wait_started(self) -> None:
        got = await asyncio.to_thread(self.started.acquire, True, WAIT_S)
        assert got, "no commit started"


Body = Callable[[VenueShard, CommitPipeline, GatedCommit], Awaitable[None]]


def _run(data_dir: Path, body: Body, fail_on: int = 0) -> None:
    shard = _shard(data_dir)
    gated = GatedCommit(shard, fail_on)
    pipe = CommitPipeline(shard, commit=gated)
    try:
        asyncio.run(asyncio.wait_for(body(shard, pipe, gated), WAIT_S * 3))
    finally:
        gated.open_all()
        pipe.close()
        shard.close()


def _batch(
    pipe: CommitPipeline, shard: VenueShard, *items: Request, events: list[str] | None = None
) -> asyncio.Task[list[Decision]]:
    """Sends one batch through the pipeline, as ShardService.decide_batch does."""

    async def send() -> list[Decision]:
        out = await pipe.run(lambda: shard.decide_requests(list(items)))
        if events is not None:
            events.append(f"answer {items[0].request_id}")
        return out

    return asyncio.create_task(send())


async def _settle() -> None:
    """Lets every runnable task run until it blocks (bounded)."""
    for _ in range(50):
        await asyncio.sleep(0)


def _occupancy(shard: VenueShard, venue: str) -> int:
    return int(shard.counters.occupancy[shard.book.index[venue]])


def test_the_next_batch_is_decided_during_the_commit_and_answered_after_its_own(
    data_dir: Path,
) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        ev = gated.events
        # "small" holds 3 at a time: batch N fills it, and batch N+1 must see that.
        first = _batch(
            pipe, shard, *(_scan(f"a{i}", "small", f"C{i}") for i in range(3)), events=ev
        )
        await gated.wait_started()
        second = _batch(pipe, shard, _scan("b0", "small", "C3"), events=ev)
        await _settle()
        # N+1 was decided (staged) while N's commit is held open; nothing is answered or stored.
        assert pipe.staged_behind == 1
        assert _occupancy(shard, "small") == 3
        assert shard.stored_admits() == 0
        assert not first.done() and not second.done()
        gated.open(1)
        told_first = await first
        assert [d.allowed for d in told_first] == [True, True, True]
        await gated.wait_started()
        await _settle()
        assert not second.done(), "answered before its own commit"
        assert shard.stored_admits() == 3
        gated.open(2)
        (fourth,) = await second
        assert fourth.allowed is False and fourth.reason == Reason.VENUE_FULL
        assert ev.index("commit1-end") < ev.index("answer a0") < ev.index("answer b0")
        assert ev.index("commit2-end") < ev.index("answer b0")
        assert gated.groups == [1, 1]

    _run(data_dir, body)


def test_a_retry_and_a_dry_run_wait_for_the_commit_they_may_have_read(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        first = _batch(pipe, shard, _scan("r1", "lake", "C1"))
        await gated.wait_started()
        retry = _batch(pipe, shard, _scan("r1", "lake", "C1"))
        dry = _batch(pipe, shard, _scan("d1", "lake", "C1", dry=True))
        await _settle()
        # The retry is answered from r1's record and the dry run saw r1 inside: both read a
        # record that is not durable yet, so neither may leave before r1's commit.
        assert not retry.done() and not dry.done(), "answered from a record not yet committed"
        gated.open(1)
        ((told,), (again,), (probe,)) = await asyncio.gather(first, retry, dry)
        assert told.allowed and again == told
        assert probe.request_id == "d1"
        assert gated.calls == 1  # neither wrote anything of its own
        assert shard.stored_admits() == 1

    _run(data_dir, body)


def test_annul_and_quota_changes_go_through_the_same_order(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        first = _batch(pipe, shard, _scan("n1", "lake", "C1"))
        await gated.wait_started()
        annul = asyncio.create_task(
            pipe.run(lambda: shard.annul("n1", "lake", "lake-g1", CredentialKind.CARD, "C1"))
        )
        pause = asyncio.create_task(pipe.run(lambda: shard.set_paused("lake", True)))
        await _settle()
        assert not annul.done() and not pause.done()
        gated.open(1)
        await first
        await gated.wait_started()  # annul and pause: one group, one transaction
        await _settle()
        assert not annul.done() and not pause.done()
        gated.open(2)
        assert await annul == (True, "entry annulled")
        status = await pause
        assert status is not None and status["paused"] is True
        assert gated.groups == [1, 2]
        assert shard.stored_admits() == 0

    _run(data_dir, body)
    again = _shard(data_dir)
    try:
        assert again.book.paused("lake") and again.stored_admits() == 0
    finally:
        again.close()


def test_a_failed_commit_fails_its_batch_and_the_later_ones_then_memory_is_rebuilt(
    data_dir: Path,
) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        first = _batch(pipe, shard, _scan("f1", "small", "C1"))
        await gated.wait_started()
        second = _batch(pipe, shard, _scan("f2", "small", "C2"), _scan("f3", "small", "C3"))
        retry = _batch(pipe, shard, _scan("f1", "small", "C1"))
        await _settle()
        assert _occupancy(shard, "small") == 3  # memory ran ahead of the disk
        gated.open(1)  # this commit fails
        results = await asyncio.gather(first, second, retry, return_exceptions=True)
        # The batch whose commit failed keeps its error (a full disk: RESOURCE_EXHAUSTED at the
        # ingress); the batches decided on top of it are retryable.
        assert isinstance(results[0], StorageFull), results
        assert isinstance(results[1], ShardUnavailable), results
        assert isinstance(results[2], ShardUnavailable), results
        assert gated.calls == 1  # batch N+1 was never committed
        # Memory is rebuilt from LMDB before anything is answered: no trace of the three.
        assert pipe.rebuilds == 1
        assert _occupancy(shard, "small") == 0 and not shard.requests
        assert shard.stored_admits() == 0
        # The shard goes on: the gates retry with the same request_ids and are admitted once.
        gated.open_all()
        told = await _batch(pipe, shard, _scan("f1", "small", "C1"), _scan("f2", "small", "C2"))
        assert [d.allowed for d in told] == [True, True]
        assert await _batch(pipe, shard, _scan("f1", "small", "C1")) == told[:1]
        assert shard.stored_admits() == 2 and _occupancy(shard, "small") == 2

    _run(data_dir, body, fail_on=1)


def test_a_call_that_fails_after_staging_writes_rebuilds_memory(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        gated.open_all()

        def pause_then_fail() -> None:
            shard.set_paused("lake", True)
            raise RuntimeError("a bug after the write was staged")

        with pytest.raises(RuntimeError):
            await pipe.run(pause_then_fail)
        assert await pipe.run(lambda: shard.book.paused("lake")) is False
        assert pipe.rebuilds == 1 and gated.calls == 0

    _run(data_dir, body)


def test_capacity_is_never_oversold_however_far_staging_runs_ahead(data_dir: Path) -> None:
    # "small": 3 at a time, 10 a day. Each batch lets one visitor in and out again, so only the
    # daily capacity binds; all 20 batches are decided before the first commit ends.
    batches = 20

    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        tasks = [
            _batch(pipe, shard, _scan(f"in{i}", "small", f"C{i}"),
                   _scan(f"out{i}", "small", f"C{i}", exit_=True))
            for i in range(batches)
        ]  # fmt: skip
        await gated.wait_started()
        await _settle()
        assert pipe.staged_behind == batches - 1
        gated.open_all()
        told = [d for t in tasks for d in await t]
        admitted = sum(d.allowed for d in told if d.request_id.startswith("in"))
        assert admitted == 10
        assert shard.stored_admits() == admitted
        assert len(gated.groups) < batches  # the queued batches shared transactions

    _run(data_dir, body)
    again = _shard(data_dir)
    try:
        i = again.book.index["small"]
        assert int(again.counters.entries_today[i]) == 10
        assert int(again.counters.occupancy[i]) == 0
    finally:
        again.close()


# -- SIGKILL between two commits --------------------------------------------------------------

_PER_BATCH = 5


def _kill_batch(n: int) -> list[Request | str]:
    return [_scan(f"k{n}-{i}", "lake", f"C{n * _PER_BATCH + i}") for i in range(_PER_BATCH)]


def _child(data_dir: str, conn: Any) -> None:
    """Batch 0 is told; batch 1's commit never ends (held before LMDB's commit); batch 2 is
    decided on top of batch 1 and waits behind it. Then the parent kills this process."""
    shard = VenueShard(0, 1, _province(), data_dir, Clock())
    stuck = threading.Event()
    commits = [0]

    def commit(group: list[BatchWrites], written: Callable[[], None]) -> None:
        commits[0] += 1
        if commits[0] >= 2:
            stuck.wait()  # the kill lands here
        shard.commit_writes(group, written)

    async def main() -> None:
        pipe = CommitPipeline(shard, commit=commit)
        told = await pipe.run(lambda: shard.decide_requests(_kill_batch(0)))
        conn.send([(d.request_id, d.allowed) for d in told])
        pending = [asyncio.ensure_future(pipe.run(lambda: shard.decide_requests(_kill_batch(1))))]
        for _ in range(500):
            await asyncio.sleep(0.01)
            if commits[0] == 2:
                break
        pending.append(
            asyncio.ensure_future(pipe.run(lambda: shard.decide_requests(_kill_batch(2))))
        )
        for _ in range(500):
            await asyncio.sleep(0.01)
            if pipe.queued() == 1:
                break
        conn.send(("between commits", commits[0], pipe.queued()))
        await asyncio.wait(pending, timeout=WAIT_S * 3)  # killed long before

    asyncio.run(main())


def test_sigkill_between_two_commits_then_told_equals_stored(data_dir: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    parent, child_end = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(str(data_dir), child_end), daemon=True)
    proc.start()
    try:
        assert parent.poll(WAIT_S * 3), "the child shard did not answer batch 0"
        told = dict(parent.recv())
        assert parent.poll(WAIT_S), "the child did not reach the point between the commits"
        assert parent.recv() == ("between commits", 2, 1)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(WAIT_S)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(WAIT_S)
    assert sum(told.values()) == _PER_BATCH
    shard = _shard(data_dir)
    try:
        # Only the told batch is stored: batches 1 and 2 were decided but never committed.
        assert shard.stored_admits() == _PER_BATCH
        # The gates retry everything in doubt with the same request_ids; a retry of a told
        # request must return what it was told.
        for n in (0, 1, 2):
            for d in shard.decide_requests(_kill_batch(n)):
                if d.request_id in told:
                    assert d.allowed == told[d.request_id]
                told[d.request_id] = d.allowed
        assert sum(told.values()) == 3 * _PER_BATCH == shard.stored_admits()
    finally:
        shard.close()


def test_a_counters_snapshot_inside_a_group_is_tagged_with_the_log_before_it(
    data_dir: Path,
) -> None:
    # Batch B is staged a second later than batch A, so it carries a counters snapshot that
    # already counts A; both commit in one transaction. A restart replays the log after the
    # snapshot's tag: a wrong tag would count A twice (or lose it).
    clock = Clock()
    shard = VenueShard(0, 1, _province(), str(data_dir), clock)
    gated = GatedCommit(shard)
    pipe = CommitPipeline(shard, commit=gated)

    async def body() -> None:
        first = _batch(pipe, shard, _scan("s0", "lake", "C0"))
        await gated.wait_started()
        a = _batch(pipe, shard, _scan("s1", "lake", "C1"), _scan("s2", "lake", "C2"))
        await _settle()
        clock.ms += 2000
        b = _batch(pipe, shard, _scan("s3", "lake", "C3"))
        await _settle()
        gated.open_all()
        await asyncio.gather(first, a, b)

    try:
        asyncio.run(asyncio.wait_for(body(), WAIT_S * 3))
        assert gated.groups == [1, 2]
        assert shard.store.counters_snapshot() is not None
    finally:
        gated.open_all()
        pipe.close()
        shard.close()
    again = _shard(data_dir)
    try:
        i = again.book.index["lake"]
        assert int(again.counters.entries_today[i]) == 4 == again.stored_admits()
        assert int(again.counters.occupancy[i]) == 4
    finally:
        again.close()


# -- a call alone commits on the loop ---------------------------------------------------------


def _alone(pipe: CommitPipeline, shard: VenueShard, *items: Request) -> Awaitable[list[Decision]]:
    """One batch as ShardService.decide_batch sends it when no other batch is open."""
    return pipe.run(lambda: shard.decide_requests(list(items)), alone=True)


def test_a_call_alone_commits_on_the_loop_and_answers_after_it(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        gated.open_all()
        loop_thread = threading.get_ident()
        committed_on: list[int] = []
        real = pipe._commit

        def recording(group: list[BatchWrites], written: Callable[[], None]) -> None:
            committed_on.append(threading.get_ident())
            real(group, written)

        pipe._commit = recording
        told = await _alone(pipe, shard, _scan("a1", "small", "C1"))
        assert told[0].allowed
        # Answered after its commit, which ran on the loop's thread, not the commit thread.
        assert committed_on == [loop_thread] and pipe.inline_commits == 1
        assert shard.stored_admits() == 1
        told = await _alone(pipe, shard, _scan("a2", "small", "C2"))
        assert told[0].allowed and committed_on == [loop_thread] * 2
        assert shard.stored_admits() == 2 and _occupancy(shard, "small") == 2

    _run(data_dir, body)


def test_a_call_alone_waits_its_turn_behind_a_commit_in_flight(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        ev = gated.events
        first = _batch(pipe, shard, _scan("b1", "small", "C1"), events=ev)
        await gated.wait_started()

        async def second() -> list[Decision]:
            out = await _alone(pipe, shard, _scan("b2", "small", "C2"))
            ev.append("answer b2")
            return out

        task = asyncio.create_task(second())
        await _settle()
        # Staged behind the commit in flight, so it goes to the commit thread, in order.
        assert pipe.staged_behind == 1 and pipe.inline_commits == 0 and not task.done()
        gated.open(1, 2)
        assert [d.allowed for d in [*await first, *await task]] == [True, True]
        at = {e: i for i, e in enumerate(ev)}
        assert at["commit1-end"] < at["commit2-start"] and at["commit1-end"] < at["answer b1"]
        assert at["commit2-end"] < at["answer b2"] and at["answer b1"] < at["answer b2"]

    _run(data_dir, body)


def test_a_failed_inline_commit_fails_its_call_and_memory_is_rebuilt(data_dir: Path) -> None:
    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        gated.open_all()  # the first commit fails (fail_on=1), on the loop
        with pytest.raises(StorageFull):
            await _alone(pipe, shard, _scan("c1", "small", "C1"))
        assert gated.calls == 1 and pipe.inline_commits == 1
        # Rebuilt from LMDB before the failure was answered: no trace of the entry.
        assert pipe.rebuilds == 1 and pipe.failures == 1
        assert _occupancy(shard, "small") == 0 and not shard.requests
        told = await _alone(pipe, shard, _scan("c1", "small", "C1"))
        assert told[0].allowed and shard.stored_admits() == 1

    _run(data_dir, body, fail_on=1)


# -- what a batch leaves for the cyclic collector ---------------------------------------------


def test_a_settled_batch_leaves_no_reference_cycle_behind(data_dir: Path) -> None:
    """Each batch's writes carry callbacks that close over them; left in place, every batch
    was a reference cycle that only the collector could free (10-26 ms young collections in
    the shard under load). Batches committed on the loop, through the commit thread, and
    failed ones must all be freed by reference counting alone."""

    async def body(shard: VenueShard, pipe: CommitPipeline, gated: GatedCommit) -> None:
        gated.open_all()
        await _alone(pipe, shard, _scan("c1", "small", "C1"))
        await _batch(pipe, shard, _scan("c2", "small", "C2"))
        first, second = (
            _batch(pipe, shard, _scan("c3", "small", "C3")),
            _batch(pipe, shard, _scan("c4", "small", "C4")),
        )
        await asyncio.gather(first, second)
        gated.fail_on = gated.calls + 1
        with pytest.raises(StorageFull):
            await _batch(pipe, shard, _scan("c5", "small", "C5"))
        await _settle()

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _run(data_dir, body)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, BatchWrites)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
