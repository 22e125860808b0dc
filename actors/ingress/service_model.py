"""How long a shard takes to decide a batch of n items: duration ~ overhead + n * per_item.

Fitted online (exponentially weighted least squares over recent calls) from what the batcher
observes, so the ingress can tell at admission whether an item would be decided before its
deadline. Pure arithmetic: durations are passed in, nothing reads a clock.
"""

from __future__ import annotations

DECAY = 0.95
# Until calls are observed, assume a shard call costs this much (a Ray round trip plus a commit).
PRIOR_OVERHEAD_S = 0.003
PRIOR_PER_ITEM_S = 0.00005
_MIN_PER_ITEM_S = 1e-6
# A shard that truly needs more than this per item is broken, not busy: an outlier commit on a
# quiet shard (batches of one or two) must not inflate the slope and refuse good requests.
_MAX_PER_ITEM_S = 0.002
# Batch sizes must vary this much (variance, in items^2) before a slope is fitted at all.
_MIN_SIZE_VARIANCE = 4.0


class ServiceModel:
    __slots__ = ("_s1", "_sd", "_sn", "_snd", "_snn", "overhead_s", "per_item_s")

    def __init__(self) -> None:
        self._s1 = self._sn = self._sd = self._snn = self._snd = 0.0
        self.overhead_s = PRIOR_OVERHEAD_S
        self.per_item_s = PRIOR_PER_ITEM_S

    def observe(self, n: int, duration_s: float) -> None:
        if n <= 0 or duration_s < 0:
            return
        d = DECAY
        self._s1 = self._s1 * d + 1.0
        self._sn = self._sn * d + n
        self._sd = self._sd * d + duration_s
        self._snn = self._snn * d + n * n
        self._snd = self._snd * d + n * duration_s
        mean_n = self._sn / self._s1
        mean_d = self._sd / self._s1
        var_n = self._snn / self._s1 - mean_n * mean_n
        if var_n >= _MIN_SIZE_VARIANCE:
            cov = self._snd / self._s1 - mean_n * mean_d
            self.per_item_s = min(_MAX_PER_ITEM_S, max(_MIN_PER_ITEM_S, cov / var_n))
        # Otherwise the sizes barely vary: keep the per-item cost, let the overhead absorb it.
        self.overhead_s = max(0.0, mean_d - self.per_item_s * mean_n)

    def batch_s(self, n: int) -> float:
        return self.overhead_s + self.per_item_s * n

    def wait_s(self, ahead: int, max_batch: int, inflight_items: int) -> float:
        """Time until an item with `ahead` items queued before it is decided: the batch in
        flight (`inflight_items`, 0 when none) finishes, then the queue drains in batches of
        `max_batch`."""
        mine = ahead + 1
        batches = -(-mine // max_batch)
        last = mine - (batches - 1) * max_batch
        full = self.batch_s(max_batch) * (batches - 1)
        busy = self.batch_s(inflight_items) if inflight_items else 0.0
        return busy + full + self.batch_s(last)
