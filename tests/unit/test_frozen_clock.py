"""actors/frozen_clock.py: a frozen clock that tests move by rewriting one file, and the running
clock of load tests that starts at a chosen instant."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from actors.frozen_clock import FrozenClock, RunningClock, advance_path, write_advance

BASE = 1_800_000_000_000


def test_stands_still_without_the_file(tmp_path: Path) -> None:
    clock = FrozenClock(BASE, str(tmp_path))
    assert clock() == BASE
    assert clock() == BASE


def test_moves_when_the_file_is_rewritten(tmp_path: Path) -> None:
    clock = FrozenClock(BASE, str(tmp_path))
    write_advance(tmp_path, 90_000)
    assert clock() == BASE + 90_000
    write_advance(tmp_path, 600_000)
    assert clock() == BASE + 600_000
    write_advance(tmp_path, 0)
    assert clock() == BASE


def test_a_garbled_file_keeps_the_last_value(tmp_path: Path) -> None:
    clock = FrozenClock(BASE, str(tmp_path))
    write_advance(tmp_path, 5_000)
    assert clock() == BASE + 5_000
    advance_path(tmp_path).write_text("not a number")
    assert clock() == BASE + 5_000


def test_travels_to_another_process_by_pickle(tmp_path: Path) -> None:
    write_advance(tmp_path, 1_000)
    copy = pickle.loads(pickle.dumps(FrozenClock(BASE, str(tmp_path))))
    assert copy() == BASE + 1_000


class _Wall:
    """The wall clock as RunningClock reads it, moved by hand."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms * 1_000_000


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> _Wall:
    wall = _Wall(1_000)
    monkeypatch.setattr("actors.frozen_clock.time.time_ns", wall)
    return wall


def test_a_running_clock_starts_at_its_instant_and_keeps_the_wall_clock_pace(
    tmp_path: Path, wall: _Wall
) -> None:
    clock = RunningClock(BASE, str(tmp_path))
    assert clock() == BASE
    wall.ms += 2_500
    assert clock() == BASE + 2_500
    write_advance(tmp_path, 60_000)  # the advance file moves it on as well
    assert clock() == BASE + 62_500


def test_a_running_clock_keeps_its_start_in_another_process(tmp_path: Path, wall: _Wall) -> None:
    clock = RunningClock(BASE, str(tmp_path))
    wall.ms += 700  # the shard gets its copy a little later: it reads the same instant
    copy = pickle.loads(pickle.dumps(clock))
    assert copy() == clock() == BASE + 700
