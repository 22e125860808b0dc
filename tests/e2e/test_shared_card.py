"""Shared cards against a real server: one pass admitted at two venues 40 km apart, on the two
shards of the server, ten minutes apart (the frozen clock moved between the scans).

The second entry is admitted and flagged for a product that flags (the default), and refused
with SHARED_CARD_SUSPECTED for a product that refuses; `GetPass` lists the flag and the
Prometheus counter counts it. The same two entries hours apart are not flagged. Its own server,
since the test moves the clock.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import datetime

import grpc
import pytest

from actors.routing import shard_of
from core.travel import distance_km
from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, passes_pb2, passes_pb2_grpc
from tests.e2e.conftest import FROZEN, TEST_PROVINCE
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e

FROZEN_MS = int(datetime.fromisoformat(FROZEN).timestamp() * 1000)
CARD = common_pb2.CREDENTIAL_KIND_CARD
# Two venues of the test province, 40 km apart (tests/e2e/province/venues.toml).
HILLS, COAST = "t-hills", "t-coast"
HILLS_AT, COAST_AT = (30.2410, 120.1010), (30.2410, 120.5160)
N_PASSES = 3
OK = common_pb2.REASON_OK
SUSPECTED = common_pb2.REASON_SHARED_CARD_SUSPECTED


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("shared-card-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as server:
        with server.channel() as ch:
            summary = passes_pb2_grpc.PassesStub(ch).UpsertPasses(_passes(), timeout=60)
        assert summary.upserted == 2 * N_PASSES, list(summary.errors)
        yield server


@pytest.fixture(scope="module")
def channel(srv: Server) -> Iterator[grpc.Channel]:
    with srv.channel() as ch:
        yield ch


def _passes() -> Iterator[passes_pb2.PassRecord]:
    for product, prefix in (("t-annual", "SHF"), ("t-strict", "SHR")):
        for i in range(N_PASSES):
            yield passes_pb2.PassRecord(
                pass_id=f"{prefix}-{i}",
                product_id=product,
                credentials=[common_pb2.Credential(kind=CARD, value=f"CARD-{prefix}-{i}")],
                valid_from="2026-01-01",
                valid_until="2027-12-31",
            )


def _scan(
    ch: grpc.Channel, request_id: str, venue: str, pass_id: str, dry_run: bool = False
) -> gate_pb2.Decision:
    req = gate_pb2.ValidateRequest(
        request_id=request_id,
        venue_id=venue,
        gate_id=f"{venue}-g01",
        credential=common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}"),
        dry_run=dry_run,
    )
    return gate_pb2_grpc.GateStub(ch).Validate(req, timeout=30)


def _view(ch: grpc.Channel, pass_id: str) -> passes_pb2.PassView:
    return passes_pb2_grpc.PassesStub(ch).GetPass(passes_pb2.PassRef(pass_id=pass_id), timeout=30)


def _flag_count(srv: Server, action: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    wanted = f'passgate_shared_card_flags_total{{action="{action}"}} '
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def _entries_at(view: passes_pb2.PassView, venue: str) -> int:
    return sum(u.entries for u in view.usage if u.venue_id == venue)


def test_the_two_venues_are_40_km_apart_on_different_shards() -> None:
    assert shard_of(HILLS, 2) != shard_of(COAST, 2)
    assert 39.5 < distance_km(HILLS_AT, COAST_AT) < 40.5


def test_far_venue_ten_minutes_later_is_admitted_and_flagged(
    srv: Server, channel: grpc.Channel
) -> None:
    flags_before = _flag_count(srv, "flag")
    srv.advance_clock(0)
    first = _scan(channel, "f-1", HILLS, "SHF-0")
    assert (first.allowed, first.reason, first.shared_card_suspected) == (True, OK, False)
    srv.advance_clock(10)
    # A dry run reports the flag and records nothing.
    probe = _scan(channel, "f-2-dry", COAST, "SHF-0", dry_run=True)
    assert (probe.allowed, probe.shared_card_suspected) == (True, True)
    assert not _view(channel, "SHF-0").shared_card_flags
    second = _scan(channel, "f-2", COAST, "SHF-0")
    assert (second.allowed, second.reason, second.shared_card_suspected) == (True, OK, True)
    view = _view(channel, "SHF-0")
    assert _entries_at(view, COAST) == 1
    assert len(view.shared_card_flags) == 1
    flag = view.shared_card_flags[0]
    assert (flag.venue_id, flag.other_venue_id, flag.refused) == (COAST, HILLS, False)
    assert (flag.other_at_ms, flag.at_ms) == (FROZEN_MS, FROZEN_MS + 10 * 60_000)
    assert 39_500 < flag.distance_m < 40_500
    assert _flag_count(srv, "flag") == flags_before + 2  # the dry run and the entry
    # A gate's limited view names no other venue: no flags.
    with srv.channel(f"gate-{COAST}") as gate_channel:
        limited = _view(gate_channel, "SHF-0")
    assert _entries_at(limited, COAST) == 1 and not limited.shared_card_flags


def test_a_product_that_refuses_refuses_with_the_reason(srv: Server, channel: grpc.Channel) -> None:
    refusals_before = _flag_count(srv, "refuse")
    srv.advance_clock(20)
    first = _scan(channel, "r-1", HILLS, "SHR-0")
    assert (first.allowed, first.reason) == (True, OK)
    srv.advance_clock(32)
    second = _scan(channel, "r-2", COAST, "SHR-0")
    assert (second.allowed, second.reason, second.shared_card_suspected) == (False, SUSPECTED, True)
    assert second.message == "card seen at Test venue t-hills 12 min ago, 40 km away"
    # A gate's retry gets the same refusal; the refusal admitted nobody.
    assert _scan(channel, "r-2", COAST, "SHR-0") == second
    view = _view(channel, "SHR-0")
    assert _entries_at(view, COAST) == 0
    [flag] = view.shared_card_flags
    assert (flag.venue_id, flag.other_venue_id, flag.refused) == (COAST, HILLS, True)
    assert _flag_count(srv, "refuse") == refusals_before + 2  # the refusal and its retry
    # The holder's own venue still admits them: nothing there looks shared.
    again = _scan(channel, "r-3", HILLS, "SHR-0")
    assert (again.allowed, again.shared_card_suspected) == (True, False)


def test_the_same_two_entries_hours_apart_are_not_flagged(
    srv: Server, channel: grpc.Channel
) -> None:
    srv.advance_clock(40)
    for pass_id, tag in (("SHF-1", "h-f"), ("SHR-1", "h-r")):
        first = _scan(channel, f"{tag}-1", HILLS, pass_id)
        assert (first.allowed, first.shared_card_suspected) == (True, False)
    srv.advance_clock(40 + 180)
    for pass_id, tag in (("SHF-1", "h-f"), ("SHR-1", "h-r")):
        second = _scan(channel, f"{tag}-2", COAST, pass_id)
        assert (second.allowed, second.reason, second.shared_card_suspected) == (True, OK, False)
        assert not _view(channel, pass_id).shared_card_flags
