"""actors/ingress/pool.py: an extra ingress process that exits is started again, after a pause
that doubles while it keeps exiting; stopping the pool stops its processes for good. The
processes here are small Python programs that say they are ready, as an ingress does."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import pytest

from actors.ingress import pool as pool_module
from actors.ingress.pool import IngressPool

READY = "print('ingress ready on port 1', flush=True)"


def _pool(monkeypatch: pytest.MonkeyPatch, program: str) -> IngressPool:
    monkeypatch.setattr(pool_module, "RESTART_MIN_S", 0.05)
    monkeypatch.setattr(pool_module, "WATCH_INTERVAL_S", 0.02)
    return IngressPool({1: [sys.executable, "-c", program]})


def _wait(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_process_that_keeps_exiting_is_started_again_after_longer_pauses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool(monkeypatch, f"{READY}; import sys; sys.exit(3)")
    try:
        pool.start()
        _wait(lambda: pool.restarts >= 3)
    finally:
        pool.stop()
    said = capsys.readouterr().out
    found = re.findall(r"exited \(code 3\); starting it again in ([\d.]+) s", said)
    pauses = [float(p) for p in found]
    assert len(pauses) >= 3
    assert pauses[:3] == [0.05, 0.1, 0.2]


def test_stopping_the_pool_stops_its_processes_and_starts_none_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool(monkeypatch, f"{READY}; import time; time.sleep(60)")
    pool.start()
    proc = pool.procs[1]
    assert proc.poll() is None
    pool.stop()
    assert proc.poll() is not None
    time.sleep(0.2)  # a watcher that had missed the stop would have restarted it by now
    assert pool.restarts == 0 and pool.procs[1] is proc
    assert "starting it again" not in capsys.readouterr().out


def test_a_process_that_never_says_ready_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(monkeypatch, "import sys; sys.exit(1)")
    with pytest.raises(Exception, match="ingress process 1 did not start"):
        pool.start()
    pool.stop()
