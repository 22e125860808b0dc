"""Stores that refuse to lie: a data directory whose shard or catalog store was emptied, truncated
or deleted after holding entries is refused at start with one line naming the file, and
run_cluster.py exits non-zero instead of serving from an empty store or hanging.

One real server fills a data directory and stops cleanly; every case then damages its own copy of
that directory and starts run_cluster.py on it directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from actors.routing import shard_of
from loadtest.server import ROOT, free_port, stop_group
from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, quota_pb2, quota_pb2_grpc
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE, card, import_passes
from tests.e2e.harness import running_server

pytestmark = pytest.mark.e2e
ARGS = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
VENUE = "t-lake"
ENTRIES = 12
# A refusal comes before Ray starts; this only bounds a hang, it is no speed claim.
REFUSAL_TIMEOUT_S = 120
MANIFEST = "passgate-manifest.json"


@dataclass
class Filled:
    data_dir: Path
    requests: list[gate_pb2.ValidateRequest]
    decisions: list[gate_pb2.Decision]
    entries_today: int


def _entry(i: int) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=f"stores-{i}",
        venue_id=VENUE,
        gate_id=f"{VENUE}-g{1 + i % 4:02d}",
        credential=common_pb2.Credential(kind=CARD, value=card("ANNUAL", i)),
        direction=gate_pb2.DIRECTION_ENTRY,
    )


def _venue_status(channel: grpc.Channel) -> quota_pb2.VenueStatus:
    stub = quota_pb2_grpc.QuotaStub(channel)
    return stub.GetVenueStatus(quota_pb2.VenueRef(venue_id=VENUE), timeout=30)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """A data directory holding imported passes and ENTRIES admitted entries, cleanly stopped."""
    data_dir = tmp_path_factory.mktemp("stores-data")
    with running_server(data_dir, *ARGS, config=TEST_PROVINCE) as srv, srv.channel() as channel:
        summary = import_passes(channel)
        assert summary.rejected == 0, list(summary.errors)
        gate = gate_pb2_grpc.GateStub(channel)
        requests = [_entry(i) for i in range(ENTRIES)]
        decisions = [gate.Validate(r, timeout=30) for r in requests]
        assert all(d.allowed for d in decisions), [d.reason for d in decisions]
        entries_today = _venue_status(channel).entries_today
    assert entries_today == ENTRIES
    return Filled(data_dir, requests, decisions, entries_today)


@pytest.fixture
def copy(filled: Filled, tmp_path: Path) -> Path:
    """The case's own copy of the filled data directory."""
    target = tmp_path / "data"
    shutil.copytree(filled.data_dir, target)
    return target


def _run_refused(data_dir: Path) -> tuple[int, list[str]]:
    """run_cluster.py on `data_dir` in its own process group: (exit code, its `error:` lines).
    Raises subprocess.TimeoutExpired if it neither serves nor exits in time."""
    cmd = [
        sys.executable, str(ROOT / "run_cluster.py"), "--data-dir", str(data_dir),
        "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", str(free_port()),
        "--config", str(TEST_PROVINCE), *ARGS,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(timeout=REFUSAL_TIMEOUT_S)
    finally:
        stop_group(proc)
    assert "ready on port" not in out
    return proc.returncode, [line for line in err.splitlines() if line.startswith("error:")]


def _shard_file(data_dir: Path) -> Path:
    """The data.mdb of the shard that owns VENUE, the one holding the entries."""
    return data_dir / "shards" / f"shard-{shard_of(VENUE, 2)}" / "data.mdb"


def _truncate_shard(data_dir: Path) -> Path:
    path = _shard_file(data_dir)
    os.truncate(path, 0)
    return path


def _halve_catalog(data_dir: Path) -> Path:
    path = data_dir / "catalog" / "data.mdb"
    os.truncate(path, path.stat().st_size // 2)
    return path


def _delete_shard_dir(data_dir: Path) -> Path:
    path = _shard_file(data_dir)
    shutil.rmtree(path.parent)
    return path


CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("shard truncated to zero", _truncate_shard, "is empty but the data directory recorded"),
    ("catalog truncated to half", _halve_catalog, "is damaged (truncated: "),
    ("shard directory deleted", _delete_shard_dir, "is missing but the data directory recorded"),
]


@pytest.mark.parametrize(("damage", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damaged_store_is_refused(copy: Path, damage: Callable[[Path], Path], problem: str) -> None:
    path = damage(copy)
    code, errors = _run_refused(copy)
    assert code == 3
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: store check: {path} {problem}")
    assert errors[0].endswith("restore it from backup or start with a fresh --data-dir")


def test_clean_stop_recorded_every_store(filled: Filled) -> None:
    stores = json.loads((filled.data_dir / MANIFEST).read_text())["stores"]
    assert sorted(stores) == ["catalog", "ledger/ledger-0", "shards/shard-0", "shards/shard-1"]
    assert {entry["recorded_at"] for entry in stores.values()} == {"stop"}


def test_untouched_copy_restarts_with_its_entries(copy: Path, filled: Filled) -> None:
    with running_server(copy, *ARGS, config=TEST_PROVINCE) as srv, srv.channel() as channel:
        assert _venue_status(channel).entries_today == filled.entries_today
        gate = gate_pb2_grpc.GateStub(channel)
        for request, first in zip(filled.requests[:3], filled.decisions, strict=False):
            again = gate.Validate(request, timeout=30)
            assert (again.allowed, again.pass_id, again.decided_at_ms) == (
                first.allowed,
                first.pass_id,
                first.decided_at_ms,
            )
