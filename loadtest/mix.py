"""The request mix: which credential scans at which gate, and what kind of scan it is.

`build_plan` turns the province and the population into a compact, picklable `MixPlan` (venues by
Zipf popularity, the passes that each venue's products cover, revoked passes, reservation holders).
Each worker then runs its own seeded `Mix`, which keeps a little memory of what it sent and what was
allowed, so that exits, repeated scans, passback attempts and retries refer to real earlier scans.
Shared cards: one pass scanned at a venue and, a few scans later, at a venue at least FAR_KM away
that its product also covers (pairs precomputed from the venues' locations, at most MAX_FAR_PAIRS).

Nobody else is in two places at once: every pass has a home venue (`home_of`: one of its product's
venues, drawn by popularity from a hash of the pass, so every worker, the warm-up and the echo
baseline agree), and its plain entries all go there; a pass drawn again is a re-entry at home,
never a scan far away. Were passes scanned wherever they are drawn, a population not much larger
than a run's scans would meet itself at two venues within minutes, and most shared-card flags
of a run (a third of all entries, seen before homes) would measure the generator, not the cards.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.models import CredentialKind, PassStatus, Province
from core.population import credential_of
from core.travel import distance_km
from loadtest.population import PopulationIndex
from proto.passgate.v1 import common_pb2, gate_pb2

_KIND = common_pb2.CredentialKind.ValueType
RECENT_ENTRIES = 4096
RECENT_REQUESTS = 64
# A repeated scan is the same person tapping again within the last few entries of this worker.
REPEAT_WINDOW = 16
# Shared cards: the second venue is at least this far from the first (minutes apart by car).
FAR_KM = 20.0
MAX_FAR_PAIRS = 256
MAX_PENDING_SHARED = 64


ROAMING_HOLDERS = 16


@dataclass(frozen=True)
class MixShares:
    """Share of each scan kind; "entry" (a valid pass at a venue its product covers) is the rest."""

    exit: float = 0.08
    repeat: float = 0.03
    retry: float = 0.03
    passback: float = 0.02
    revoked: float = 0.01
    unknown: float = 0.02
    not_covered: float = 0.01
    pay_later: float = 0.05
    dry_run: float = 0.005
    # One credential at two far-apart venues (half the share each: the first and the far scan).
    shared: float = 0.01
    # Of the pay-later scans, the share made by a few roaming holders (the first
    # ROAMING_HOLDERS passes of each pay-later product) at any pay-later venue, so that one
    # holder's charges at several venues and shards meet the holder-wide debt limit.
    roaming: float = 0.5
    # At a venue that needs a reservation, the share of entries made by reservation holders.
    holders: float = 0.75

    def table(self) -> list[tuple[float, str]]:
        """Cumulative thresholds for one uniform draw."""
        names = (
            "exit",
            "repeat",
            "retry",
            "passback",
            "revoked",
            "unknown",
            "not_covered",
            "pay_later",
            "dry_run",
            "shared",
        )
        acc, out = 0.0, []
        for name in names:
            acc += getattr(self, name)
            out.append((acc, name))
        if acc >= 1:
            raise ValueError("mix shares leave no room for plain entries")
        return out

    def to_dict(self) -> dict[str, float]:
        table = self.table()
        return {
            **{name: getattr(self, name) for _, name in table},
            "entry": round(1 - table[-1][0], 4),
            "holders": self.holders,
        }


@dataclass(frozen=True)
class VenuePlan:
    venue_id: str
    gates: tuple[str, ...]
    # Indices into MixPlan.product_ids of products covering this venue, with cumulative weights
    # (the number of active passes of each).
    products: tuple[int, ...]
    cum_weights: tuple[float, ...]
    pay_later_products: tuple[int, ...]
    needs_reservation: bool
    holders: tuple[int, ...] = ()


@dataclass(frozen=True)
class MixPlan:
    product_ids: tuple[str, ...]
    # Venues in popularity order (rank 1 first) and the cumulative Zipf weights over them.
    venues: tuple[VenuePlan, ...]
    cum_popularity: tuple[float, ...]
    passes_by_product: tuple[np.ndarray, ...]
    revoked: np.ndarray
    shares: MixShares = field(default_factory=MixShares)
    zipf_s: float = 1.0
    # (product index, venue rank, far venue rank): both venues covered by the product.
    far_pairs: tuple[tuple[int, int, int], ...] = ()
    # Per product: the venue ranks it covers and their cumulative popularity (`home_of`).
    homes: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()

    def summary(self) -> dict[str, Any]:
        top = self.venues[:5]
        total = self.cum_popularity[-1] if self.cum_popularity else 1.0
        return {
            "venues": len(self.venues),
            "zipf_s": self.zipf_s,
            "top_venues": [v.venue_id for v in top],
            "top5_share": round(self.cum_popularity[len(top) - 1] / total, 3) if top else 0.0,
            "reservation_venues": sum(v.needs_reservation for v in self.venues),
            "reservation_holders": sum(len(v.holders) for v in self.venues),
            "revoked_passes": int(self.revoked.shape[0]),
            "shared_card_pairs": len(self.far_pairs),
            "shares": self.shares.to_dict(),
        }


def needs_reservation(province: Province, venue_id: str) -> bool:
    venue = province.venues[venue_id]
    if venue.reservation_required:
        return True
    return any(
        p.venues[venue_id].reservation_required
        for p in province.products.values()
        if venue_id in p.venues
    )


def popularity_order(province: Province, seed: int) -> list[str]:
    """Big scenic areas draw the crowds: rank by daily capacity, ties broken by a seeded shuffle."""
    ids = sorted(province.venues)
    random.Random(seed).shuffle(ids)
    return sorted(ids, key=lambda v: -province.venues[v].daily_capacity)


def build_plan(
    province: Province,
    population: PopulationIndex,
    seed: int,
    shares: MixShares | None = None,
    zipf_s: float = 1.0,
    holders: dict[str, list[int]] | None = None,
) -> MixPlan:
    product_ids = population.product_ids
    active = population.status == int(PassStatus.ACTIVE)
    by_product = tuple(
        np.flatnonzero(active & (population.product == k)).astype(np.int32)
        for k in range(len(product_ids))
    )
    holders = holders or {}
    venues = []
    for vid in popularity_order(province, seed):
        covering = [
            k
            for k, pid in enumerate(product_ids)
            if vid in province.products[pid].venues and by_product[k].shape[0] > 0
        ]
        pay_later = tuple(
            k for k in covering if province.products[product_ids[k]].venues[vid].pay_later_price_fen
        )
        venues.append(
            VenuePlan(
                venue_id=vid,
                gates=tuple(sorted(province.venues[vid].gates)) or (f"{vid}-g1",),
                products=tuple(covering),
                cum_weights=tuple(itertools.accumulate(by_product[k].shape[0] for k in covering)),
                pay_later_products=pay_later,
                needs_reservation=needs_reservation(province, vid),
                holders=tuple(holders.get(vid, ())),
            )
        )
    weights = [1.0 / (rank**zipf_s) for rank in range(1, len(venues) + 1)]
    pairs = far_pairs(province, venues, seed)
    homes = []
    for k in range(len(product_ids)):
        ranks = tuple(r for r, v in enumerate(venues) if k in v.products)
        homes.append((ranks, tuple(itertools.accumulate(weights[r] for r in ranks))))
    return MixPlan(
        product_ids=product_ids,
        venues=tuple(venues),
        cum_popularity=tuple(itertools.accumulate(weights)),
        passes_by_product=by_product,
        revoked=np.flatnonzero(population.status == int(PassStatus.REVOKED)).astype(np.int32),
        shares=shares or MixShares(),
        zipf_s=zipf_s,
        far_pairs=pairs,
        homes=tuple(homes),
    )


def far_pairs(
    province: Province, venues: list[VenuePlan], seed: int
) -> tuple[tuple[int, int, int], ...]:
    """(product, venue, far venue) triples: both venues located, at least FAR_KM apart and
    covered by the product; a seeded sample of at most MAX_FAR_PAIRS."""
    found = []
    for a, va in enumerate(venues):
        here = province.venues[va.venue_id].location
        if here is None:
            continue
        for b, vb in enumerate(venues):
            there = province.venues[vb.venue_id].location
            if there is None or distance_km(here, there) < FAR_KM:
                continue
            found += [(k, a, b) for k in set(va.products) & set(vb.products)]
    rng = random.Random(seed)
    return tuple(sorted(rng.sample(found, min(MAX_FAR_PAIRS, len(found)))))


def pick_pass(plan: MixPlan, venue: VenuePlan, rng: random.Random) -> int | None:
    """A random active pass whose product covers `venue` (products weighted by their size)."""
    drawn = pick_pass_of_product(plan, venue, rng)
    return None if drawn is None else drawn[0]


def pick_pass_of_product(
    plan: MixPlan, venue: VenuePlan, rng: random.Random
) -> tuple[int, int] | None:
    """`pick_pass`, with the pass's product index."""
    if not venue.products:
        return None
    k = bisect.bisect_right(venue.cum_weights, rng.random() * venue.cum_weights[-1])
    product = venue.products[min(k, len(venue.products) - 1)]
    passes = plan.passes_by_product[product]
    return int(passes[rng.randrange(passes.shape[0])]), product


