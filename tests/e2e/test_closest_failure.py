"""Closest-failure answers over real gRPC (issue 10, finding 2): when several checks fail, the gate
hears the one the visitor can act on.

Its own server with a frozen clock that the tests move (2026-10-01 10:00 Asia/Shanghai plus the
advance each test sets), so the session-wide server's clock is never touched.
- t-dawn opens at 08:00; product t-dawn-once allows one entry a period there.
- t-resv-hard is a reservation museum with hard anti-passback (30 minutes).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import grpc
import pytest

from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, passes_pb2, passes_pb2_grpc
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e
R = common_pb2
CALL_TIMEOUT_S = 20
NEXT_DAY_0600 = 20 * 60  # minutes after the frozen start (10:00) to 06:00 the next day
NEXT_DAY_0800 = 22 * 60
_ids = itertools.count()

# pass_id -> product; each pass has one card, CARD-<pass_id>.
PASSES = {"DAWN-0": "t-dawn-once", "DAWN-1": "t-dawn-once", "RH-0": "t-annual"}


def _record(pass_id: str, product: str) -> passes_pb2.PassRecord:
    return passes_pb2.PassRecord(
        pass_id=pass_id,
        product_id=product,
        credentials=[common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}")],
        valid_from="2026-01-01",
        valid_until="2027-12-31",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("closest-failure")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as ch:
            records = [_record(p, product) for p, product in PASSES.items()]
            summary = passes_pb2_grpc.PassesStub(ch).UpsertPasses(
                iter(records), timeout=CALL_TIMEOUT_S
            )
            assert summary.upserted == len(records), list(summary.errors)
        yield srv


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


def _scan(channel: grpc.Channel, venue: str, pass_id: str) -> gate_pb2.Decision:
    request = gate_pb2.ValidateRequest(
        request_id=f"cf-{next(_ids)}-{uuid.uuid4().hex[:8]}",
        venue_id=venue,
        gate_id=f"{venue}-g01",
        credential=common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}"),
    )
    decision: gate_pb2.Decision = gate_pb2_grpc.GateStub(channel).Validate(
        request, timeout=CALL_TIMEOUT_S
    )
    return decision


def test_holder_who_just_entered_a_reservation_museum_gets_anti_passback(
    server: Server, channel: grpc.Channel
) -> None:
    server.advance_clock(0)  # 10:00, slot am (09:00-11:00)
    booked = passes_pb2_grpc.PassesStub(channel).Reserve(
        passes_pb2.ReserveRequest(
            pass_id="RH-0", venue_id="t-resv-hard", date="2026-10-01", slot_id="am"
        ),
        timeout=CALL_TIMEOUT_S,
    )
    assert booked.confirmed, booked.reason
    entry = _scan(channel, "t-resv-hard", "RH-0")
    assert entry.allowed, entry.message
    again = _scan(channel, "t-resv-hard", "RH-0")
    assert (again.allowed, again.reason) == (False, R.REASON_ANTI_PASSBACK), again.message
    assert again.message == "re-entry from 10:30"


def test_no_entries_left_at_0600_is_told_so_not_when_it_opens(
    server: Server, channel: grpc.Channel
) -> None:
    server.advance_clock(0)  # 10:00: t-dawn is open; DAWN-0 uses its one entry
    first = _scan(channel, "t-dawn", "DAWN-0")
    assert first.allowed and first.remaining_entries == 0, first.message

    server.advance_clock(NEXT_DAY_0600)  # 06:00 the next day, before t-dawn opens at 08:00
    spent = _scan(channel, "t-dawn", "DAWN-0")
    assert (spent.allowed, spent.reason) == (False, R.REASON_ENTRY_LIMIT_REACHED), spent.message
    assert spent.message == "no entries left on this pass"
    assert spent.remaining_entries == 0
    # The venue is indeed closed at 06:00: a pass with its entry left is told when it opens.
    unused = _scan(channel, "t-dawn", "DAWN-1")
    assert (unused.reason, unused.message) == (R.REASON_VENUE_CLOSED, "opens at 08:00")

    server.advance_clock(NEXT_DAY_0800)  # and at 08:00 the answers are what 06:00 promised
    assert _scan(channel, "t-dawn", "DAWN-0").reason == R.REASON_ENTRY_LIMIT_REACHED
    assert _scan(channel, "t-dawn", "DAWN-1").allowed
