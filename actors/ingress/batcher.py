"""Per-shard micro-batching at the ingress: flush at `max_batch` items or after `max_delay_us`.

While a shard is busy the queue keeps filling, so batches grow with load by themselves. At most
`max_inflight` batches per shard are outstanding.

Overload is decided at admission: from the queue ahead of an item and a fitted model of the
shard's batch time (`ServiceModel`), an item that would not be decided before its deadline is
refused `Overloaded` at once, before it is queued. An item is refused only while it has not been
sent: once its batch leaves, the caller waits for the committed answer, so nothing told
RESOURCE_EXHAUSTED is ever committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from actors.codec import decode_decisions, encode_batch
from actors.errors import Overloaded, PassgateError, ShardUnavailable
from actors.ingress.service_model import ServiceModel
from core.records import Decision, Request

ShardCall = Callable[[bytes], Awaitable[bytes]]
# A sent batch's items wait this long for the shard's answer, then are told to retry (one bound
# per batch: a timer per item cost the ingress about 25 µs of CPU per request).
SENT_ANSWER_TIMEOUT_S = 30.0
BatchObserver = Callable[[int, int], None]


class _Item(NamedTuple):
    req: Request
    fut: asyncio.Future[Decision]
    deadline: float


class ShardBatcher:
    def __init__(
        self,
        shard_id: int,
        call: ShardCall,
        *,
        max_batch: int = 256,
        max_delay_us: int = 1000,
        max_inflight: int = 1,
        max_queue: int = 8192,
        observe: BatchObserver | None = None,
        answer_timeout_s: float = SENT_ANSWER_TIMEOUT_S,
    ) -> None:
        self.shard_id = shard_id
        self._call = call
        self.max_batch = max_batch
        self.max_delay_s = max_delay_us / 1e6
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self._observe = observe
        self.answer_timeout_s = answer_timeout_s
        self._queue: list[_Item] = []
        self._timer: asyncio.TimerHandle | None = None
        self.inflight = 0
        self.inflight_items = 0
        self.calls = 0
        self.model = ServiceModel()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def expected_wait_s(self) -> float:
        """How long an item queued now would wait for its decision."""
        wait = self.model.wait_s(len(self._queue), self.max_batch, self.inflight_items)
        return wait + (self.max_delay_s if not self._queue and not self.inflight else 0.0)

    def submit(self, req: Request, deadline: float) -> asyncio.Future[Decision]:
        """Queues one request; the future resolves to its decision. Raises Overloaded at once
        when the queue is full or the item would not be decided before `deadline`."""
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"shard {self.shard_id} queue full")
        if time.monotonic() + self.expected_wait_s() > deadline:
            raise Overloaded("would not be decided before the deadline")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Decision] = loop.create_future()
        self._queue.append(_Item(req, fut, deadline))
        if len(self._queue) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay_s, self._on_timer)
        return fut

    def send_now(self) -> None:
        """The caller queued all it had (a `ValidateBatch` call's items): with a batch slot free,
        what is queued goes now instead of waiting out the delay for company. With every slot
        taken it waits as before, for the batch in flight to return."""
        if self._queue and self.inflight < self.max_inflight:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        while self._queue and self.inflight < self.max_inflight:
            items = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            live = self._drop_late(items)
            if live:
                self.inflight += 1
                self.inflight_items += len(live)
                asyncio.get_running_loop().create_task(self._run(live))
        if self._queue and self._timer is None and self.inflight < self.max_inflight:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay_s, self._on_timer)

    def _drop_late(self, items: list[_Item]) -> list[_Item]:
        """Refuses, before sending, the items whose batch would finish after their deadline."""
        done_at = time.monotonic() + self.model.batch_s(len(items))
        live = []
        for item in items:
            if item.fut.done():
                continue
            if item.deadline < done_at:
                item.fut.set_exception(Overloaded("would not be decided before the deadline"))
            else:
                live.append(item)
        return live

    async def _run(self, items: list[_Item]) -> None:
        self.calls += 1
        t0 = time.perf_counter()
        try:
            call = self._call(encode_batch([item.req for item in items]))
            try:
                reply = await asyncio.wait_for(call, self.answer_timeout_s)
            except TimeoutError:
                raise ShardUnavailable("no answer from the shard") from None
            for item, decision in zip(items, decode_decisions(reply), strict=True):
                if not item.fut.done():
                    item.fut.set_result(decision)
            self.model.observe(len(items), time.perf_counter() - t0)
        except Exception as exc:
            err = exc if isinstance(exc, PassgateError) else ShardUnavailable("shard unavailable")
            for item in items:
                if not item.fut.done():
                    item.fut.set_exception(err)
        finally:
            self.inflight -= 1
            self.inflight_items -= len(items)
            if self._observe is not None:
                self._observe(len(items), int((time.perf_counter() - t0) * 1e6))
            if self._queue:
                # Whatever queued meanwhile has waited long enough: send it now.
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._flush()