def home_of(plan: MixPlan, product: int, pass_index: int) -> int:
    """The venue (rank) where the pass's plain entries go: one its product covers, chosen by
    popularity from a hash of the pass index (the same in every process and run)."""
    ranks, cum = plan.homes[product]
    unit = ((pass_index * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64)) / float(1 << 64)
    return ranks[min(bisect.bisect_right(cum, unit * cum[-1]), len(ranks) - 1)]


class _Zipf:
    """Draws a venue by popularity among a subset of the plan's venues (ranks kept)."""

    def __init__(self, plan: MixPlan, among: Any) -> None:
        self.venues = list(among)
        weights = [1.0 / ((v + 1) ** plan.zipf_s) for v in self.venues]
        self.cum = list(itertools.accumulate(weights))

    def __bool__(self) -> bool:
        return bool(self.venues)

    def pick(self, rng: random.Random) -> int:
        k = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.venues[min(k, len(self.venues) - 1)]


@dataclass
class _Entry:
    venue: int
    gate: str
    kind: int
    value: str


class Mix:
    """One worker's stream of scans: `next()` -> (kind, request); `observe()` the decisions."""

    def __init__(self, plan: MixPlan, seed: int, id_prefix: str) -> None:
        self.plan = plan
        self.rng = random.Random(seed)
        self._prefix = id_prefix
        self._seq = 0
        self._table = plan.shares.table()
        self._entries: deque[_Entry] = deque(maxlen=RECENT_ENTRIES)
        self._sent: deque[gate_pb2.ValidateRequest] = deque(maxlen=RECENT_REQUESTS)
        self._venue_index = {v.venue_id: i for i, v in enumerate(plan.venues)}
        ranks = range(len(plan.venues))
        self._all = _Zipf(plan, ranks)
        self._covering = _Zipf(plan, [i for i in ranks if plan.venues[i].products])
        pay_later = [i for i in ranks if plan.venues[i].pay_later_products]
        self._pay_later_venues = _Zipf(plan, pay_later)
        self._far_scans: deque[gate_pb2.ValidateRequest] = deque(maxlen=MAX_PENDING_SHARED)
        # Request ids of far scans sent lately, so that their flags can be told apart.
        self._far_ids: deque[str] = deque(maxlen=RECENT_ENTRIES)
        self._far_set: set[str] = set()

    def next(self) -> tuple[str, gate_pb2.ValidateRequest]:
        draw = self.rng.random()
        kind = next((name for limit, name in self._table if draw < limit), "entry")
        made = getattr(self, f"_{kind}")()
        if made is None:
            kind, made = "entry", self._entry()
        if kind != "retry":
            self._sent.append(made)
        return kind, made

    def observe(self, req: gate_pb2.ValidateRequest, decision: gate_pb2.Decision) -> None:
        """Remember admitted entries: later exits, repeated scans and passback use them."""
        if decision.allowed and req.direction != gate_pb2.DIRECTION_EXIT and not req.dry_run:
            venue = self._venue_index.get(req.venue_id)
            if venue is not None:
                cred = req.credential
                self._entries.append(_Entry(venue, req.gate_id, cred.kind, cred.value))

    def is_far_scan(self, req: gate_pb2.ValidateRequest) -> bool:
        """The second scan of a planned shared card (the one that should be flagged)."""
        return req.request_id in self._far_set

    # --- building blocks ---------------------------------------------------------------

    def _request(
        self, venue: int, gate: str, kind: int, value: str, **extra: Any
    ) -> gate_pb2.ValidateRequest:
        self._seq += 1
        return gate_pb2.ValidateRequest(
            request_id=f"{self._prefix}-{self._seq:x}",
            venue_id=self.plan.venues[venue].venue_id,
            gate_id=gate,
            credential=common_pb2.Credential(kind=_KIND(kind), value=value),
            scanned_at_ms=int(time.time() * 1000),
            **extra,
        )

    def _gate(self, venue: int, avoid: str | None = None) -> str:
        gates = self.plan.venues[venue].gates
        gate = self.rng.choice(gates)
        if gate == avoid and len(gates) > 1:
            gate = gates[(gates.index(gate) + 1) % len(gates)]
        return gate

    def _credential(self, pass_index: int) -> tuple[int, str]:
        # Card-code unification: the same pass shows up as its card or its QR code.
        kind = CredentialKind.CARD if self.rng.random() < 0.5 else CredentialKind.QR
        return int(kind), credential_of(pass_index, kind)

    def _scan_pass(self, venue: int, pass_index: int, **extra: Any) -> gate_pb2.ValidateRequest:
        kind, value = self._credential(pass_index)
        return self._request(venue, self._gate(venue), kind, value, **extra)

    # --- scan kinds (None = not possible right now; an entry is sent instead) -----------

    def _entry(self) -> gate_pb2.ValidateRequest:
        venue = self._all.pick(self.rng)
        plan = self.plan.venues[venue]
        if plan.holders and self.rng.random() < self.plan.shares.holders:
            return self._scan_pass(venue, self.rng.choice(plan.holders))
        drawn = pick_pass_of_product(self.plan, plan, self.rng)
        if drawn is None and self._covering:
            drawn = pick_pass_of_product(
                self.plan, self.plan.venues[self._covering.pick(self.rng)], self.rng
            )
        if drawn is None:
            return self._unknown()
        pass_index, product = drawn
        return self._scan_pass(home_of(self.plan, product, pass_index), pass_index)

    def _exit(self) -> gate_pb2.ValidateRequest | None:
        if not self._entries:
            return None
        e = self._entries.popleft()
        return self._request(
            e.venue, self._gate(e.venue), e.kind, e.value, direction=gate_pb2.DIRECTION_EXIT
        )

    def _repeat(self) -> gate_pb2.ValidateRequest | None:
        if not self._entries:
            return None
        e = self._entries[-1 - self.rng.randrange(min(REPEAT_WINDOW, len(self._entries)))]
        return self._request(e.venue, e.gate, e.kind, e.value)

    def _passback(self) -> gate_pb2.ValidateRequest | None:
        if not self._entries:
            return None
        e = self._entries[self.rng.randrange(len(self._entries))]
        return self._request(e.venue, self._gate(e.venue, avoid=e.gate), e.kind, e.value)

    def _retry(self) -> gate_pb2.ValidateRequest | None:
        if not self._sent:
            return None
        # The gate timed out and resends the very same scan, request_id included.
        return self._sent[-1 - self.rng.randrange(len(self._sent))]

    def _revoked(self) -> gate_pb2.ValidateRequest | None:
        revoked = self.plan.revoked
        if revoked.shape[0] == 0:
            return None
        pass_index = int(revoked[self.rng.randrange(revoked.shape[0])])
        return self._scan_pass(self._all.pick(self.rng), pass_index)

    def _unknown(self) -> gate_pb2.ValidateRequest:
        venue = self._all.pick(self.rng)
        value = f"U{self.rng.getrandbits(48):012x}"
        return self._request(venue, self._gate(venue), int(CredentialKind.CARD), value)

    def _not_covered(self) -> gate_pb2.ValidateRequest | None:
        venue = self._all.pick(self.rng)
        covering = set(self.plan.venues[venue].products)
        sizes = [arr.shape[0] for arr in self.plan.passes_by_product]
        others = [k for k, n in enumerate(sizes) if n and k not in covering]
        if not others:
            return None
        passes = self.plan.passes_by_product[self.rng.choice(others)]
        return self._scan_pass(venue, int(passes[self.rng.randrange(passes.shape[0])]))

    def _pay_later(self) -> gate_pb2.ValidateRequest | None:
        if not self._pay_later_venues:
            return None
        venue = self._pay_later_venues.pick(self.rng)
        plan = self.plan.venues[venue]
        product = self.rng.choice(plan.pay_later_products)
        passes = self.plan.passes_by_product[product]
        n = passes.shape[0]
        if self.rng.random() < self.plan.shares.roaming:
            # The roaming holders scan anywhere: their charges meet at the holder-wide limit.
            return self._scan_pass(venue, int(passes[self.rng.randrange(min(n, ROAMING_HOLDERS))]))
        pass_index = int(passes[self.rng.randrange(n)])
        home = home_of(self.plan, product, pass_index)
        if product in self.plan.venues[home].pay_later_products:
            venue = home  # an ordinary holder pays later at home when home lets them
        return self._scan_pass(venue, pass_index)

    def _shared(self) -> gate_pb2.ValidateRequest | None:
        """A pass at one venue now; the same pass at a far venue on the next shared draw."""
        if self._far_scans:
            far_scan = self._far_scans.popleft()
            if len(self._far_ids) == self._far_ids.maxlen:
                self._far_set.discard(self._far_ids[0])
            self._far_ids.append(far_scan.request_id)
            self._far_set.add(far_scan.request_id)
            return far_scan
        if not self.plan.far_pairs:
            return None
        product, venue, far = self.rng.choice(self.plan.far_pairs)
        passes = self.plan.passes_by_product[product]
        pass_index = int(passes[self.rng.randrange(passes.shape[0])])
        first = self._scan_pass(venue, pass_index)
        self._far_scans.append(self._scan_pass(far, pass_index))
        return first

    def _dry_run(self) -> gate_pb2.ValidateRequest | None:
        req = self._entry()
        req.dry_run = True
        return req
