"""The fixed world of the fuzz campaign: which venues and passes each kind of traffic may name.

The test province (tests/e2e/province) is split into roles, so that state checks never have to
guess what the hostile traffic did:

- canary: only the well-formed canary flow names these venues and passes; their final state must
  be exactly what the canary was told.
- trap: named only by inputs that are invalid by the contract; nothing about them may change.
- hold: passes admitted at `HOLD_VENUE` before the campaign; hostile EXIT scans with unknown
  credentials there must not lower its occupancy (capacity bypass).
- mix: the good items (dry runs) mixed into hostile batches and streams; each must get REASON_OK.
- fuzz: everything else (and random ids); random and mutated bytes name only these, so a mutation
  that happens to be a valid request can change nothing that is checked.

With two shards the canary and trap venues sit on both, so a poisoned shard batch shows.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf.message import Message

from proto.passgate.v1 import common_pb2, passes_pb2

TEST_PROVINCE = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "province"
# A peak day (National Day) at 10:00: venues open, the morning reservation slot is current.
FROZEN_CLOCK = "2026-10-01T10:00:00+08:00"
TODAY = "2026-10-01"
CURRENT_SLOT = "am"

CANARY_VENUES = ("t-lake", "t-watch")
TRAP_VENUES = ("t-quota", "t-hard")
TRAP_SLOT_VENUE = "t-museum"
HOLD_VENUE = "t-small"
MIX_VENUES = ("t-soft", "t-state")
FUZZ_VENUES = ("t-pause", "t-alert", "t-closed", "t-uncovered", "t-window")
ALL_TRAP_VENUES = (*TRAP_VENUES, TRAP_SLOT_VENUE)
PROTECTED_VENUES = frozenset((*CANARY_VENUES, *ALL_TRAP_VENUES, HOLD_VENUE, *MIX_VENUES))
GATES_PER_VENUE = 4

CANARY_PASSES = 40
TRAP_PASSES = 10
HOLD_PASSES = 10
MIX_PASSES = 20
FUZZ_PASSES = 50
FUZZ_PRODUCTS = ("t-annual", "t-once", "t-daily", "t-city", "t-credit")
# Ids the random and mutated inputs must never name (after normalising: see `names_protected`).
PROTECTED_PREFIXES = ("canary-", "cn-", "trap-", "hold-", "mix-", "mx-", "tr-")
CARD = common_pb2.CREDENTIAL_KIND_CARD
QR = common_pb2.CREDENTIAL_KIND_QR


def gate(venue: str, n: int) -> str:
    return f"{venue}-g{n:02d}"


def canary_pass(i: int) -> str:
    return f"CANARY-{i}"


def canary_card(i: int) -> str:
    return f"CN-CARD-{i}"


def trap_pass(i: int) -> str:
    return f"TRAP-{i}"


def trap_card(i: int) -> str:
    return f"TRAP-CARD-{i}"


def hold_pass(i: int) -> str:
    return f"HOLD-{i}"


def hold_card(i: int) -> str:
    return f"HOLD-CARD-{i}"


def mix_card(i: int) -> str:
    return f"MIX-CARD-{i}"


def fuzz_card(i: int) -> str:
    return f"FZ-CARD-{i}"


def _record(pass_id: str, card: str, qr: str, product: str = "t-annual") -> passes_pb2.PassRecord:
    return passes_pb2.PassRecord(
        pass_id=pass_id,
        product_id=product,
        credentials=[
            common_pb2.Credential(kind=CARD, value=card),
            common_pb2.Credential(kind=QR, value=qr),
        ],
        valid_from="2026-01-01",
        valid_until="2027-12-31",
        status=passes_pb2.PASS_STATUS_ACTIVE,
        credit_tier=passes_pb2.CREDIT_TIER_NORMAL,
    )


def world_records() -> Iterator[passes_pb2.PassRecord]:
    """Every pass the campaign relies on; importing them again changes nothing."""
    for i in range(CANARY_PASSES):
        yield _record(canary_pass(i), canary_card(i), f"CN-QR-{i}")
    for i in range(TRAP_PASSES):
        yield _record(trap_pass(i), trap_card(i), f"TRAP-QR-{i}")
    for i in range(HOLD_PASSES):
        yield _record(hold_pass(i), hold_card(i), f"HOLD-QR-{i}")
    for i in range(MIX_PASSES):
        yield _record(f"MIX-{i}", mix_card(i), f"MIX-QR-{i}")
    for i in range(FUZZ_PASSES):
        product = FUZZ_PRODUCTS[i % len(FUZZ_PRODUCTS)]
        yield _record(f"FZ-{i}", fuzz_card(i), f"FZ-QR-{i}", product)


def world_size() -> int:
    return CANARY_PASSES + TRAP_PASSES + HOLD_PASSES + MIX_PASSES + FUZZ_PASSES


def checked_passes() -> list[str]:
    """Passes whose record and usage the state checks compare before and after."""
    return [
        *(canary_pass(i) for i in range(CANARY_PASSES)),
        *(trap_pass(i) for i in range(TRAP_PASSES)),
        *(hold_pass(i) for i in range(HOLD_PASSES)),
        *(f"MIX-{i}" for i in range(MIX_PASSES)),
    ]


def checked_venues() -> list[str]:
    return [*CANARY_VENUES, *ALL_TRAP_VENUES, HOLD_VENUE, *MIX_VENUES]


def _norm(text: str) -> str:
    # A forgiving server might strip, case-fold or drop control characters; the guard assumes
    # the worst so that no such server can be steered onto a checked id by accident.
    kept = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    return unicodedata.normalize("NFKC", kept).strip().casefold()


_PROTECTED_NORM = frozenset(_norm(v) for v in PROTECTED_VENUES)


def strings_of(msg: Message) -> Iterable[str]:
    """Every string value in a message, nested and repeated fields included."""
    for fd, value in msg.ListFields():
        values = value if fd.is_repeated else (value,)
        for v in values:
            if isinstance(v, str):
                yield v
            elif isinstance(v, Message):
                yield from strings_of(v)


def names_protected(msg: Message) -> bool:
    """True when a (random or mutated) message names a checked venue, pass or request id."""
    for s in strings_of(msg):
        n = _norm(s)
        if n in _PROTECTED_NORM or n.startswith(PROTECTED_PREFIXES):
            return True
        if any(n.startswith(v) and len(n) <= len(v) + 4 for v in _PROTECTED_NORM):
            return True
    return False
