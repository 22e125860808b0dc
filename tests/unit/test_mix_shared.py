"""loadtest/mix.py's shared cards: one pass at two venues at least FAR_KM apart, both covered;
and nobody else in two places: every pass has a home venue where its plain entries go."""

from __future__ import annotations

import numpy as np

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from core.models import CredentialKind, PassStatus
from core.population import credential_of
from core.travel import distance_km
from loadtest.mix import FAR_KM, MAX_FAR_PAIRS, Mix, MixPlan, MixShares, build_plan, home_of
from loadtest.population import PopulationIndex

N_PASSES = 400
PROVINCE = load_province(DEFAULT_CONFIG_DIR)
# Credential value -> pass index (card and QR of one pass are one holder).
OWNER = {
    credential_of(i, kind): i
    for i in range(N_PASSES)
    for kind in (CredentialKind.CARD, CredentialKind.QR)
}


def _plan(shared: float, **shares: float) -> MixPlan:
    ids = tuple(sorted(PROVINCE.products))
    index = PopulationIndex(
        ids,
        product=np.arange(N_PASSES, dtype=np.int32) % len(ids),
        status=np.full(N_PASSES, int(PassStatus.ACTIVE), dtype=np.int8),
        tier=np.full(N_PASSES, 2, dtype=np.int8),
    )
    return build_plan(PROVINCE, index, 7, MixShares(shared=shared, **shares))


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


# Scans whose pass is drawn with no regard to its home: refused by the server (so never a
# sighting), the deliberate far scans, and resends of any earlier scan (answered from its record).
_ANYWHERE = {"revoked", "not_covered", "shared", "unknown", "retry"}


def _venues_of(mix: Mix, n: int) -> dict[int, set[str]]:
    """Pass index -> the venues its holder was scanned at in person, over n draws."""
    found: dict[int, set[str]] = {}
    for kind, req in (mix.next() for _ in range(n)):
        if kind not in _ANYWHERE and req.credential.value in OWNER:
            found.setdefault(OWNER[req.credential.value], set()).add(req.venue_id)
    return found


def test_a_pass_of_plain_entries_is_scanned_only_at_its_home() -> None:
    # 400 passes, 3,000 scans: most passes are drawn many times, always at one venue.
    found = _venues_of(Mix(_plan(0.0, pay_later=0.0), 5, "t"), 3000)
    assert len(found) > 300
    assert [p for p, venues in found.items() if len(venues) > 1] == []


def test_every_mix_agrees_on_a_pass_home() -> None:
    # Two workers, or a warm-up and its run: other seeds, the same homes.
    plan = _plan(0.0, pay_later=0.0)
    one, two = _venues_of(Mix(plan, 5, "a"), 2000), _venues_of(Mix(plan, 6, "b"), 2000)
    both = one.keys() & two.keys()
    assert len(both) > 100
    assert all(one[p] == two[p] for p in both)


def test_a_home_is_covered_by_the_pass_product_and_popular_venues_have_more() -> None:
    plan = _plan(0.0)
    homes = [0] * len(plan.venues)
    for product, passes in enumerate(plan.passes_by_product):
        for pass_index in passes:
            home = home_of(plan, product, int(pass_index))
            assert product in plan.venues[home].products
            homes[home] += 1
    assert sum(homes) == N_PASSES
    busy = [n for n in homes if n]
    assert homes[0] > 0 and max(busy) > 2 * min(busy)  # popularity, not one per venue


def test_roaming_pay_later_holders_still_scan_at_many_venues() -> None:
    mix = Mix(_plan(0.0, pay_later=0.5, roaming=1.0), 5, "t")
    found: dict[int, set[str]] = {}
    for kind, req in (mix.next() for _ in range(2000)):
        if kind == "pay_later":
            found.setdefault(OWNER[req.credential.value], set()).add(req.venue_id)
    assert max(len(venues) for venues in found.values()) > 3
