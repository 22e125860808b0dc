"""The shards' clock under `--frozen-clock` (tests and load tests): it stands still at the given
instant, plus however many milliseconds are written in `<data-dir>/clock-advance-ms`.

An end-to-end test advances time by rewriting that file (`tests/e2e/harness.Server.advance_clock`),
so a stay, a travel time or an opening hour can pass without sleeping. Without `--frozen-clock` the
shards read the wall clock and the file means nothing.
"""

from __future__ import annotations

import os
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


def write_advance(data_dir: Path, advance_ms: int) -> None:
    """Moves the frozen clock to base + `advance_ms` (atomically: write, then rename)."""
    tmp = advance_path(data_dir).with_suffix(".tmp")
    tmp.write_text(str(int(advance_ms)))
    os.replace(tmp, advance_path(data_dir))
