"""A deterministic synthetic pass population for seeding and load tests.

Pass `i` is a pure function of (province products, seed, today, i): one 64-bit hash of (seed, i)
picks its product, status, credit tier, groups and validity, so any slice of 10 million passes can
be generated independently and a load generator can name valid credentials for index `i`
(`credential_of`) without storing them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from core.models import CredentialKind, CreditTier, PassRecord, PassStatus, Province

TRUSTED_GROUP = "trusted_person"
_MASK = (1 << 64) - 1
_BUCKETS = 1024  # each decision reads its own 10 bits of the hash: shares in steps of ~0.1 %
_PREFIX = {CredentialKind.CARD: "C", CredentialKind.QR: "Q"}

# Relative shares of the sample products; products not listed get _OTHER_WEIGHT each.
PRODUCT_WEIGHTS = {
    "resident-card": 55,
    "digital-tourism-card": 20,
    "city-pass": 15,
    "credit-pass": 10,
}
_OTHER_WEIGHT = 10
STATUS_WEIGHTS = ((PassStatus.ACTIVE, 97), (PassStatus.REVOKED, 2), (PassStatus.BLOCKED, 1))
TIER_WEIGHTS = ((CreditTier.GOOD, 60), (CreditTier.NORMAL, 30), (CreditTier.POOR, 10))
GROUP_WEIGHTS: tuple[tuple[frozenset[str], int], ...] = (
    (frozenset(), 99),
    (frozenset({TRUSTED_GROUP}), 1),
)
# Validity relative to `today`: mostly valid now, a few already expired or not yet started.
_CURRENT, _EXPIRED, _FUTURE = 0, 1, 2
VALIDITY_WEIGHTS = ((_CURRENT, 97), (_EXPIRED, 2), (_FUTURE, 1))
# Days a pass of this product lasts (valid_until - valid_from + 1); others last a year.
PRODUCT_DAYS = {"resident-card": 5 * 365}
_YEAR = 365
_T = TypeVar("_T")


_CARD, _QR = CredentialKind.CARD, CredentialKind.QR


@dataclass(frozen=True, slots=True)
class _Tables:
    """Hash bucket -> value, built once per call so the per-pass work is a few lookups."""

    products: tuple[str, ...]
    days: tuple[int, ...]
    statuses: tuple[PassStatus, ...]
    tiers: tuple[CreditTier, ...]
    groups: tuple[frozenset[str], ...]
    validity: tuple[int, ...]


def pass_id_of(i: int) -> str:
    return f"P{i:010d}"


def credential_of(i: int, kind: CredentialKind) -> str:
    """The credential value of synthetic pass `i` (CARD or QR)."""
    return f"{_PREFIX[kind]}{i:010d}"


def generate_passes(
    province: Province, start: int, count: int, seed: int, today: int
) -> Iterator[PassRecord]:
    """Passes start .. start+count-1; `today` is a date ordinal that validity is centred on."""
    tables = _tables(province)
    key = _splitmix(seed & _MASK)
    for i in range(start, start + count):
        yield _record(tables, key, i, today)


def pass_at(province: Province, i: int, seed: int, today: int) -> PassRecord:
    """Pass `i` alone: the same record generate_passes yields at that index."""
    return _record(_tables(province), _splitmix(seed & _MASK), i, today)


def _record(t: _Tables, key: int, i: int, today: int) -> PassRecord:
    h = _splitmix((key + i * 0x9E3779B97F4A7C15) & _MASK)
    digits = f"{i:010d}"
    product = h & 1023
    days = t.days[product]
    offset = (h >> 50) & 0x3FFF
    validity = t.validity[(h >> 40) & 1023]
    if validity == _CURRENT:
        valid_from = today - offset % min(days, _YEAR)
    elif validity == _EXPIRED:
        valid_from = today - days - offset % 180
    else:
        valid_from = today + 1 + offset % 60
    # Positional construction: msgspec Structs do not validate on construction, so this is cheap.
    return PassRecord(
        "P" + digits,
        t.products[product],
        ((_CARD, "C" + digits), (_QR, "Q" + digits)),
        valid_from,
        valid_from + days - 1,
        t.statuses[(h >> 10) & 1023],
        t.tiers[(h >> 20) & 1023],
        t.groups[(h >> 30) & 1023],
    )


def _splitmix(z: int) -> int:
    """SplitMix64's finaliser: a cheap, well-mixed 64-bit hash of z."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _tables(province: Province) -> _Tables:
    ids = sorted(province.products)
    if not ids:
        raise ValueError("the province has no products to generate passes for")
    products = _buckets([(pid, PRODUCT_WEIGHTS.get(pid, _OTHER_WEIGHT)) for pid in ids])
    return _Tables(
        products=products,
        days=tuple(PRODUCT_DAYS.get(pid, _YEAR) for pid in products),
        statuses=_buckets(STATUS_WEIGHTS),
        tiers=_buckets(TIER_WEIGHTS),
        groups=_buckets(GROUP_WEIGHTS),
        validity=_buckets(VALIDITY_WEIGHTS),
    )


def _buckets(weights: Sequence[tuple[_T, int]]) -> tuple[_T, ...]:
    """Spreads values over _BUCKETS slots in proportion to their weights (largest remainder)."""
    total = sum(w for _, w in weights)
    exact = [(value, w * _BUCKETS / total) for value, w in weights]
    counts = [int(share) for _, share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: int(exact[k][1]) - exact[k][1])
    for k in by_remainder[: _BUCKETS - sum(counts)]:
        counts[k] += 1
    return tuple(value for (value, _), n in zip(exact, counts, strict=True) for _ in range(n))
