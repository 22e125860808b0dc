"""CommitPipeline: a shard's writes decided on its event loop, committed in order by one thread.

A call (a batch, an annul, a reservation, a quota change, a pause) is *staged* on the event loop:
`VenueShard.staged` decides it against memory that already includes every earlier staged call and
moves memory on, holding its writes back. The pipeline hands those writes to ONE commit thread,
which runs each transaction whole (begin, puts, LMDB's own durable commit: data sync, then meta
sync), strictly in the order staged. Meanwhile the loop stages the next call; py-lmdb releases
the GIL around LMDB work, so the two overlap. Calls that queued up while a commit ran are
committed together in the next transaction (group commit: consecutive calls, in order, each
whole; at most `MAX_GROUP`), so a slow sync is paid once for all of them. A call is answered only
after its own commit returned; a call that writes nothing (a retry answered from its record, a
dry run, a refusal) is answered after the last commit staged before it, since it may have read
what that one wrote.

A commit that fails (full disk, I/O error) fails its first call with its StorageError (a full
disk stays StorageFull, so the ingress answers RESOURCE_EXHAUSTED as without the pipeline). Every
call staged after that one assumed it and is failed with ShardUnavailable (retry with the same
request_id); the commit thread skips their writes. Then, once the commit thread is idle, memory
is rebuilt from LMDB (`VenueShard.reload`) before any further call is staged, and only then are
the failures answered, so that nothing read afterwards still shows the lost writes. If even the
rebuild fails, the pipeline refuses every call and reports it through `on_fatal` (the Ray wrapper
then exits so that Ray restarts the shard).

The commit thread owns LMDB write transactions (begun and committed in it); the event loop only
reads LMDB (committed state) and never holds a write transaction of the shard's store.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from actors.errors import PassgateError, ShardUnavailable, StorageError
from actors.shard.store import BatchWrites

log = logging.getLogger("passgate.pipeline")

MAX_GROUP = 16  # calls per transaction at most
# How long the loop waits at most for the commit thread's puts (`_let_puts_run`).
HANDOVER_TIMEOUT_S = 0.05
RETRY = "an earlier write on this shard failed to commit; retry with the same request_id"
BROKEN = "shard storage failed and memory could not be rebuilt; the shard restarts"

_T = TypeVar("_T")
# The commit thread's word for a job of a failed epoch: its writes were never tried.
_SKIPPED = ShardUnavailable(RETRY)


class Stager(Protocol):
    """What the pipeline needs of a shard (`VenueShard`)."""

    def staged(self, step: Callable[[], _T], held: list[BatchWrites]) -> _T: ...

    def commit_writes(
        self, group: list[BatchWrites], written: Callable[[], None] | None = None
    ) -> None: ...

    def reload(self) -> None: ...


class _Job:
    """One staged call's writes, or (no `done`) a barrier behind every job queued before it."""

    __slots__ = ("done", "epoch", "loop", "writes")

    def __init__(
        self,
        epoch: int,
        writes: list[BatchWrites],
        done: asyncio.Future[None] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.epoch = epoch
        self.writes = writes
        self.done = done
        self.loop = loop


def _retrieve(fut: asyncio.Future[None]) -> None:
    # A failed job whose caller went away must not be logged as "never retrieved".
    if not fut.cancelled():
        fut.exception()


class CommitPipeline:
    def __init__(
        self,
        shard: Stager,
        *,
        commit: Callable[[list[BatchWrites], Callable[[], None]], None] | None = None,
        on_fatal: Callable[[StorageError], None] | None = None,
    ) -> None:
        self._shard = shard
        self._commit = commit or shard.commit_writes
        self.inline_commits = 0  # calls committed on the loop (`_commit_inline`)
        self._on_fatal = on_fatal
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Jobs of an epoch <= `_dead` are skipped by the commit thread; a failure kills its epoch
        # and the rebuild after it starts the next one.
        self._epoch = 0
        self._dead = -1
        self._tail: asyncio.Future[None] | None = None
        self._rebuilding: asyncio.Future[None] | None = None
        self._held_errors: list[tuple[asyncio.Future[None], PassgateError]] = []
        self._broken: StorageError | None = None
        self.in_flight = 0  # jobs staged and not yet answered
        self.commits = 0
        self.staged_behind = 0  # calls staged while an earlier commit was still running
        self.failures = 0
        self.rebuilds = 0
        self._idle = True  # the commit thread waits for work
        # Clear while the commit thread puts (it needs the GIL then), set otherwise.
        self._quiet = threading.Event()
        self._quiet.set()
        self._thread = threading.Thread(target=self._commit_loop, name="shard-commit", daemon=True)
        self._thread.start()

    # -- the event loop's side ------------------------------------------------------------------

    async def run(self, step: Callable[[], _T], alone: bool = False) -> _T:
        """Stages `step` (decides it and moves memory on) and returns its result once its writes,
        and every write staged before them, are committed. `alone`: the caller knows of no other
        call waiting to be staged, so with nothing in flight either, the writes are committed on
        the loop (`_commit_inline`)."""
        while self._rebuilding is not None:
            await asyncio.shield(self._rebuilding)
        if self._broken is not None:
            raise self._broken
        held: list[BatchWrites] = []
        self._let_puts_run()
        try:
            result = self._shard.staged(step, held)
        except BaseException:
            if held:
                self._poison()  # memory moved on for writes that will never be committed
                _never_durable(held)
                _drop_callbacks(held)
            raise
        if held:
            if alone and self._quiet_now():
                await self._settled(self._commit_inline(held), own=True)
            else:
                await self._settled(self._enqueue(held), own=True)
        elif self._tail is not None:
            await self._settled(self._tail, own=False)
        return result

    def _quiet_now(self) -> bool:
        """Nothing is being committed or waits to be: the commit thread waits for work."""
        return self._idle and self.in_flight == 0 and self._queue.empty()

    def _commit_inline(self, held: list[BatchWrites]) -> asyncio.Future[None]:
        """Commits on the loop (py-lmdb releases the GIL during LMDB's work). With no other call
        in flight or waiting, there is nothing to decide during the sync, and the two thread
        hand-offs would only add their wake-ups to the answer (on a busy 2-core machine, several
        milliseconds). A failure takes the same road as one in the commit thread: the call fails,
        memory is rebuilt from LMDB before anything else is staged."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(_retrieve)
        job = _Job(self._epoch, held, done, loop)
        self.in_flight += 1
        self.inline_commits += 1
        [(_, outcome)] = self._commit_group([job])
        self._tail = done
        self._answer(job, done, outcome)
        return done

    def _enqueue(self, held: list[BatchWrites]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(_retrieve)
        if self.in_flight:
            self.staged_behind += 1
        self.in_flight += 1
        if self._idle:
            self._quiet.clear()  # the commit thread starts on this job's puts at once
        self._queue.put(_Job(self._epoch, held, done, loop))
        self._tail = done
        self._let_puts_run()
        return done

    def _let_puts_run(self) -> None:
        """Blocks the loop (the GIL released) while the commit thread puts.

        py-lmdb releases the GIL around every put; were the loop deciding meanwhile (pure
        Python, holding the GIL), the commit thread would wait up to the interpreter's switch
        interval (5 ms) to get it back after each put. So the loop waits out the puts and
        decides while the commit syncs, which needs no GIL."""
        if not self._quiet.is_set():
            self._quiet.wait(HANDOVER_TIMEOUT_S)

    @staticmethod
    async def _settled(done: asyncio.Future[None], *, own: bool) -> None:
        # Shielded: a caller that goes away must not cancel a commit others wait for.
        try:
            await asyncio.shield(done)
        except PassgateError as exc:
            if own:
                raise
            raise ShardUnavailable(RETRY) from exc

    def _finished(self, results: list[tuple[_Job, BaseException | None]]) -> None:
        """On the loop, in commit order."""
        for job, outcome in results:
            if job.done is None:
                self._rebuild()
            else:
                self._answer(job, job.done, outcome)

    def _answer(self, job: _Job, done: asyncio.Future[None], outcome: BaseException | None) -> None:
        try:
            self._settle(job, done, outcome)
        finally:
            _drop_callbacks(job.writes)

    def _settle(self, job: _Job, done: asyncio.Future[None], outcome: BaseException | None) -> None:
        self.in_flight -= 1
        if outcome is None:
            self.commits += 1
            for writes in job.writes:
                for then in writes.on_durable:
                    then()
            if not done.done():
                done.set_result(None)
            return
        _never_durable(job.writes)
        if outcome is _SKIPPED:
            self._held_errors.append((done, ShardUnavailable(RETRY)))
            return
        self.failures += 1
        err = outcome if isinstance(outcome, StorageError) else StorageError(_failed(outcome))
        log.error("shard commit failed (%s); rebuilding memory from LMDB", outcome)
        self._held_errors.append((done, err))
        self._start_rebuild(job.loop)

    def _poison(self) -> None:
        self._dead = self._epoch
        self._start_rebuild(asyncio.get_running_loop())

    def _start_rebuild(self, loop: asyncio.AbstractEventLoop) -> None:
        """No call is staged until every job queued so far has been skipped or committed (the
        barrier job), then memory is rebuilt from what LMDB holds."""
        if self._rebuilding is not None:
            return
        self._rebuilding = loop.create_future()
        self._queue.put(_Job(self._epoch, [], None, loop))

    def _rebuild(self) -> None:
        try:
            self._shard.reload()
            self.rebuilds += 1
        except Exception as exc:
            log.error("shard memory rebuild failed: %r", exc)
            self._broken = StorageError(BROKEN)
            if self._on_fatal is not None:
                self._on_fatal(self._broken)
        self._epoch += 1
        self._tail = None
        held, self._held_errors = self._held_errors, []
        for fut, err in held:
            if not fut.done():
                fut.set_exception(err)
        rebuilding, self._rebuilding = self._rebuilding, None
        if rebuilding is not None:
            rebuilding.set_result(None)

    # -- the commit thread ----------------------------------------------------------------------

    def _commit_loop(self) -> None:
        carry: list[_Job | None] = []  # what ended the last group, taken first
        while True:
            if carry:
                job = carry.pop()
            else:
                self._quiet.set()  # nothing to put until a job comes
                self._idle = True
                job = self._queue.get()
                self._idle = False
            if job is None:
                return
            group, carry = self._group(job)
            results = self._commit_group(group)
            try:
                job.loop.call_soon_threadsafe(self._finished, results)
            except RuntimeError:
                return  # the loop is closed: nobody waits for an answer any more

    def _group(self, first: _Job) -> tuple[list[_Job], list[_Job | None]]:
        """`first` and the calls queued right behind it in its epoch, and what ended the group (a
        barrier, a later epoch or the stop) if anything did."""
        group = [first]
        if first.done is None:
            return group, []
        while len(group) < MAX_GROUP:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return group, []
            if nxt is None or nxt.done is None or nxt.epoch != first.epoch:
                return group, [nxt]
            group.append(nxt)
        return group, []

    def _commit_group(self, group: list[_Job]) -> list[tuple[_Job, BaseException | None]]:
        first = group[0]
        if first.done is None:
            return [(first, None)]
        if first.epoch <= self._dead:
            return [(job, _SKIPPED) for job in group]
        self._quiet.clear()
        try:
            self._commit([w for job in group for w in job.writes], self._quiet.set)
        except Exception as exc:
            self._dead = first.epoch
            failed: list[tuple[_Job, BaseException | None]] = [(first, exc)]
            return failed + [(job, _SKIPPED) for job in group[1:]]
        finally:
            self._quiet.set()
        return [(job, None) for job in group]

    # -- figures and shutdown -------------------------------------------------------------------

    def queued(self) -> int:
        """Jobs waiting for the commit thread (behind the one it is committing)."""
        return self._queue.qsize()

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def stats(self) -> dict[str, Any]:
        return {
            "pipeline_commits": self.commits,
            "pipeline_inline_commits": self.inline_commits,
            "pipeline_staged_behind": self.staged_behind,
            "pipeline_in_flight": self.in_flight,
            "pipeline_failures": self.failures,
            "pipeline_rebuilds": self.rebuilds,
        }

    def close(self, timeout_s: float = 10.0) -> None:
        """Stops the commit thread after the jobs already queued."""
        self._queue.put(None)
        self._thread.join(timeout_s)


def _drop_callbacks(held: list[BatchWrites]) -> None:
    """Once a job is settled its writes' callbacks have run or never will. They close over
    their writes (a reference cycle per batch, thousands of objects a second for the cyclic
    collector, measured as 10-26 ms pauses in the shard); dropping them lets reference counting
    free each batch at once."""
    for writes in held:
        writes.on_durable.clear()
        writes.on_failed.clear()


def _never_durable(held: list[BatchWrites]) -> None:
    """Writes that will never be committed: what depended on them lets go (credit holds)."""
    for writes in held:
        for then in writes.on_failed:
            then()


def _failed(exc: BaseException) -> str:
    return f"shard commit failed: {type(exc).__name__}"
