"""core/travel.py (distances, the shared-card rule, the judged outcome) and the shared-card keys of
core/config.py (venue locations, travel speed, product policy) with the errors they raise."""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

import pytest

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from core.config import ConfigError, parse_province
from core.models import UNLIMITED, Decision, Outcome, Province, Reason, SharedCardPolicy, Usage
from core.travel import (
    EARTH_RADIUS_KM,
    Suspicion,
    describe,
    distance_km,
    horizon_ms,
    judge,
    suspect,
    travel_ms,
)

MIN = 60_000
HOUR = 60 * MIN
NOW = 1_790_000_000_000
ONE_DEGREE_KM = 2 * math.pi * EARTH_RADIUS_KM / 360  # 111.195 km along a meridian
HANGZHOU = (30.2741, 120.1551)
A, B = (30.0, 120.0), (31.0, 120.0)  # one degree of latitude apart


# -- distances ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((0.0, 0.0), (1.0, 0.0), ONE_DEGREE_KM),  # along a meridian
        ((0.0, 0.0), (0.0, 1.0), ONE_DEGREE_KM),  # along the equator
        ((60.0, 10.0), (60.0, 11.0), ONE_DEGREE_KM * 0.5),  # 1 degree of longitude at 60 N
        ((90.0, 0.0), (-90.0, 0.0), math.pi * EARTH_RADIUS_KM),  # pole to pole
        ((0.0, 0.0), (0.0, 180.0), math.pi * EARTH_RADIUS_KM),  # antipodes
        ((0.0, 179.5), (0.0, -179.5), ONE_DEGREE_KM),  # across the date line
        (HANGZHOU, HANGZHOU, 0.0),
    ],
)
def test_haversine_distances(a: tuple[float, float], b: tuple[float, float], km: float) -> None:
    assert distance_km(a, b) == pytest.approx(km, rel=1e-3, abs=1e-6)
    assert distance_km(b, a) == pytest.approx(distance_km(a, b))


def test_haversine_matches_a_known_city_pair() -> None:
    # Beijing (Tiananmen) to Shanghai (People's Square): about 1,067 km great-circle.
    assert 1060 < distance_km((39.9042, 116.4074), (31.2304, 121.4737)) < 1075


def test_travel_time_scales_with_distance_and_speed() -> None:
    assert travel_ms(40.0, 60.0) == 40 * MIN
    assert travel_ms(40.0, 120.0) == 20 * MIN
    assert travel_ms(0.0, 60.0) == 0


def test_horizon_is_the_longest_travel_time_between_two_locations() -> None:
    far = (31.0, 120.0)
    assert horizon_ms([A, far, (30.5, 120.0)], 60.0) == travel_ms(distance_km(A, far), 60.0)
    assert horizon_ms([A], 60.0) == 0
    assert horizon_ms([], 60.0) == 0


# -- the rule -------------------------------------------------------------------------------------

# (last venue, its location, elapsed since, speed km/h, flagged?) for an entry at venue "b" at B,
# 111.2 km from A: 111.2 minutes at 60 km/h, 55.6 minutes at 120 km/h.
RULE_CASES = [
    ("a", A, 10 * MIN, 60.0, True),
    ("a", A, 111 * MIN, 60.0, True),
    ("a", A, 112 * MIN, 60.0, False),
    ("a", A, 3 * HOUR, 60.0, False),
    ("a", A, 50 * MIN, 120.0, True),
    ("a", A, 60 * MIN, 120.0, False),
    ("a", A, 0, 60.0, True),
    ("a", A, -5 * MIN, 60.0, True),  # stamped after now by another process's clock
    ("b", B, 0, 60.0, False),  # the same venue: anti-passback's business
    ("a2", B, 0, 60.0, False),  # another venue at the same place: nothing to travel
    ("near", (30.9999, 120.0), 1 * MIN, 60.0, False),  # 11 m away, a minute later
]


@pytest.mark.parametrize(("last", "where", "elapsed", "speed", "flagged"), RULE_CASES)
def test_rule(
    last: str, where: tuple[float, float], elapsed: int, speed: float, flagged: bool
) -> None:
    found = suspect(last, NOW - elapsed, where, "b", B, NOW, speed)
    assert (found is not None) is flagged
    if found is not None:
        assert (found.other_venue_id, found.other_at_ms) == (last, NOW - elapsed)
        assert found.elapsed_ms == max(0, elapsed)
        assert found.distance_km == pytest.approx(distance_km(where, B))


def test_exactly_the_travel_time_is_not_suspect() -> None:
    need = travel_ms(distance_km(A, B), 60.0)
    assert suspect("a", NOW - need, A, "b", B, NOW, 60.0) is None
    assert suspect("a", NOW - need + 1, A, "b", B, NOW, 60.0) is not None


@pytest.mark.parametrize(
    ("elapsed", "km", "text"),
    [
        (12 * MIN + 59_000, 39.87, "card seen at Lingyin 12 min ago, 40 km away"),
        (30_000, 2.34, "card seen at Lingyin under a minute ago, 2.3 km away"),
    ],
)
def test_describe(elapsed: int, km: float, text: str) -> None:
    found = suspect("a", NOW - elapsed, (0.0, 0.0), "b", (0.0, km / ONE_DEGREE_KM), NOW, 60.0)
    assert found is not None
    assert describe(found, "Lingyin") == text


