"""Arrival-rate profiles: the offered rate (scans per second, all workers together) over a run.

A profile is piecewise linear in time; a repeated time point makes a step. The generator is open
loop: arrivals follow the profile whatever the server does, so a slow server shows up as latency
(measured from each arrival's intended time), never as a politely lower rate.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

PROFILES = ("holiday-peak", "flat", "step")


@dataclass(frozen=True)
class Step:
    """One stair of the step profile: [start_s, end_s) at `rate`."""

    start_s: float
    end_s: float
    rate: float


@dataclass(frozen=True)
class RateProfile:
    name: str
    # (t_s, rate_per_s) corners, t non-decreasing, first t = 0, last t = duration.
    points: tuple[tuple[float, float], ...]
    steps: tuple[Step, ...] = field(default=())

    def __post_init__(self) -> None:
        times = [t for t, _ in self.points]
        if len(self.points) < 2 or times[0] != 0 or times != sorted(times):
            raise ValueError(f"profile {self.name}: corners must start at 0 and not go back")
        if any(r < 0 for _, r in self.points):
            raise ValueError(f"profile {self.name}: a rate is negative")
        object.__setattr__(self, "_times", times)

    @property
    def duration_s(self) -> float:
        return self.points[-1][0]

    @property
    def peak(self) -> float:
        return max(r for _, r in self.points)

    def rate_at(self, t: float) -> float:
        if t < 0 or t >= self.duration_s:
            return 0.0
        i = bisect.bisect_right(self._times, t) - 1  # type: ignore[attr-defined]
        (t0, r0), (t1, r1) = self.points[i], self.points[i + 1]
        if t1 <= t0:
            return r1
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def expected(self, t0: float = 0.0, t1: float | None = None) -> float:
        """Expected arrivals in [t0, t1): the integral of the rate (trapezoids per segment)."""
        end = self.duration_s if t1 is None else min(t1, self.duration_s)
        total = 0.0
        for (a, ra), (b, rb) in zip(self.points, self.points[1:], strict=False):
            lo, hi = max(a, t0), min(b, end)
            if hi > lo and b > a:
                total += (hi - lo) * (_rate_on(a, ra, b, rb, lo) + _rate_on(a, ra, b, rb, hi)) / 2
        return total


def _rate_on(a: float, ra: float, b: float, rb: float, t: float) -> float:
    return ra + (rb - ra) * (t - a) / (b - a)


def holiday_peak(peak: float, duration_s: float) -> RateProfile:
    """A holiday morning compressed into `duration_s`: gates open to a trickle, the ramp to the
    10 o'clock peak, the hold, then the tail as the day's arrivals thin out."""
    d = duration_s
    points = (
        (0.0, 0.10 * peak),
        (0.15 * d, 0.35 * peak),
        (0.35 * d, peak),
        (0.75 * d, peak),
        (d, 0.40 * peak),
    )
    return RateProfile("holiday-peak", points)


def flat(rate: float, duration_s: float) -> RateProfile:
    return RateProfile("flat", ((0.0, rate), (duration_s, rate)))


def step(start: float, factor: float, step_s: float, max_steps: int) -> RateProfile:
    """Stairs from `start`, x`factor` every `step_s` seconds, at most `max_steps` of them; the run
    stops early at the first stair whose p99 exceeds the objective (see runner)."""
    if factor <= 1 or step_s <= 0 or max_steps < 1:
        raise ValueError("step profile needs factor > 1, step seconds > 0 and at least one step")
    steps = tuple(Step(i * step_s, (i + 1) * step_s, start * factor**i) for i in range(max_steps))
    points: list[tuple[float, float]] = []
    for s in steps:
        points += [(s.start_s, s.rate), (s.end_s, s.rate)]
    return RateProfile("step", tuple(points), steps)


def build(name: str, rate: float, duration_s: float, step_s: float, factor: float) -> RateProfile:
    if name == "holiday-peak":
        return holiday_peak(rate, duration_s)
    if name == "flat":
        return flat(rate, duration_s)
    if name == "step":
        return step(rate, factor, step_s, max(1, int(duration_s // step_s)))
    raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
