"""actors/frozen_clock.py: a frozen clock that tests move by rewriting one file."""

from __future__ import annotations

import pickle
from pathlib import Path

from actors.frozen_clock import FrozenClock, advance_path, write_advance

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
