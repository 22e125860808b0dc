"""core/population.py: pass i is the same record however it is generated, and the shares are
roughly those promised."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import date
from typing import Any

import pytest

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from core.models import CredentialKind, CreditTier, PassRecord, PassStatus, Province
from core.population import (
    TRUSTED_GROUP,
    credential_of,
    generate_passes,
    pass_at,
    pass_id_of,
)
from core.records import decoder, encode

TODAY = date(2026, 10, 1).toordinal()
SEED = 42
N = 20_000


@pytest.fixture(scope="module")
def province() -> Province:
    return load_province(DEFAULT_CONFIG_DIR)


@pytest.fixture(scope="module")
def passes(province: Province) -> list[PassRecord]:
    return list(generate_passes(province, 0, N, SEED, TODAY))


def _share(counter: Mapping[Any, int], key: object) -> float:
    return counter[key] / sum(counter.values())


def test_same_index_same_record_regardless_of_start(
    province: Province, passes: list[PassRecord]
) -> None:
    assert list(generate_passes(province, 1234, 100, SEED, TODAY)) == passes[1234:1334]
    assert pass_at(province, 777, SEED, TODAY) == passes[777]
    far = 9_999_999
    assert next(generate_passes(province, far, 1, SEED, TODAY)) == pass_at(
        province, far, SEED, TODAY
    )


def test_seed_changes_the_population(province: Province, passes: list[PassRecord]) -> None:
    other = list(generate_passes(province, 0, 200, SEED + 1, TODAY))
    assert other != passes[:200]
    assert [p.pass_id for p in other] == [p.pass_id for p in passes[:200]]


def test_records_survive_the_stored_encoding(passes: list[PassRecord]) -> None:
    decode = decoder(PassRecord).decode
    for record in passes[:50]:
        rebuilt = decode(encode(record))
        assert rebuilt == record
        assert hash(rebuilt) == hash(record)
        assert record.outstanding_debt_fen == 0


def test_ids_and_credentials_follow_the_index(passes: list[PassRecord]) -> None:
    for i in (0, 1, 4321, N - 1):
        record = passes[i]
        assert record.pass_id == pass_id_of(i) == f"P{i:010d}"
        assert record.credentials == (
            (CredentialKind.CARD, credential_of(i, CredentialKind.CARD)),
            (CredentialKind.QR, credential_of(i, CredentialKind.QR)),
        )
    assert credential_of(12, CredentialKind.CARD) == "C0000000012"
    assert credential_of(12, CredentialKind.QR) == "Q0000000012"


def test_product_shares(province: Province, passes: list[PassRecord]) -> None:
    products = Counter(p.product_id for p in passes)
    assert set(products) == set(province.products)
    assert _share(products, "resident-card") == pytest.approx(0.55, abs=0.02)
    assert _share(products, "credit-pass") == pytest.approx(0.10, abs=0.02)


def test_status_tier_and_group_shares(passes: list[PassRecord]) -> None:
    statuses = Counter(p.status for p in passes)
    assert _share(statuses, PassStatus.ACTIVE) == pytest.approx(0.97, abs=0.01)
    assert _share(statuses, PassStatus.REVOKED) == pytest.approx(0.02, abs=0.005)
    assert _share(statuses, PassStatus.BLOCKED) == pytest.approx(0.01, abs=0.005)
    tiers = Counter(p.credit_tier for p in passes)
    assert _share(tiers, CreditTier.GOOD) == pytest.approx(0.60, abs=0.02)
    assert _share(tiers, CreditTier.NORMAL) == pytest.approx(0.30, abs=0.02)
    assert _share(tiers, CreditTier.POOR) == pytest.approx(0.10, abs=0.02)
    trusted = sum(TRUSTED_GROUP in p.groups for p in passes) / N
    assert trusted == pytest.approx(0.01, abs=0.005)


def test_validity_is_mostly_current(passes: list[PassRecord]) -> None:
    assert all(p.valid_from <= p.valid_until for p in passes)
    current = sum(p.valid_from <= TODAY <= p.valid_until for p in passes) / N
    expired = sum(p.valid_until < TODAY for p in passes) / N
    future = sum(p.valid_from > TODAY for p in passes) / N
    assert current == pytest.approx(0.97, abs=0.01)
    assert 0.005 < expired < 0.04
    assert 0.002 < future < 0.03


def test_unknown_products_get_a_share(province: Province) -> None:
    small = Province("t", "UTC", province.venues, {"t-annual": province.products["city-pass"]})
    assert {p.product_id for p in generate_passes(small, 0, 100, SEED, TODAY)} == {"t-annual"}
