"""How the load test and the end-to-end tests start a passgate: the port comes from its ready line,
and a start that loses a port race is tried again. A stand-in command plays the server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtest import server


def _stand_in(*lines: str, exit_code: int = 0, serve: bool = False) -> list[str]:
    """A process that prints `lines`, then waits to be stopped (serve) or exits."""
    code = f"import sys, time\nfor l in {list(lines)!r}: print(l, flush=True)\n"
    code += "time.sleep(60)\n" if serve else f"sys.exit({exit_code})\n"
    return [sys.executable, "-c", code]


def test_the_port_is_read_from_the_ready_line(tmp_path: Path) -> None:
    cmd = _stand_in("starting", "passgate ready on port 43211", serve=True)
    started = server._start(cmd, 9, tmp_path, False, ready_timeout_s=30)
    try:
        assert started.port == 43211
        assert started.metrics_port == 9
        assert started.proc.poll() is None
    finally:
        server.stop_group(started.proc)
    assert started.proc.poll() is not None


def test_a_lost_port_is_told_apart_from_other_failures(tmp_path: Path) -> None:
    clash = _stand_in("Failed to bind: Address already in use", exit_code=1)
    with pytest.raises(server.PortTaken, match="Address already in use"):
        server._start(clash, 9, tmp_path, False, ready_timeout_s=30)
    broken = _stand_in("error: the catalog is damaged", exit_code=3)
    with pytest.raises(RuntimeError, match="catalog is damaged") as failure:
        server._start(broken, 9, tmp_path, False, ready_timeout_s=30)
    assert not isinstance(failure.value, server.PortTaken)


def test_a_start_that_loses_a_port_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = [
        _stand_in("Address already in use", exit_code=1),
        _stand_in("passgate ready on port 40001", serve=True),
    ]
    monkeypatch.setattr(server, "_command", lambda *_: commands.pop(0))
    with server.passgate_process(tmp_path, [], log=False, ready_timeout_s=30) as started:
        assert started.port == 40001
    assert commands == []
    assert started.proc.poll() is not None


def test_it_gives_up_after_its_attempts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def clash(*_: object) -> list[str]:
        calls.append(1)
        return _stand_in("Address already in use", exit_code=1)

    monkeypatch.setattr(server, "_command", clash)
    with (
        pytest.raises(server.PortTaken),
        server.passgate_process(tmp_path, [], log=False, ready_timeout_s=30),
    ):
        pass
    assert len(calls) == server.START_ATTEMPTS


def test_one_ingress_binds_port_zero_and_several_share_a_chosen_port(tmp_path: Path) -> None:
    def port_of(cmd: list[str]) -> int:
        return int(cmd[cmd.index("--port") + 1])

    alone = server._command(tmp_path, tmp_path, [], None, 9)
    assert port_of(alone) == 0
    assert alone[alone.index("--metrics-port") + 1] == "9"
    shared = server._command(tmp_path, tmp_path, ["--ingress-procs", "2"], None, 9)
    assert port_of(shared) > 0
