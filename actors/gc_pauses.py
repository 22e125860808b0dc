"""The garbage collector of the long-lived processes (ingress, shard): settled after start-up, and
every pause it makes recorded, so a latency spike can be matched against it.

A full collection walks every tracked object. Ray, grpc, numba and the protobuf modules leave
tens of thousands of them behind at start-up, and walking them costs tens of milliseconds of
stalled event loop. Those objects live for the whole process, so `settle` moves them into the
permanent generation once (`gc.freeze`) and raises the young generation's threshold: the
collector then walks only what the traffic allocates, which is short-lived.
"""

from __future__ import annotations

import gc
import time
from typing import Any

# Young-generation threshold: requests allocate in bursts; collect less often, each time briefly.
GEN0_THRESHOLD = 20_000
# The ingress's: grpc.aio leaves a reference cycle of five objects per call (inside cygrpc's
# `_find_method_handler`), so every young collection there frees garbage, about 1 µs an object.
# At 20,000 a collection freed about 19,000 objects and stalled the loop for 10-20 ms, some 20
# times in 30 s at 1,000 calls/s; at 2,000 each stall is a tenth of that, for the same total.
INGRESS_GEN0_THRESHOLD = 2_000


class GcPauses:
    """Counts and times the collector's pauses per generation (a `gc.callbacks` hook)."""

    def __init__(self) -> None:
        self._start = 0.0
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = 0.0
        self._recent: list[tuple[int, float]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        pause = time.perf_counter() - self._start
        generation = int(info.get("generation", 0))
        self.count[generation] += 1
        self.total_s[generation] += pause
        self.max_s = max(self.max_s, pause)
        if len(self._recent) < 10_000:
            self._recent.append((generation, pause))

    def take(self) -> list[tuple[int, float]]:
        """(generation, seconds) of the pauses since the last call."""
        recent, self._recent = self._recent, []
        return recent


_PAUSES: GcPauses | None = None


def settle(young: int = GEN0_THRESHOLD) -> GcPauses:
    """After start-up: one full collection, freeze what is left, set the young threshold, and
    start recording pauses. Idempotent within a process."""
    global _PAUSES
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(young, gen1, gen2)
    if _PAUSES is None:
        _PAUSES = GcPauses()
        gc.callbacks.append(_PAUSES)
    return _PAUSES
