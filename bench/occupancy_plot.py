"""Estimated against true occupancy over a simulated holiday at a mountain scenic area without exit
readers; writes an SVG for the README (`python -m bench.occupancy_plot [--out FILE]`).

The day: gates open at 07:00 and the day visit ends at 17:30 (like Yandang Mountain in the
sample province: instantaneous capacity 20,000, typical stay 150 minutes, everyone out at 18:00).
Entries per minute follow the load test's holiday-peak profile stretched over the opening hours,
with Poisson noise. True stays are NOT drawn from the estimator's model: two kinds of visitor
(hikers, median 170 minutes, and short visits, median 80 minutes, each log-normal) and nobody
stays past 18:00, so the plot shows what a planner's single typical stay gets wrong.

The estimate comes from the production code path: the numba counters (`core.counters`) fed one
minute of entries at a time, read as the capacity check reads them. Seeded, so a rerun writes the
same file.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from core.counters import ENTRY, MINUTES_PER_DAY, TAIL, CapacityCounters
from core.occupancy import survival_table
from loadtest.profiles import holiday_peak

OPEN_MIN, LAST_ENTRY_MIN, EVERYONE_OUT_MIN = 7 * 60, 17 * 60 + 30, 18 * 60
INSTANT_CAPACITY = 20_000
TYPICAL_STAY_MIN = 150
PEAK_PER_MIN = 96.0
# (share of visitors, median stay in minutes, sigma of log stay)
VISITORS = ((0.65, 170.0, 0.35), (0.35, 80.0, 0.45))
SEED = 2026
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "occupancy-holiday.svg"
DAY = date(2026, 10, 1).toordinal()


@dataclass(frozen=True)
class Day:
    entries: list[int]
    true_inside: list[int]
    estimate: list[int]
    counted: list[int]


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means of one minute; a normal beyond.
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _stay(rng: random.Random) -> float:
    pick = rng.random()
    for share, median, sigma in VISITORS:
        if pick < share:
            return rng.lognormvariate(math.log(median), sigma)
        pick -= share
    raise AssertionError("visitor shares must sum to 1")


def simulate() -> Day:
    rng = random.Random(SEED)
    profile = holiday_peak(PEAK_PER_MIN, LAST_ENTRY_MIN - OPEN_MIN)
    entries = [0] * MINUTES_PER_DAY
    leaving = [0] * (MINUTES_PER_DAY + 1)
    for m in range(OPEN_MIN, LAST_ENTRY_MIN):
        n = _poisson(rng, profile.rate_at(m - OPEN_MIN))
        entries[m] = n
        for _ in range(n):
            at = m + rng.random() + _stay(rng)
            leaving[min(math.ceil(at), EVERYONE_OUT_MIN)] += 1
    counters = CapacityCounters(1, 1)
    counters.set_stay(0, survival_table(TYPICAL_STAY_MIN, TAIL + MINUTES_PER_DAY), EVERYONE_OUT_MIN)
    true_inside, estimate, counted = [], [], []
    inside = total = 0
    for m in range(MINUTES_PER_DAY):
        n = entries[m]
        if n:
            counters.apply_batch([0] * n, [DAY] * n, [m] * n, [ENTRY] * n, [-1] * n)
        inside += n - leaving[m]
        total += n
        true_inside.append(inside)
        estimate.append(counters.live_occupancy(0, m))
        counted.append(total)  # entries minus exits where no exit is ever read
    return Day(entries, true_inside, estimate, counted)


# -- the SVG ------------------------------------------------------------------------------------

_W, _H = 900, 470
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 40, 60
_X0_MIN, _X1_MIN = 6 * 60, 20 * 60
_Y_MAX = 50_000
_SERIES = (
    ("counted", "#b0b0b0", "entries minus exits (no exits read): today's count", "6 4"),
    ("true_inside", "#1f77b4", "true occupancy (simulated stays)", ""),
    ("estimate", "#d62728", "estimate (typical stay 150 min, everyone out 18:00)", ""),
)


def _x(minute: float) -> float:
    return _LEFT + (minute - _X0_MIN) * (_W - _LEFT - _RIGHT) / (_X1_MIN - _X0_MIN)


def _y(value: float) -> float:
    return _H - _BOTTOM - min(value, _Y_MAX) * (_H - _TOP - _BOTTOM) / _Y_MAX


def _line(values: list[int], colour: str, dash: str) -> str:
    pts = " ".join(
        f"{_x(m):.1f},{_y(v):.1f}" for m, v in enumerate(values) if _X0_MIN <= m <= _X1_MIN
    )
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dashed} points="{pts}"/>'


def _axes() -> list[str]:
    out = [
        f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" y2="{_H - _BOTTOM}" '
        'stroke="#333"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}" stroke="#333"/>',
    ]
    for hour in range(_X0_MIN // 60, _X1_MIN // 60 + 1, 2):
        x = _x(hour * 60)
        out.append(f'<line x1="{x:.1f}" y1="{_H - _BOTTOM}" x2="{x:.1f}" y2="{_H - _BOTTOM + 5}" '
                   'stroke="#333"/>')  # fmt: skip
        out.append(f'<text x="{x:.1f}" y="{_H - _BOTTOM + 20}" text-anchor="middle">'
                   f"{hour:02d}:00</text>")  # fmt: skip
    for value in range(0, _Y_MAX + 1, 10_000):
        y = _y(value)
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" '
                   'stroke="#eee"/>')  # fmt: skip
        out.append(f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{value:,}</text>')
    cap = _y(INSTANT_CAPACITY)
    out.append(f'<line x1="{_LEFT}" y1="{cap:.1f}" x2="{_W - _RIGHT}" y2="{cap:.1f}" '
               'stroke="#2ca02c" stroke-dasharray="2 3"/>')  # fmt: skip
    out.append(f'<text x="{_W - _RIGHT - 4}" y="{cap - 6:.1f}" text-anchor="end" fill="#2ca02c">'
               "instantaneous capacity 20,000</text>")  # fmt: skip
    out.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2:.0f}" y="{_H - 15}" text-anchor="middle">'
               "local time (entries 07:00-17:30, holiday-peak profile)</text>")  # fmt: skip
    mid = (_TOP + _H - _BOTTOM) / 2
    out.append(f'<text x="18" y="{mid:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 18 {mid:.0f})">people</text>')  # fmt: skip
    return out


def _legend() -> list[str]:
    out = []
    for i, (_, colour, label, dash) in enumerate(_SERIES):
        y = _TOP + 8 + i * 18
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{_LEFT + 12}" y1="{y}" x2="{_LEFT + 42}" y2="{y}" '
                   f'stroke="{colour}" stroke-width="2"{dashed}/>')  # fmt: skip
        out.append(f'<text x="{_LEFT + 48}" y="{y + 4}">{label}</text>')
    return out


def render(day: Day) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2:.0f}" y="20" text-anchor="middle" font-size="14">Simulated holiday '
        "at a mountain scenic area without exit readers</text>",
        *_axes(),
    ]
    parts += [_line(getattr(day, name), colour, dash) for name, colour, _, dash in _SERIES]
    parts += _legend()
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def summary(day: Day) -> str:
    errors = [e - t for e, t in zip(day.estimate, day.true_inside, strict=True)]
    worst = max(range(len(errors)), key=lambda m: abs(errors[m]))
    peak_true = max(day.true_inside)
    peak_est = max(day.estimate)
    full_at = next((m for m, c in enumerate(day.counted) if c >= INSTANT_CAPACITY), None)
    lines = [
        f"entries: {sum(day.entries):,}",
        f"true peak inside: {peak_true:,} at {_hhmm(day.true_inside.index(peak_true))}",
        f"estimated peak: {peak_est:,} at {_hhmm(day.estimate.index(peak_est))}",
        f"largest error: {errors[worst]:+,} at {_hhmm(worst)} "
        f"({abs(errors[worst]) / INSTANT_CAPACITY:.1%} of capacity)",
        "entries minus exits reaches capacity (FULL for the rest of the day) at "
        + (_hhmm(full_at) if full_at is not None else "never"),
    ]
    return "\n".join(lines)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="SVG file to write")
    args = parser.parse_args(argv)
    day = simulate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(day))
    print(summary(day))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
