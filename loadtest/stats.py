"""Latency recording: HDR histograms in microseconds, per-second buckets, and merging.

A worker records every answer twice: into its run histogram and into the bucket of the second the
answer arrived in. Buckets travel to the parent as plain dicts with an encoded histogram, so the
parent can merge exact percentiles across workers for the timeline and the live line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def new_hist() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record(hist: HdrHistogram, micros: float, count: int = 1) -> None:
    hist.record_value(min(max(int(micros), LOWEST_US), HIGHEST_US), count)


def decode(encoded: bytes) -> HdrHistogram:
    hist = new_hist()
    hist.add(HdrHistogram.decode(encoded))
    return hist


def merge(encoded: list[bytes]) -> HdrHistogram:
    hist = new_hist()
    for blob in encoded:
        hist.add(HdrHistogram.decode(blob))
    return hist


def percentiles_ms(hist: HdrHistogram) -> dict[str, float]:
    """p50, p90, p99, p99_9, max and mean in milliseconds (0.0 for an empty histogram)."""
    if hist.get_total_count() == 0:
        return {**{name: 0.0 for name, _ in PERCENTILES}, "max": 0.0, "mean": 0.0}
    out = {name: hist.get_value_at_percentile(q) / 1000 for name, q in PERCENTILES}
    out["max"] = hist.get_max_value() / 1000
    out["mean"] = round(hist.get_mean_value() / 1000, 3)
    return out


@dataclass
class Bucket:
    """What one worker saw during one second of the run."""

    sent: int = 0
    answered: int = 0
    errors: int = 0
    unsent: int = 0
    hist: HdrHistogram = field(default_factory=new_hist)

    def to_msg(self, second: int, cpu_pct: float) -> dict[str, Any]:
        return {
            "t": second,
            "sent": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "unsent": self.unsent,
            "cpu_pct": cpu_pct,
            "hist": self.hist.encode(),
        }


@dataclass
class Tally:
    """Run totals of one worker (or, merged, of the whole generator)."""

    scheduled: int = 0
    sent: int = 0
    answered: int = 0
    unsent: int = 0
    allowed: int = 0
    pay_later: int = 0
    # Decisions flagged (or refused) as a shared card; those on the mix's planned far scans.
    shared_cards: int = 0
    shared_planned: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())

    def to_msg(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "answered": self.answered,
            "unsent": self.unsent,
            "allowed": self.allowed,
            "pay_later": self.pay_later,
            "shared_cards": self.shared_cards,
            "shared_planned": self.shared_planned,
            "errors_by_code": dict(self.errors_by_code),
            "reasons": dict(self.reasons),
            "kinds": dict(self.kinds),
        }

    def add_msg(self, msg: dict[str, Any]) -> None:
        for name in (
            "scheduled",
            "sent",
            "answered",
            "unsent",
            "allowed",
            "pay_later",
            "shared_cards",
            "shared_planned",
        ):
            setattr(self, name, getattr(self, name) + msg[name])
        self.errors_by_code.update(msg["errors_by_code"])
        self.reasons.update(msg["reasons"])
        self.kinds.update(msg["kinds"])
