"""Capacity control over gRPC: exact instantaneous capacity under concurrent gates, exits, alert
levels, pause/resume, WatchVenueStatus, reservations under concurrent callers, quota validation,
and counters/quotas surviving a SIGKILL of the shard."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from actors.routing import shard_of
from proto.passgate.v1 import (
    common_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)
from tests.e2e.conftest import card
from tests.e2e.harness import Server
from tests.e2e.test_gate import req, validate

pytestmark = pytest.mark.e2e
R = common_pb2


@pytest.fixture(scope="module")
def gate(channel: grpc.Channel) -> gate_pb2_grpc.GateStub:
    return gate_pb2_grpc.GateStub(channel)


@pytest.fixture(scope="module")
def quota(channel: grpc.Channel) -> quota_pb2_grpc.QuotaStub:
    return quota_pb2_grpc.QuotaStub(channel)


def status(quota: quota_pb2_grpc.QuotaStub, venue: str) -> quota_pb2.VenueStatus:
    return quota.GetVenueStatus(quota_pb2.VenueRef(venue_id=venue), timeout=10)


def test_instant_capacity_50_under_20_concurrent_gates(
    server: Server, gate: gate_pb2_grpc.GateStub, quota: quota_pb2_grpc.QuotaStub
) -> None:
    def gate_client(g: int) -> list[bool]:
        with server.channel() as ch:
            stub = gate_pb2_grpc.GateStub(ch)
            return [
                stub.Validate(req("t-small", card("ANNUAL", 100 + g * 10 + k),
                                  gate=f"t-small-g{1 + g % 4:02d}"), timeout=10).allowed
                for k in range(10)
            ]  # fmt: skip

    with ThreadPoolExecutor(20) as pool:
        results = [a for part in pool.map(gate_client, range(20)) for a in part]
    assert sum(results) == 50
    st = status(quota, "t-small")
    assert (st.occupancy, st.alert) == (50, R.ALERT_LEVEL_FULL)
    full = validate(gate, req("t-small", card("ANNUAL", 399)))
    assert full.reason == R.REASON_VENUE_FULL
    # One exit lets exactly one more in.
    admitted = [i for i, ok in enumerate(results) if ok]
    first = admitted[0]
    exiting = card("ANNUAL", 100 + (first // 10) * 10 + first % 10)
    assert validate(gate, req("t-small", exiting, exit_=True)).allowed
    more = [validate(gate, req("t-small", card("ANNUAL", 390 + k))).allowed for k in range(3)]
    assert more == [True, False, False]


def test_alert_levels_change_at_the_thresholds(
    gate: gate_pb2_grpc.GateStub, quota: quota_pb2_grpc.QuotaStub
) -> None:
    # t-alert: instant capacity 20, thresholds 80/90/95 %.
    seen = []
    for k in range(20):
        validate(gate, req("t-alert", card("ANNUAL", 200 + k)))
        seen.append(status(quota, "t-alert").alert)
    assert seen[14] == R.ALERT_LEVEL_GREEN  # 15/20 = 75 %
    assert seen[15] == R.ALERT_LEVEL_YELLOW  # 16 = 80 %
    assert seen[17] == R.ALERT_LEVEL_ORANGE  # 18 = 90 %
    assert seen[18] == R.ALERT_LEVEL_RED  # 19 = 95 %
    assert seen[19] == R.ALERT_LEVEL_FULL
    d = validate(gate, req("t-alert", card("ANNUAL", 230)))
    assert (d.reason, d.venue_alert) == (R.REASON_VENUE_FULL, R.ALERT_LEVEL_FULL)


def test_pause_and_resume(gate: gate_pb2_grpc.GateStub, quota: quota_pb2_grpc.QuotaStub) -> None:
    ref = quota_pb2.VenueRef(venue_id="t-pause")
    assert quota.PauseEntry(ref, timeout=10).paused
    assert validate(gate, req("t-pause", card("ANNUAL", 240))).reason == R.REASON_VENUE_PAUSED
    assert not quota.ResumeEntry(ref, timeout=10).paused
    assert validate(gate, req("t-pause", card("ANNUAL", 240))).allowed


def test_watch_delivers_updates(gate: gate_pb2_grpc.GateStub, channel: grpc.Channel) -> None:
    stub = quota_pb2_grpc.QuotaStub(channel)
    call = stub.WatchVenueStatus(quota_pb2.VenueRef(venue_id="t-watch"), timeout=20)
    got: list[quota_pb2.VenueStatus] = []
    at: list[float] = []

    def read() -> None:
        for st in call:
            got.append(st)
            at.append(time.monotonic())
            if len(got) >= 2:
                break

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, "no first status"
    validate(gate, req("t-watch", card("ANNUAL", 250)))
    reader.join(timeout=10)
    call.cancel()
    assert len(got) >= 2
    assert got[1].occupancy == got[0].occupancy + 1
    assert at[1] - at[0] >= 0.4  # at most one update every 500 ms


def test_reserve_never_overbooks_under_50_concurrent_callers(server: Server) -> None:
    def reserve(i: int) -> bool:
        with server.channel() as ch:
            r = passes_pb2_grpc.PassesStub(ch).Reserve(
                passes_pb2.ReserveRequest(
                    pass_id=f"ANNUAL-{i}", venue_id="t-museum", date="2026-10-01", slot_id="pm1"
                ),
                timeout=10,
            )
            return r.confirmed

    with ThreadPoolExecutor(50) as pool:
        confirmed = sum(pool.map(reserve, range(260, 310)))
    assert confirmed == 10  # slot pm1 capacity


def test_reservation_entry_and_next_free_slot(
    gate: gate_pb2_grpc.GateStub, channel: grpc.Channel
) -> None:
    denied = validate(gate, req("t-museum", card("ANNUAL", 320)))
    assert denied.reason == R.REASON_RESERVATION_REQUIRED
    assert "11:00" in denied.message  # the next slot with room
    passes = passes_pb2_grpc.PassesStub(channel)
    res = passes.Reserve(
        passes_pb2.ReserveRequest(
            pass_id="ANNUAL-320", venue_id="t-museum", date="2026-10-01", slot_id="am"
        ),
        timeout=10,
    )
    assert res.confirmed
    assert validate(gate, req("t-museum", card("ANNUAL", 320))).allowed


INVALID_QUOTAS = [
    ("negative", {"daily_capacity": 100, "instant_capacity": -1}, "instant_capacity"),
    ("instant above daily", {"daily_capacity": 10, "instant_capacity": 20}, "instant_capacity"),
    ("slots over daily", {"daily_capacity": 15, "instant_capacity": 10}, "slot_capacities"),
]


@pytest.mark.parametrize(
    ("fields", "named"), [q[1:] for q in INVALID_QUOTAS], ids=[q[0] for q in INVALID_QUOTAS]
)
def test_invalid_quota_is_refused(
    quota: quota_pb2_grpc.QuotaStub, fields: dict[str, int], named: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        quota.SetVenueQuota(quota_pb2.VenueQuota(venue_id="t-museum", **fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (err.value.details() or "")


def test_counters_and_quota_survive_sigkill(
    server: Server, gate: gate_pb2_grpc.GateStub, quota: quota_pb2_grpc.QuotaStub
) -> None:
    q = quota_pb2.VenueQuota(venue_id="t-quota", daily_capacity=900, instant_capacity=7)
    assert quota.SetVenueQuota(q, timeout=10).instant_capacity == 7
    for k in range(5):
        assert validate(gate, req("t-quota", card("ANNUAL", 330 + k))).allowed
    before = status(quota, "t-quota")
    shard = shard_of("t-quota", 2)
    victim = server.shard_pid(shard)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    after = None
    while time.monotonic() < deadline:
        try:
            if server.shard_pid(shard) != victim:
                after = status(quota, "t-quota")
                break
        except (grpc.RpcError, OSError, ValueError):
            pass
        time.sleep(0.2)
    assert after is not None, "shard did not come back"
    keys = ("occupancy", "entries_today", "instant_capacity", "daily_capacity")
    assert [getattr(after, k) for k in keys] == [getattr(before, k) for k in keys]
    assert [getattr(after, k) for k in keys[:3]] == [5, 5, 7]
    more = [validate(gate, req("t-quota", card("ANNUAL", 340 + k))).allowed for k in range(3)]
    assert more == [True, True, False]
