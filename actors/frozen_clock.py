"""The shards' clock under `--frozen-clock` (tests): it stands still at the given instant, plus
however many milliseconds are written in `<data-dir>/clock-advance-ms`. Under `--clock-start`
(load tests and benchmarks) it starts at the given instant and runs at the wall clock's pace, as
in service: a clock that stands still makes every decision of a run share one millisecond, so
records keyed by time (request records, sighting expiry stamps) land on random pages instead of
the end of their table, and the per-second work (counter snapshots, request expiry) never runs.

An end-to-end test advances time by rewriting that file (`tests/e2e/harness.Server.advance_clock`),
so a stay, a travel time or an opening hour can pass without sleeping. Without `--frozen-clock` the
shards read the wall clock and the file means nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ADVANCE_FILE = "clock-advance-ms"


def advance_path(data_dir: Path) -> Path:
    return data_dir / ADVANCE_FILE


class FrozenClock:
    """Picklable (it travels to the shard actors); re-reads the file only when it changed."""

    def __init__(self, base_ms: int, data_dir: str) -> None:
        self.base_ms = base_ms
        self.path = str(advance_path(Path(data_dir)))
        self._stamp: tuple[int, int, int] | None = None
        self._advance_ms = 0

    def __call__(self) -> int:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self.base_ms + self._advance_ms
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._advance_ms = int(Path(self.path).read_text().strip() or 0)
            except ValueError:
                pass  # half-written by the test: keep the last value, read again next time
            else:
                self._stamp = stamp
        return self.base_ms + self._advance_ms


class RunningClock(FrozenClock):
    """Starts at `base_ms` at `origin_ms` on the wall clock (default: now, where it is made, so
    every process it is sent to shares the same start) and runs at the wall clock's pace; the
    advance file moves it on as it moves the frozen clock."""

    def __init__(self, base_ms: int, data_dir: str, origin_ms: int | None = None) -> None:
        super().__init__(base_ms, data_dir)
        self.origin_ms = origin_ms if origin_ms is not None else _wall_ms()

    def __call__(self) -> int:
        return super().__call__() + _wall_ms() - self.origin_ms


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def write_advance(data_dir: Path, advance_ms: int) -> None:
    """Moves the frozen clock to base + `advance_ms` (atomically: write, then rename)."""
    tmp = advance_path(data_dir).with_suffix(".tmp")
    tmp.write_text(str(int(advance_ms)))
    os.replace(tmp, advance_path(data_dir))
