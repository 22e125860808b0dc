"""ops.gatecli's `pass` printout: a holder's reservations and pay-later debt are shown, not only
the usage."""

from __future__ import annotations

from ops.gatecli import show_pass
from proto.passgate.v1 import common_pb2, passes_pb2


def _view() -> passes_pb2.PassView:
    view = passes_pb2.PassView()
    record = getattr(view, "pass")
    record.pass_id, record.product_id = "DEMO-CREDIT-GOOD", "credit-pass"
    record.credentials.add(kind=common_pb2.CREDENTIAL_KIND_CARD, value="DEMO-CARD-CREDIT-GOOD")
    record.credit_tier = passes_pb2.CREDIT_TIER_GOOD
    return view


def test_the_debt_and_each_charge_are_shown() -> None:
    view = _view()
    view.credit.debt_fen, view.credit.limit_fen, view.credit.imported_debt_fen = (
        130_00,
        500_00,
        90_00,
    )
    view.credit.charges.add(
        venue_id="hz-leifeng", amount_fen=40_00, state=passes_pb2.CHARGE_STATE_SETTLED,
        request_id="r-1", at_ms=1_800_000_000_000,
    )  # fmt: skip
    text = show_pass(view)
    assert "pay-later debt 130.00 of 500.00 yuan (imported 90.00)" in text
    assert "hz-leifeng 40.00 yuan: settled (request r-1)" in text


def test_reservations_are_shown_with_their_state() -> None:
    view = _view()
    view.reservations.add(
        venue_id="hz-zj-museum", date="2026-10-01", slot_id="09-11", slot_start="09:00",
        slot_end="11:00", state=passes_pb2.RESERVATION_STATE_CONSUMED,
    )  # fmt: skip
    assert "reservation hz-zj-museum 2026-10-01 09:00-11:00 (09-11): consumed" in show_pass(view)


def test_a_pass_without_credit_says_nothing_of_debt() -> None:
    assert "debt" not in show_pass(_view())
