"""Per-shard micro-batching at the ingress: flush at `max_batch` items or after `max_delay_us`.

While a shard is busy the queue keeps filling, so batches grow with load by themselves. At most
`max_inflight` batches per shard are outstanding; past `max_queue` waiting items, or when an item's
deadline would pass before its batch leaves, the caller is told `Overloaded` and nothing changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.codec import packb, unpackb
from actors.errors import Overloaded, PassgateError, ShardUnavailable

ShardCall = Callable[[bytes], Awaitable[bytes]]
BatchObserver = Callable[[int, int], None]


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
    ) -> None:
        self.shard_id = shard_id
        self._call = call
        self.max_batch = max_batch
        self.max_delay_s = max_delay_us / 1e6
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self._observe = observe
        self._queue: list[tuple[list[Any], asyncio.Future[list[Any]], float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.inflight = 0
        self.calls = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, row: list[Any], deadline: float) -> asyncio.Future[list[Any]]:
        """Queues one request row; the future resolves to its decision row."""
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"shard {self.shard_id} queue full ({self.max_queue})")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((row, fut, deadline))
        if len(self._queue) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay_s, self._on_timer)
        return fut

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
                asyncio.get_running_loop().create_task(self._run(live))
        if self._queue and self._timer is None and self.inflight < self.max_inflight:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay_s, self._on_timer)

    @staticmethod
    def _drop_late(items: list[Any]) -> list[Any]:
        now = time.monotonic()
        live = []
        for item in items:
            fut = item[1]
            if fut.done():
                continue
            if item[2] <= now:
                fut.set_exception(Overloaded("deadline would pass before the shard answers"))
            else:
                live.append(item)
        return live

    async def _run(self, items: list[Any]) -> None:
        self.calls += 1
        t0 = time.perf_counter()
        try:
            reply = await self._call(packb([item[0] for item in items]))
            for (_, fut, _), decision in zip(items, unpackb(reply), strict=True):
                if not fut.done():
                    fut.set_result(decision)
        except Exception as exc:
            err = exc if isinstance(exc, PassgateError) else ShardUnavailable(str(exc)[:200])
            for _, fut, _ in items:
                if not fut.done():
                    fut.set_exception(err)
        finally:
            self.inflight -= 1
            if self._observe is not None:
                self._observe(len(items), int((time.perf_counter() - t0) * 1e6))
            if self._queue:
                # Whatever queued meanwhile has waited long enough: send it now.
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._flush()
