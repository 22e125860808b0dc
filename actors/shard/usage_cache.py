"""The shard's usage in memory: every (pass, venue) usage record read or written since start, up to
a bound, so that a shard serving for months does not hold every pair it ever met.

LMDB holds every committed usage record; memory is a cache of it, except for the records of calls
staged in the commit pipeline and not yet durable, which memory alone holds (LMDB still has the
value before them). So a record leaves memory only when no staged write of it is outstanding: a
later read then finds its committed value in LMDB. Reads run inside one synchronous step of the
event loop and the pipeline settles commits between steps, so a step's read transaction, opened at
its start, sees every commit settled before it.

Records leave oldest-written first once the cache holds more than `limit`, USAGE_EVICT_STEP more
than needed at a time, so that a full cache trims now and then rather than at every batch.
"""

from __future__ import annotations

from collections import OrderedDict

from actors.shard.store import BatchWrites
from core.records import Usage

# About 250 bytes each in memory with the order kept: a quarter of a gigabyte per shard.
USAGE_CACHE_MAX = 1_000_000
USAGE_EVICT_STEP = 1024


class UsageCache(OrderedDict[bytes, Usage]):
    """usage key -> Usage; reads are plain dict reads, writes go through `remember`."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = USAGE_CACHE_MAX if limit is None else limit
        # usage key -> staged writes of it not yet durable.
        self._pending: dict[bytes, int] = {}

    def remember(self, usage: dict[bytes, Usage], staged: BatchWrites | None) -> None:
        """Takes one call's new usage. `staged`: the call's writes when the pipeline holds them for
        a later commit; their records stay in memory until that commit settles either way."""
        for key, value in usage.items():
            self[key] = value
            self.move_to_end(key)
        if staged is not None and usage:
            keys = tuple(usage)
            pending = self._pending
            for key in keys:
                pending[key] = pending.get(key, 0) + 1

            def settled() -> None:
                for key in keys:
                    left = pending[key] - 1
                    if left:
                        pending[key] = left
                    else:
                        del pending[key]

            staged.on_durable.append(settled)
            staged.on_failed.append(settled)
        self._trim()

    def pending(self) -> int:
        """Records with a staged write outstanding."""
        return len(self._pending)

    def _trim(self) -> None:
        over = len(self) - self.limit
        if over <= 0:
            return
        goal = over + USAGE_EVICT_STEP
        pending = self._pending
        drop: list[bytes] = []
        for key in self:  # oldest written first
            if key not in pending:
                drop.append(key)
                if len(drop) >= goal:
                    break
        for key in drop:
            del self[key]
