"""Occupancy without exit readers: a venue whose visitors leave unseen fills up, and once a few
typical stays have passed on the server's clock it admits again, while GetVenueStatus and /metrics
say the occupancy is an estimate. A counted venue stays full as before.

t-trail (tests/e2e/province): instantaneous capacity 5, no exit readers, typical stay 30 minutes.
t-alert: instantaneous capacity 20, counted (entries minus exits). Both on the server's frozen
clock, which this module's own server moves.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from core.occupancy import TRUNCATE_STAYS, rounded, survival
from proto.passgate.v1 import common_pb2, gate_pb2_grpc, quota_pb2, quota_pb2_grpc
from tests.e2e.conftest import FROZEN, TEST_PROVINCE, import_annual_passes
from tests.e2e.harness import Server, running_server
from tests.e2e.test_gate import req, validate

pytestmark = pytest.mark.e2e
R = common_pb2
TRAIL, COUNTED = "t-trail", "t-alert"
TRAIL_CAPACITY, COUNTED_CAPACITY = 5, 20
TYPICAL_STAY = 30
PREFIX = "OCC"


@pytest.fixture(scope="module")
def occ_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("occupancy-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as ch:
            import_annual_passes(ch, PREFIX, 40)
        yield srv


@pytest.fixture(scope="module")
def channel(occ_server: Server) -> Iterator[grpc.Channel]:
    with occ_server.channel() as ch:
        yield ch


def _card(i: int) -> str:
    return f"CARD-{PREFIX}-{i}"


def _status(channel: grpc.Channel, venue: str) -> quota_pb2.VenueStatus:
    stub = quota_pb2_grpc.QuotaStub(channel)
    return stub.GetVenueStatus(quota_pb2.VenueRef(venue_id=venue), timeout=10)


def _enter(gate: gate_pb2_grpc.GateStub, venue: str, cards: range) -> list[int]:
    return [validate(gate, req(venue, _card(i))).reason for i in cards]


def _scrape(server: Server) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _gauge(text: str, name: str, venue: str) -> float | None:
    pattern = rf'^passgate_venue_{name}{{[^}}]*venue="{venue}"[^}}]*}} ([0-9.e+-]+)$'
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def test_a_venue_without_exit_readers_admits_again_after_visitors_have_left(
    occ_server: Server, channel: grpc.Channel
) -> None:
    gate = gate_pb2_grpc.GateStub(channel)
    ok, full = R.REASON_OK, R.REASON_VENUE_FULL
    # 10:00: five come in, nobody is seen leaving; the sixth waits.
    assert _enter(gate, TRAIL, range(TRAIL_CAPACITY + 1)) == [ok] * TRAIL_CAPACITY + [full]
    st = _status(channel, TRAIL)
    assert st.occupancy_estimated and st.typical_stay_minutes == TYPICAL_STAY
    assert (st.occupancy, st.alert) == (TRAIL_CAPACITY, R.ALERT_LEVEL_FULL)
    # One typical stay later about half have left, by the stay model.
    occ_server.advance_clock(TYPICAL_STAY)
    half = rounded(TRAIL_CAPACITY * survival(TYPICAL_STAY, TYPICAL_STAY))
    st = _status(channel, TRAIL)
    assert 0 < st.occupancy == half < TRAIL_CAPACITY
    assert st.entries_today == TRAIL_CAPACITY
    # A few typical stays later everyone has left: a full venue's worth is admitted again, and
    # the capacity still holds for the next one.
    occ_server.advance_clock(TRUNCATE_STAYS * TYPICAL_STAY)
    assert _status(channel, TRAIL).occupancy == 0
    again = range(10, 10 + TRAIL_CAPACITY + 1)
    assert _enter(gate, TRAIL, again) == [ok] * TRAIL_CAPACITY + [full]
    st = _status(channel, TRAIL)
    assert (st.occupancy, st.entries_today) == (TRAIL_CAPACITY, 2 * TRAIL_CAPACITY)
    assert st.occupancy_estimated


def test_a_counted_venue_stays_full_without_exits(
    occ_server: Server, channel: grpc.Channel
) -> None:
    gate = gate_pb2_grpc.GateStub(channel)
    cards = range(20, 20 + COUNTED_CAPACITY)
    assert _enter(gate, COUNTED, cards) == [R.REASON_OK] * COUNTED_CAPACITY
    occ_server.advance_clock(TRUNCATE_STAYS * TYPICAL_STAY + 60)
    st = _status(channel, COUNTED)
    assert not st.occupancy_estimated and st.typical_stay_minutes == 0
    assert (st.occupancy, st.alert) == (COUNTED_CAPACITY, R.ALERT_LEVEL_FULL)
    assert _enter(gate, COUNTED, range(39, 40)) == [R.REASON_VENUE_FULL]


def test_metrics_say_which_occupancy_is_estimated(occ_server: Server) -> None:
    # The ingress polls the shards' venue figures every couple of seconds: wait for one poll.
    deadline = time.monotonic() + 30
    flags: tuple[float | None, float | None] = (None, None)
    while time.monotonic() < deadline:
        text = _scrape(occ_server)
        flags = (
            _gauge(text, "occupancy_estimated", TRAIL),
            _gauge(text, "occupancy_estimated", COUNTED),
        )
        if None not in flags:
            break
        time.sleep(0.5)
    assert flags == (1.0, 0.0)