# -- the judged outcome ---------------------------------------------------------------------------


def _admitted(remaining: int) -> Outcome:
    decision = Decision("r1", True, Reason.OK, "welcome", "P1", remaining, decided_at_ms=NOW)
    return Outcome(decision, Usage(entries=1, last_entry_ms=NOW, inside=True), entered=True)


def _found() -> Suspicion:
    found = suspect("a", NOW - 10 * MIN, A, "b", B, NOW, 60.0)
    assert found is not None
    return found


def test_flag_keeps_the_entry_and_marks_the_decision() -> None:
    admitted = _admitted(4)
    out = judge(admitted, _found(), SharedCardPolicy.FLAG, "seen elsewhere")
    assert out.decision.shared_card and out.decision.allowed
    assert out.decision.message == "welcome"
    assert (out.usage, out.entered) == (admitted.usage, True)


@pytest.mark.parametrize(("remaining", "after"), [(4, 5), (UNLIMITED, UNLIMITED)])
def test_refuse_changes_nothing_and_says_why(remaining: int, after: int) -> None:
    out = judge(_admitted(remaining), _found(), SharedCardPolicy.REFUSE, "seen elsewhere")
    d = out.decision
    assert (d.allowed, d.reason, d.message, d.shared_card) == (
        False,
        Reason.SHARED_CARD_SUSPECTED,
        "seen elsewhere",
        True,
    )
    assert (d.request_id, d.pass_id, d.remaining_entries) == ("r1", "P1", after)
    assert (out.usage, out.entered, d.pay_later, d.charge_fen) == (None, False, False, 0)


# -- configuration --------------------------------------------------------------------------------

PROVINCE = 'name = "T"\ndefault_timezone = "Asia/Shanghai"\n'
VENUE = """\
[[venue]]
id = "v"
name = "V"
city = "Hangzhou"
kind = "scenic_area"
hours = "08:00-17:00"
instant_capacity = 10
daily_capacity = 100
gate_count = 1
"""
PRODUCT = """\
[[product]]
id = "p"
name = "P"
{extra}
[[product.cover]]
all = true
"""


def _parse(province: str = PROVINCE, venue_extra: str = "", product_extra: str = "") -> Province:
    texts = {
        "province.toml": province,
        "venues.toml": VENUE + venue_extra,
        "products.toml": PRODUCT.format(extra=product_extra),
    }
    return parse_province(texts, ZoneInfo)


def test_config_defaults() -> None:
    province = _parse()
    assert province.travel_speed_kmh == 60.0
    assert province.venues["v"].location is None
    assert province.products["p"].shared_card is SharedCardPolicy.FLAG


def test_config_values() -> None:
    province = _parse(
        PROVINCE + "travel_speed_kmh = 80.5\n",
        "location = { lat = 30.2410, lon = 120 }\n",
        'shared_card = "refuse"\n',
    )
    assert province.travel_speed_kmh == 80.5
    assert province.venues["v"].location == (30.241, 120.0)
    assert province.products["p"].shared_card is SharedCardPolicy.REFUSE


@pytest.mark.parametrize(
    ("venue_extra", "key", "problem"),
    [
        ("location = { lat = 91, lon = 120 }\n", "location.lat", "between -90 and 90, got 91"),
        ("location = { lat = 30, lon = -181.5 }\n", "location.lon", "between -180 and 180"),
        ("location = { lat = 30 }\n", "location.lon", "missing"),
        ('location = { lat = "30N", lon = 120 }\n', "location.lat", "expected a number"),
        ("location = { lat = 30, lng = 120 }\n", "location.lng", "did you mean 'lon'"),
        ("location = [30, 120]\n", "location", "expected a table"),
        ("location = { lat = nan, lon = 120 }\n", "location.lat", "between -90 and 90"),
    ],
)
def test_bad_location_names_file_and_key(venue_extra: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(venue_extra=venue_extra)
    assert (err.value.file, err.value.key) == ("venues.toml", f'venue "v".{key}')
    assert problem in err.value.problem


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("travel_speed_kmh = 0", "must be above 0"),
        ("travel_speed_kmh = -5", "between 0 and 1000"),
        ("travel_speed_kmh = 5000", "between 0 and 1000"),
        ('travel_speed_kmh = "60"', "expected a number"),
    ],
)
def test_bad_travel_speed_names_file_and_key(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(PROVINCE + line + "\n")
    assert (err.value.file, err.value.key) == ("province.toml", "travel_speed_kmh")
    assert problem in err.value.problem


@pytest.mark.parametrize(
    ("line", "problem"),
    [('shared_card = "block"', "unknown policy 'block'"), ("shared_card = true", "a string")],
)
def test_bad_shared_card_policy_names_file_and_key(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(product_extra=line + "\n")
    assert (err.value.file, err.value.key) == ("products.toml", 'product "p".shared_card')
    assert problem in err.value.problem


def test_the_sample_province_locates_every_venue() -> None:
    province = load_province(DEFAULT_CONFIG_DIR)
    missing = sorted(v.venue_id for v in province.venues.values() if v.location is None)
    assert not missing
    # Zhejiang: every venue inside the province's bounding box.
    for venue in province.venues.values():
        assert venue.location is not None
        lat, lon = venue.location
        assert 27.0 < lat < 31.5 and 118.0 < lon < 123.0, venue.venue_id
