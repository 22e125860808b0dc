"""One real passgate for the end-to-end tests: the test province, a frozen clock, imported passes.

The clock is frozen at 2026-10-01 10:00 Asia/Shanghai (National Day: a peak day), so opening hours,
holder time windows and reservation slots give the same answers whenever the suite runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.passgate.v1 import common_pb2, passes_pb2, passes_pb2_grpc
from tests.e2e.harness import Server, running_server

TEST_PROVINCE = Path(__file__).resolve().parent / "province"
FROZEN = "2026-10-01T10:00:00+08:00"
VALID = ("2026-01-01", "2027-12-31")
CARD = common_pb2.CREDENTIAL_KIND_CARD

# pass_id prefix -> (product, status, tier, groups, valid_from, valid_until, debt_fen, count)
PASS_KINDS: dict[str, tuple[str, int, int, list[str], str, str, int, int]] = {
    "ANNUAL": ("t-annual", 1, 2, [], *VALID, 0, 400),
    "REVOKED": ("t-annual", 2, 2, [], *VALID, 0, 1),
    "BLOCKED": ("t-annual", 3, 2, [], *VALID, 0, 1),
    "FUTURE": ("t-annual", 1, 2, [], "2026-11-01", "2027-10-31", 0, 1),
    "OLD": ("t-annual", 1, 2, [], "2025-01-01", "2026-09-30", 0, 1),
    "ONCE": ("t-once", 1, 2, [], *VALID, 0, 2),
    "DAILY": ("t-daily", 1, 2, [], *VALID, 0, 2),
    "CITY": ("t-city", 1, 2, [], *VALID, 0, 2),
    "GOOD": ("t-credit", 1, 1, [], *VALID, 0, 3),
    "POOR": ("t-credit", 1, 3, [], *VALID, 0, 2),
    "DEBTOR": ("t-credit", 1, 1, [], *VALID, 99_00, 2),
    "TRUSTED": ("t-credit", 1, 3, ["trusted_person"], *VALID, 0, 2),
}


def card(kind: str, i: int = 0) -> str:
    return f"CARD-{kind}-{i}"


def pass_records() -> Iterator[passes_pb2.PassRecord]:
    for kind, (product, status, tier, groups, start, end, debt, count) in PASS_KINDS.items():
        for i in range(count):
            yield passes_pb2.PassRecord(
                pass_id=f"{kind}-{i}",
                product_id=product,
                credentials=[
                    common_pb2.Credential(kind=CARD, value=card(kind, i)),
                    common_pb2.Credential(
                        kind=common_pb2.CREDENTIAL_KIND_QR, value=f"QR-{kind}-{i}"
                    ),
                ],
                valid_from=start,
                valid_until=end,
                status=status,
                credit_tier=tier,
                groups=groups,
                outstanding_debt_fen=debt,
            )


def annual_pass(pass_id: str, card_value: str) -> passes_pb2.PassRecord:
    """A t-annual pass valid 2026-2027 with one card."""
    return passes_pb2.PassRecord(
        pass_id=pass_id,
        product_id="t-annual",
        credentials=[common_pb2.Credential(kind=CARD, value=card_value)],
        valid_from="2026-01-01",
        valid_until="2027-12-31",
    )


def import_annual_passes(channel: grpc.Channel, prefix: str, n: int) -> None:
    """Imports passes `<prefix>-i` with cards `CARD-<prefix>-i` (i < n); all must land."""
    records = (annual_pass(f"{prefix}-{i}", f"CARD-{prefix}-{i}") for i in range(n))
    summary = passes_pb2_grpc.PassesStub(channel).UpsertPasses(records, timeout=60)
    assert summary.upserted == n, list(summary.errors)


def import_passes(channel: grpc.Channel) -> passes_pb2.UpsertSummary:
    stub = passes_pb2_grpc.PassesStub(channel)
    return stub.UpsertPasses(pass_records(), timeout=60)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("passgate-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as channel:
            summary = import_passes(channel)
        assert summary.rejected == 0, list(summary.errors)
        yield srv


@pytest.fixture(scope="session")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch
