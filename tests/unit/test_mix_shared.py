"""loadtest/mix.py's shared cards: one pass at two venues at least FAR_KM apart, both covered."""

from __future__ import annotations

import numpy as np

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from core.models import CredentialKind, PassStatus
from core.population import credential_of
from core.travel import distance_km
from loadtest.mix import FAR_KM, MAX_FAR_PAIRS, Mix, MixPlan, MixShares, build_plan
from loadtest.population import PopulationIndex

N_PASSES = 400
PROVINCE = load_province(DEFAULT_CONFIG_DIR)
# Credential value -> pass index (card and QR of one pass are one holder).
OWNER = {
    credential_of(i, kind): i
    for i in range(N_PASSES)
    for kind in (CredentialKind.CARD, CredentialKind.QR)
}


def _plan(shared: float) -> MixPlan:
    ids = tuple(sorted(PROVINCE.products))
    index = PopulationIndex(
        ids,
        product=np.arange(N_PASSES, dtype=np.int32) % len(ids),
        status=np.full(N_PASSES, int(PassStatus.ACTIVE), dtype=np.int8),
        tier=np.full(N_PASSES, 2, dtype=np.int8),
    )
    return build_plan(PROVINCE, index, 7, MixShares(shared=shared))


def _km(venue_a: str, venue_b: str) -> float:
    here, there = PROVINCE.venues[venue_a].location, PROVINCE.venues[venue_b].location
    assert here is not None and there is not None
    return distance_km(here, there)


def test_far_pairs_are_far_apart_and_covered_by_their_product() -> None:
    plan = _plan(0.01)
    assert 0 < len(plan.far_pairs) <= MAX_FAR_PAIRS
    for product, a, b in plan.far_pairs:
        va, vb = plan.venues[a], plan.venues[b]
        assert _km(va.venue_id, vb.venue_id) >= FAR_KM
        assert product in va.products and product in vb.products


def test_shared_scans_come_in_pairs_of_one_pass_at_two_far_venues() -> None:
    mix = Mix(_plan(0.2), 3, "t")
    shared = [req for kind, req in (mix.next() for _ in range(2000)) if kind == "shared"]
    assert len(shared) > 100
    for first, far in zip(shared[0::2], shared[1::2], strict=False):
        assert OWNER[first.credential.value] == OWNER[far.credential.value]
        assert _km(first.venue_id, far.venue_id) >= FAR_KM


def test_no_shared_scans_without_a_share() -> None:
    mix = Mix(_plan(0.0), 3, "t")
    assert all(kind != "shared" for kind, _ in (mix.next() for _ in range(2000)))
