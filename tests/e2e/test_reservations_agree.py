"""Reservations that agree over real gRPC (issue 10, finding 3): after an entry consumed a holder's
reservation, the gate, Reserve, CancelReservation and GetPass all follow the rule of
core/reservations.py (README, "Reservations").

Its own server with a frozen clock that the tests move (2026-10-01 10:00 Asia/Shanghai plus the
advance each test sets). t-museum requires a reservation and has no anti-passback; its slots are
am 09:00-11:00, pm1 11:00-13:00 and pm2 13:00-15:00, honoured from 15 minutes before to 30 after.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import grpc
import pytest

from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, passes_pb2, passes_pb2_grpc
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE, import_annual_passes
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e
R = common_pb2
P = passes_pb2
CALL_TIMEOUT_S = 20
VENUE = "t-museum"
DATE = "2026-10-01"
_ids = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("reservations-agree")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as ch:
            import_annual_passes(ch, "RA", 4)  # passes RA-i, cards CARD-RA-i
        yield srv


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def passes(channel: grpc.Channel) -> passes_pb2_grpc.PassesStub:
    return passes_pb2_grpc.PassesStub(channel)


def _scan(channel: grpc.Channel, pass_id: str, exit_: bool = False) -> gate_pb2.Decision:
    request = gate_pb2.ValidateRequest(
        request_id=f"ra-{next(_ids)}-{uuid.uuid4().hex[:8]}",
        venue_id=VENUE,
        gate_id=f"{VENUE}-g01",
        credential=common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}"),
        direction=gate_pb2.DIRECTION_EXIT if exit_ else gate_pb2.DIRECTION_ENTRY,
    )
    decision: gate_pb2.Decision = gate_pb2_grpc.GateStub(channel).Validate(
        request, timeout=CALL_TIMEOUT_S
    )
    return decision


def _reserve(passes: passes_pb2_grpc.PassesStub, pass_id: str, slot: str) -> P.Reservation:
    ref = P.ReserveRequest(pass_id=pass_id, venue_id=VENUE, date=DATE, slot_id=slot)
    answer: P.Reservation = passes.Reserve(ref, timeout=CALL_TIMEOUT_S)
    return answer


def _cancel(passes: passes_pb2_grpc.PassesStub, pass_id: str, slot: str) -> P.Reservation:
    ref = P.CancelReservationRequest(pass_id=pass_id, venue_id=VENUE, date=DATE, slot_id=slot)
    answer: P.Reservation = passes.CancelReservation(ref, timeout=CALL_TIMEOUT_S)
    return answer


def _held(view: P.PassView) -> list[tuple[str, str, str, int]]:
    return [(r.venue_id, r.date, r.slot_id, r.state) for r in view.reservations]


def _view(passes: passes_pb2_grpc.PassesStub, pass_id: str) -> list[tuple[str, str, str, int]]:
    return _held(passes.GetPass(P.PassRef(pass_id=pass_id), timeout=CALL_TIMEOUT_S))


def test_consumed_reservation_sequence_agrees(
    server: Server, channel: grpc.Channel, passes: passes_pb2_grpc.PassesStub
) -> None:
    server.advance_clock(0)  # 10:00, inside slot am
    booked = _reserve(passes, "RA-0", "am")
    assert booked.confirmed and booked.reason == "reserved", booked.reason
    assert _scan(channel, "RA-0").allowed  # the entry consumes the reservation
    assert _scan(channel, "RA-0", exit_=True).allowed

    # Reserve of the used slot says it was used and until when it works, not "already reserved".
    again = _reserve(passes, "RA-0", "am")
    assert again.reason == "already used by an entry: re-entry allowed until 11:30"
    assert again.confirmed and again.state == P.RESERVATION_STATE_CONSUMED
    # The gate agrees: the holder comes back in within the slot's window, no new booking.
    back = _scan(channel, "RA-0")
    assert back.allowed, back.message
    # A used reservation cannot be cancelled, and stays what it was.
    cancel = _cancel(passes, "RA-0", "am")
    assert not cancel.confirmed and cancel.state == P.RESERVATION_STATE_CONSUMED
    assert "cannot be cancelled" in cancel.reason
    assert _view(passes, "RA-0") == [(VENUE, DATE, "am", P.RESERVATION_STATE_CONSUMED)]

    # 11:30: am's window has closed. Everyone agrees a later slot needs a booking.
    server.advance_clock(90)
    late = _scan(channel, "RA-0")
    assert late.reason == R.REASON_RESERVATION_REQUIRED
    assert late.message == "reserve a slot: next free 11:00-13:00"
    over = _reserve(passes, "RA-0", "am")
    assert not over.confirmed and over.state == P.RESERVATION_STATE_CONSUMED
    assert "reserve a later slot" in over.reason
    pm1 = _reserve(passes, "RA-0", "pm1")
    assert pm1.confirmed and pm1.state == P.RESERVATION_STATE_RESERVED
    assert _scan(channel, "RA-0").allowed
    assert _view(passes, "RA-0") == [
        (VENUE, DATE, "am", P.RESERVATION_STATE_CONSUMED),
        (VENUE, DATE, "pm1", P.RESERVATION_STATE_CONSUMED),
    ]


def test_unused_reservation_is_cancelled_and_shown_as_reserved(
    server: Server, channel: grpc.Channel, passes: passes_pb2_grpc.PassesStub
) -> None:
    server.advance_clock(0)
    assert _reserve(passes, "RA-1", "pm1").state == P.RESERVATION_STATE_RESERVED
    assert _view(passes, "RA-1") == [(VENUE, DATE, "pm1", P.RESERVATION_STATE_RESERVED)]
    cancelled = _cancel(passes, "RA-1", "pm1")
    assert cancelled.confirmed and cancelled.state == P.RESERVATION_STATE_UNSPECIFIED
    assert _view(passes, "RA-1") == []
    assert _scan(channel, "RA-1").reason == R.REASON_RESERVATION_REQUIRED


def test_gate_names_the_later_slot_the_holder_already_booked(
    server: Server, channel: grpc.Channel, passes: passes_pb2_grpc.PassesStub
) -> None:
    server.advance_clock(0)  # 10:00; pm2 is honoured from 12:45
    assert _reserve(passes, "RA-2", "pm2").confirmed
    early = _scan(channel, "RA-2")
    assert (early.reason, early.message) == (
        R.REASON_RESERVATION_REQUIRED,
        "reserved 13:00-15:00: entry from 12:45",
    )
    # Reserve agrees that the pass holds it, unused.
    held = _reserve(passes, "RA-2", "pm2")
    assert (held.confirmed, held.reason, held.state) == (
        True,
        "already reserved",
        P.RESERVATION_STATE_RESERVED,
    )


def test_a_gate_sees_reservations_at_its_own_venue_only(server: Server) -> None:
    server.advance_clock(0)
    with server.channel() as admin:
        stub = passes_pb2_grpc.PassesStub(admin)
        assert _reserve(stub, "RA-3", "pm1").confirmed
        other = P.ReserveRequest(pass_id="RA-3", venue_id="t-resv-hard", date=DATE, slot_id="pm1")
        assert stub.Reserve(other, timeout=CALL_TIMEOUT_S).confirmed
        assert len(_view(stub, "RA-3")) == 2
    with server.channel(f"gate-{VENUE}") as ch:
        limited = _view(passes_pb2_grpc.PassesStub(ch), "RA-3")
    assert limited == [(VENUE, DATE, "pm1", P.RESERVATION_STATE_RESERVED)]
