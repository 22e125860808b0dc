"""Which h2load the bench runs: the system's, else the copy `make bench` unpacked, with its own
libraries on the loader's path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.h2load_check import h2load_command


def _unpacked(root: Path) -> Path:
    binary = root / "usr" / "bin" / "h2load"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    lib = root / "usr" / "lib" / "x86_64-linux-gnu" / "libev.so.4"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    return lib.parent


def test_the_fetched_copy_runs_with_its_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/already/there")
    libs = _unpacked(tmp_path / "h2load")
    found = h2load_command(tmp_path / "h2load")
    assert found is not None
    binary, env = found
    assert binary == str(tmp_path / "h2load" / "usr" / "bin" / "h2load")
    assert env is not None
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [str(libs), "/already/there"]


def test_the_systems_h2load_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = tmp_path / "bin"
    on_path.mkdir()
    system = on_path / "h2load"
    system.write_text("#!/bin/sh\n")
    system.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    _unpacked(tmp_path / "h2load")
    assert h2load_command(tmp_path / "h2load") == (str(system), None)


def test_none_when_there_is_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert h2load_command(tmp_path / "h2load") is None
