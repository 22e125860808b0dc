"""The stay model behind estimated occupancy at venues without exit readers.

A venue whose visitors leave without scanning cannot count who is inside. Its occupancy is then
estimated from the entries of the last hours and how long visitors stay:

    estimated inside at minute n = sum over entry minutes m <= n of entries(m) * S(n - m)

where S(t) is the share of visitors still inside t minutes after entering (the survival function
of the stay). Stays are log-normal with median = the venue's typical stay and a fixed spread
(`STAY_SIGMA`): half the visitors leave between 0.71x and 1.40x the typical stay, nine in ten
between 0.44x and 2.28x. S is cut to 0 after `TRUNCATE_STAYS` typical stays (0.3 % of visitors are
left then), so a long-gone morning crowd stops counting. At a venue's optional "everyone out" time
the estimate drops to 0: entries before it no longer count.

Pure: the numba counters (`core.counters`) evaluate the sum on the live per-minute entries with a
table from `survival_table`; `estimate` here is the same sum in plain Python, for tests, the plot
script and anyone checking a figure by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

# Spread of log(stay): 0.5 gives a coefficient of variation of about 0.53.
STAY_SIGMA = 0.5
# S(t) = 0 from this many typical stays on.
TRUNCATE_STAYS = 4
MIN_TYPICAL_STAY_MIN = 10
# Four typical stays must fit in one local day: the counters keep one day of entry minutes.
MAX_TYPICAL_STAY_MIN = 360


def survival(age_min: float, typical_stay_min: float) -> float:
    """Share of visitors still inside `age_min` minutes after their entry."""
    if typical_stay_min <= 0:
        raise ValueError(f"typical stay must be positive, got {typical_stay_min}")
    if age_min <= 0:
        return 1.0
    if age_min >= TRUNCATE_STAYS * typical_stay_min:
        return 0.0
    z = math.log(age_min / typical_stay_min) / (STAY_SIGMA * math.sqrt(2.0))
    return 0.5 * math.erfc(z)


@lru_cache(maxsize=64)
def _table(typical_stay_min: int, width: int) -> tuple[float, ...]:
    return tuple(survival(age, typical_stay_min) for age in range(width))


def survival_table(typical_stay_min: int, width: int) -> npt.NDArray[np.float64]:
    """S(0), S(1), ... S(width - 1) for whole-minute ages: entries of the current minute count
    in full (S(0) = 1), so an admission is in the estimate at once."""
    return np.array(_table(typical_stay_min, width), dtype=np.float64)


def estimate(
    entries: Sequence[int], minute: int, typical_stay_min: int, everyone_out_min: int | None = None
) -> float:
    """Estimated people inside at `minute` of the day from `entries[m]` (entries in minute m).

    When `everyone_out_min` is given and `minute` is at or past it, entries before it are gone.
    """
    first = 0
    if everyone_out_min is not None and minute >= everyone_out_min:
        first = everyone_out_min
    last = min(minute, len(entries) - 1)
    return sum(entries[m] * survival(minute - m, typical_stay_min) for m in range(first, last + 1))


def rounded(value: float) -> int:
    """The whole number of people reported and checked against capacity (half rounds up)."""
    return math.floor(value + 0.5)


__all__ = [
    "MAX_TYPICAL_STAY_MIN",
    "MIN_TYPICAL_STAY_MIN",
    "STAY_SIGMA",
    "TRUNCATE_STAYS",
    "estimate",
    "rounded",
    "survival",
    "survival_table",
]
