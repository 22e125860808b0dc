"""A service manager stops passgate with SIGTERM to its main process alone (systemd's
KillMode=mixed, ops/passgate.service): it drains, stops Ray and exits 0, and no process of its
group is left for the manager to kill."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from proto.passgate.v1 import gate_pb2_grpc
from tests.e2e.conftest import FROZEN, TEST_PROVINCE, card, import_passes
from tests.e2e.harness import running_server
from tests.e2e.test_gate import req

pytestmark = pytest.mark.e2e
STOP_S = 60


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_the_main_process_drains_and_leaves_nothing(tmp_path: Path) -> None:
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(tmp_path, *args, config=TEST_PROVINCE) as server:
        with server.channel() as channel:
            assert import_passes(channel).rejected == 0
            decision = gate_pb2_grpc.GateStub(channel).Validate(
                req("t-lake", card("ANNUAL", 3)), timeout=10
            )
        assert decision.allowed
        proc = server.started.proc
        os.kill(proc.pid, signal.SIGTERM)  # the main process only, as KillMode=mixed does
        assert proc.wait(timeout=STOP_S) == 0
        deadline = time.monotonic() + STOP_S
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "a process of passgate's group outlived its stop"
        time.sleep(0.5)  # the output pump reads the last lines
        assert any("passgate stopped" in line for line in server.started.output)
