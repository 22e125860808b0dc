"""core/config.py and actors/config_files.py: the sample province loads; every bad config names the
file, the key and the problem."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from actors.config_files import DEFAULT_CONFIG_DIR, load_demo_passes, load_province
from core.config import QR_KEYS_FILE, ConfigError, parse_demo_passes, parse_province
from core.models import (
    UNLIMITED,
    AlertThresholds,
    CredentialKind,
    CreditTier,
    PassbackMode,
    PassStatus,
    Province,
    QrPolicy,
    StayModel,
)

PROVINCE = """\
name = "Test province"
default_timezone = "Asia/Shanghai"
peak_days = ["2026-10-01..2026-10-07", 2026-02-17]
"""

VENUES = """\
[[venue]]
id = "lake"
name = "Lake"
city = "Hangzhou"
kind = "scenic_area"
hours = "08:00-17:00"
instant_capacity = 100
daily_capacity = 1000
anti_passback = { mode = "hard", minutes = 60 }
gate_count = 2

[[venue]]
id = "museum"
name = "Museum"
city = "Ningbo"
kind = "museum"
hours = ["09:00-12:00", "13:00-17:00"]
closed_weekdays = ["mon"]
weekday_hours = { sat = "09:00-19:00" }
instant_capacity = 50
daily_capacity = 400
gates = ["museum-north"]
reservation_required = true
slots = [
  { id = "am", start = "09:00", end = "11:00", capacity = 200 },
  { id = "pm", start = "13:00", end = "15:00", capacity = 200 },
]
"""

PRODUCTS = """\
[[product]]
id = "annual"
name = "Annual"
price_yuan = 399

[product.default]
entries_per_day = 1

[[product.cover]]
all = true

[[product.cover]]
kinds = ["museum"]
reservation_required = true
entries_per_period = 3

[[product]]
id = "credit"
name = "Credit"

[product.credit]
debt_limit_yuan = 500
first_visit_free_groups = ["trusted_person"]

[[product.cover]]
venues = ["lake"]
pay_later_price_yuan = 75.5
"""

BASE = {"province.toml": PROVINCE, "venues.toml": VENUES, "products.toml": PRODUCTS}


def _parse(texts: dict[str, str]) -> Province:
    return parse_province(texts, ZoneInfo)


def _edit(file: str, old: str, new: str) -> dict[str, str]:
    texts = dict(BASE)
    assert old in texts[file], f"test bug: {old!r} not in {file}"
    texts[file] = texts[file].replace(old, new, 1)
    return texts


# ---------------------------------------------------------------------------------------------
# The shipped sample province


@pytest.fixture(scope="module")
def sample() -> Province:
    return load_province(DEFAULT_CONFIG_DIR)


def test_sample_province_meets_the_counts(sample: Province) -> None:
    assert len(sample.venues) >= 30
    assert len({v.city for v in sample.venues.values()}) >= 5
    assert {"resident-card", "digital-tourism-card", "city-pass", "credit-pass"} <= set(
        sample.products
    )
    assert {v.kind for v in sample.venues.values()} == {
        "scenic_area",
        "museum",
        "library",
        "gallery",
        "zoo",
    }
    assert all(v.gates for v in sample.venues.values())


def test_sample_products_match_the_programmes(sample: Province) -> None:
    resident = sample.products["resident-card"]
    reserved = [vid for vid, rule in resident.venues.items() if rule.reservation_required]
    assert reserved and all(sample.venues[vid].kind == "museum" for vid in reserved)
    assert any(sample.venues[vid].kind == "library" for vid in resident.venues)

    annual = sample.products["digital-tourism-card"]
    assert annual.price_fen == 399_00
    periods = [rule.entries_per_period for rule in annual.venues.values()]
    assert periods.count(UNLIMITED) > len(periods) / 2
    assert {p for p in periods if p != UNLIMITED} <= {1, 2, 3}

    city = sample.products["city-pass"]
    assert {sample.venues[vid].city for vid in city.venues} == {"Hangzhou"}
    assert ((6 * 60, 9 * 60), (16 * 60, 18 * 60 + 30)) in [
        rule.peak_windows for rule in city.venues.values()
    ]

    credit = sample.products["credit-pass"]
    assert credit.credit is not None
    assert credit.credit.pay_later_tiers == frozenset({CreditTier.GOOD})
    assert credit.credit.debt_limit_fen == 500_00
    assert credit.credit.first_visit_free_groups == frozenset({"trusted_person"})
    assert all(rule.pay_later_price_fen > 0 for rule in credit.venues.values())
    assert sum(sample.venues[vid].state_owned for vid in credit.venues) >= 3


def test_sample_venues_are_realistic(sample: Province) -> None:
    museum = sample.venues["hz-zj-museum"]
    assert museum.reservation_required and museum.opening[0] == ()
    assert all(s.end_min - s.start_min == 120 for s in museum.slots)
    scenic = [v for v in sample.venues.values() if v.kind == "scenic_area"]
    assert all(v.anti_passback.mode is PassbackMode.HARD for v in scenic)
    assert all(30 <= v.anti_passback.minutes <= 120 for v in scenic)
    assert max(v.instant_capacity for v in scenic) >= 10_000
    libraries = [v for v in sample.venues.values() if v.kind == "library"]
    assert any(v.anti_passback.mode is PassbackMode.SOFT for v in libraries)


def test_sample_peak_days_cover_the_2026_holidays(sample: Province) -> None:
    for day in ("2026-01-01", "2026-02-17", "2026-04-05", "2026-05-03", "2026-10-07"):
        assert date.fromisoformat(day).toordinal() in sample.peak_days
    assert date(2026, 10, 8).toordinal() not in sample.peak_days


def test_sample_demo_passes_parse(sample: Province) -> None:
    demo = {p.pass_id: p for p in load_demo_passes(DEFAULT_CONFIG_DIR, sample)}
    assert len(demo) >= 10
    credentials = {value for p in demo.values() for _, value in p.credentials}
    for value in ("DEMO-CARD-RESIDENT", "DEMO-QR-ANNUAL", "DEMO-QR-CITYPASS"):
        assert value in credentials
    assert demo["DEMO-CREDIT-GOOD"].credit_tier is CreditTier.GOOD
    assert demo["DEMO-CREDIT-POOR"].credit_tier is CreditTier.POOR
    assert demo["DEMO-TRUSTED"].groups == frozenset({"trusted_person"})
    assert demo["DEMO-REVOKED"].status is PassStatus.REVOKED
    assert demo["DEMO-BLOCKED"].status is PassStatus.BLOCKED
    assert demo["DEMO-EXPIRED"].valid_until < date(2026, 1, 1).toordinal()
    assert demo["DEMO-NOT-YET-VALID"].valid_from > date(2027, 12, 31).toordinal()
    assert {p.product_id for p in demo.values()} <= set(sample.products)


# ---------------------------------------------------------------------------------------------
# The small base config: what the format means


def test_base_config_parses_with_defaults() -> None:
    province = _parse(BASE)
    assert province.default_tz == "Asia/Shanghai"
    assert len(province.peak_days) == 8
    lake, museum = province.venues["lake"], province.venues["museum"]
    assert lake.gates == frozenset({"lake-g01", "lake-g02"})
    assert lake.opening == (((480, 1020),),) * 7
    assert lake.alerts == AlertThresholds()
    assert lake.tz_name == "Asia/Shanghai"
    assert museum.opening[0] == ()
    assert museum.opening[1] == ((540, 720), (780, 1020))
    assert museum.opening[5] == ((540, 1140),)
    assert [s.slot_id for s in museum.slots] == ["am", "pm"]
    assert museum.anti_passback.mode is PassbackMode.NONE


def test_product_rules_overlay_default_then_groups() -> None:
    province = _parse(BASE)
    annual = province.products["annual"].venues
    assert annual["lake"].entries_per_day == 1
    assert annual["lake"].entries_per_period == UNLIMITED
    assert not annual["lake"].reservation_required
    assert annual["museum"].reservation_required
    assert annual["museum"].entries_per_period == 3
    assert annual["museum"].entries_per_day == 1
    credit = province.products["credit"]
    assert set(credit.venues) == {"lake"}
    assert credit.venues["lake"].pay_later_price_fen == 7550
    assert credit.credit is not None and credit.credit.debt_limit_fen == 50000


def test_error_str_names_file_key_and_problem() -> None:
    err = ConfigError("venues.toml", 'venue "lake".hours', "bad time '25:00'")
    assert str(err) == "venues.toml: venue \"lake\".hours: bad time '25:00'"
    assert str(ConfigError("products.toml", "", "file is missing")) == (
        "products.toml: file is missing"
    )


# ---------------------------------------------------------------------------------------------
# Bad configs: (case, file, old, new, key, problem fragment)

V, P, PR = "venues.toml", "products.toml", "province.toml"
BAD = [
    (
        "syntax error", V,
        "instant_capacity = 100", "instant_capacity = = 100",
        "line 7, column", "Invalid value",
    ),
    (
        "unknown key", V,
        "instant_capacity = 100", "instant_capacity = 100\ninstant_capcity = 5",
        'venue "lake".instant_capcity', "did you mean 'instant_capacity'",
    ),
    (
        "negative capacity", V,
        "instant_capacity = 100", "instant_capacity = -5",
        'venue "lake".instant_capacity', "at least 1",
    ),
    (
        "zero capacity", V,
        "daily_capacity = 1000", "daily_capacity = 0",
        'venue "lake".daily_capacity', "at least 1",
    ),
    (
        "instant above daily", V,
        "instant_capacity = 100", "instant_capacity = 5000",
        'venue "lake".instant_capacity', "exceeds daily_capacity 1000",
    ),
    (
        "wrong type", V,
        "daily_capacity = 1000", 'daily_capacity = "1000"',
        'venue "lake".daily_capacity', "expected an integer, got a string",
    ),
    (
        "bad time", V,
        'hours = "08:00-17:00"', 'hours = "08:00-25:00"',
        'venue "lake".hours', "bad time '25:00'",
    ),
    (
        "backwards range", V,
        'hours = "08:00-17:00"', 'hours = "17:00-08:00"',
        'venue "lake".hours', "ends before it starts",
    ),
    (
        "overlapping hours", V,
        '"09:00-12:00", "13:00-17:00"', '"09:00-14:00", "13:00-17:00"',
        'venue "museum".hours', "overlap",
    ),
    (
        "overlapping slots", V,
        'id = "pm", start = "13:00"', 'id = "pm", start = "10:00"',
        'venue "museum".slots[1]', "overlaps slot 'am'",
    ),
    (
        "slot outside hours", V,
        'id = "am", start = "09:00"', 'id = "am", start = "08:00"',
        'venue "museum".slots[0].start', "outside the opening hours",
    ),
    (
        "slot sum over daily", V,
        "daily_capacity = 400", "daily_capacity = 300",
        'venue "museum".slots', "sum to 400, more than daily_capacity 300",
    ),
    (
        "unknown venue timezone", V,
        'city = "Ningbo"', 'city = "Ningbo"\ntimezone = "Asia/Shangai"',
        'venue "museum".timezone', "unknown time zone 'Asia/Shangai'",
    ),
    (
        "unknown default timezone", PR,
        '"Asia/Shanghai"', '"Mars/Olympus"',
        "default_timezone", "unknown time zone 'Mars/Olympus'",
    ),
    (
        "duplicate venue id", V,
        'id = "museum"', 'id = "lake"',
        'venue "lake".id', "duplicate venue id 'lake'",
    ),
    (
        "bad id falls back to index", V,
        'id = "museum"', 'id = "the museum!"',
        "venue[1].id", "bad id",
    ),
    (
        "bad anti-passback mode", V,
        'mode = "hard"', 'mode = "strict"',
        'venue "lake".anti_passback.mode', "unknown mode 'strict'",
    ),
    (
        "bad alert order", V,
        "gate_count = 2", "gate_count = 2\nalerts = { yellow = 90, orange = 85, red = 95 }",
        'venue "lake".alerts.orange', "must be above yellow (90)",
    ),
    (
        "alert over 100", V,
        "gate_count = 2", "gate_count = 2\nalerts = { red = 101 }",
        'venue "lake".alerts.red', "at most 100",
    ),
    (
        "empty gates", V,
        'gates = ["museum-north"]', "gates = []",
        'venue "museum".gates', "at least one gate",
    ),
    (
        "gate of another venue", V,
        'gates = ["museum-north"]', 'gates = ["lake-g01"]',
        'venue "museum".gates', "already belongs to venue 'lake'",
    ),
    (
        "unknown weekday", V,
        'closed_weekdays = ["mon"]', 'closed_weekdays = ["monday"]',
        'venue "museum".closed_weekdays[0]', "unknown weekday 'monday'",
    ),
    (
        "unknown kind", V,
        'kind = "museum"', 'kind = "aquarium"',
        'venue "museum".kind', "unknown kind 'aquarium'",
    ),
    (
        "missing key", V,
        'name = "Lake"\n', "",
        'venue "lake".name', "missing",
    ),
    (
        "reservation without slots", V,
        "gate_count = 2", "gate_count = 2\nreservation_required = true",
        'venue "lake".reservation_required', "needs reservation slots",
    ),
    (
        "unknown venue in product", P,
        'venues = ["lake"]', 'venues = ["lakee"]',
        'product "credit".cover[0].venues[0]', "unknown venue 'lakee' (did you mean 'lake'?)",
    ),
    (
        "unknown city in product", P,
        "all = true", 'cities = ["Hangzou"]',
        'product "annual".cover[0].cities[0]', "unknown city 'Hangzou'",
    ),
    (
        "duplicate product id", P,
        'id = "credit"', 'id = "annual"',
        'product "annual".id', "duplicate product id 'annual'",
    ),
    (
        "pay later without credit", P,
        "entries_per_day = 1", "entries_per_day = 1\npay_later_price_yuan = 10",
        'product "annual".default.pay_later_price_yuan', "needs a [product.credit]",
    ),
    (
        "product reservation without slots", P,
        "all = true", "all = true\nreservation_required = true",
        'product "annual".cover[0].reservation_required', "venue 'lake' has no reservation slots",
    ),
    (
        "bad entries", P,
        "entries_per_period = 3", "entries_per_period = 0",
        'product "annual".cover[1].entries_per_period', "at least 1",
    ),
    (
        "fen precision", P,
        "75.5", "75.555",
        'product "credit".cover[0].pay_later_price_yuan', "more than two decimals",
    ),
    (
        "unknown tier", P,
        "debt_limit_yuan = 500", 'debt_limit_yuan = 500\npay_later_tiers = ["EXCELLENT"]',
        'product "credit".credit.pay_later_tiers[0]', "unknown tier 'EXCELLENT'",
    ),
    (
        "bad peak day", PR,
        '"2026-10-01..2026-10-07"', '"2026-13-01"',
        "peak_days[0]", "bad date '2026-13-01'",
    ),
    (
        "backwards peak range", PR,
        '"2026-10-01..2026-10-07"', '"2026-10-07..2026-10-01"',
        "peak_days[0]", "ends before it starts",
    ),
    (
        "no decision log", PR,
        "peak_days = [", "decision_log_days = 0\npeak_days = [",
        "decision_log_days", "at least 1",
    ),
    (
        "decision log kept as text", PR,
        "peak_days = [", 'decision_log_days = "90"\npeak_days = [',
        "decision_log_days", "expected an integer",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "file", "old", "new", "key", "fragment"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_config_names_file_key_and_problem(
    case: str, file: str, old: str, new: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(_edit(file, old, new))
    err = info.value
    assert err.file == file, str(err)
    assert err.key.startswith(key), str(err)
    assert fragment in err.problem, str(err)
    assert str(err).startswith(f"{file}: {err.key}: ")


def test_syntax_error_reports_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        _parse(_edit(V, "instant_capacity = 100", "instant_capacity = = 100"))
    assert info.value.line == 7
    assert "line 7" in str(info.value)


def test_syntax_error_at_end_of_document_still_names_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        _parse({**BASE, PR: 'name = "unterminated'})
    assert info.value.file == PR
    assert info.value.line == 1 and "line 1" in info.value.key


def test_missing_text_names_the_file() -> None:
    texts = dict(BASE)
    del texts[P]
    with pytest.raises(ConfigError) as info:
        _parse(texts)
    assert info.value.file == P


# ---------------------------------------------------------------------------------------------
# Files on disk


def test_load_province_missing_file_names_it(tmp_path: Path) -> None:
    for name, text in BASE.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert set(load_province(tmp_path).venues) == {"lake", "museum"}
    (tmp_path / V).unlink()
    with pytest.raises(ConfigError) as info:
        load_province(tmp_path)
    assert info.value.file == V and "not found" in info.value.problem


def test_demo_passes_are_optional(tmp_path: Path) -> None:
    assert load_demo_passes(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# demo_passes.toml

DEMO = """\
[[pass]]
id = "D1"
product = "annual"
card = "CARD-1"
qr = ["QR-1", "QR-1B"]
valid_from = 2026-01-01
valid_until = "2027-12-31"
status = "revoked"
credit_tier = "good"
groups = ["trusted_person"]
debt_yuan = 12.5
"""


def test_demo_pass_fields() -> None:
    (record,) = parse_demo_passes(DEMO, _parse(BASE))
    assert record.credentials == (
        (CredentialKind.CARD, "CARD-1"),
        (CredentialKind.QR, "QR-1"),
        (CredentialKind.QR, "QR-1B"),
    )
    assert record.valid_from == date(2026, 1, 1).toordinal()
    assert record.valid_until == date(2027, 12, 31).toordinal()
    assert record.status is PassStatus.REVOKED
    assert record.credit_tier is CreditTier.GOOD
    assert record.outstanding_debt_fen == 1250


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        ('product = "annual"', 'product = "anual"', 'pass "D1".product', "did you mean 'annual'"),
        ('status = "revoked"', 'status = "lost"', 'pass "D1".status', "unknown status 'lost'"),
        ("valid_from = 2026-01-01", "valid_from = 2028-01-01", 'pass "D1".valid_until', "before"),
        (
            'card = "CARD-1"\nqr = ["QR-1", "QR-1B"]\n',
            "",
            'pass "D1".card',
            "at least one credential",
        ),
    ],
)
def test_bad_demo_pass(old: str, new: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_demo_passes(DEMO.replace(old, new, 1), _parse(BASE))
    assert info.value.file == "demo_passes.toml"
    assert info.value.key == key, str(info.value)
    assert fragment in info.value.problem, str(info.value)


def test_demo_credential_belongs_to_one_pass() -> None:
    with pytest.raises(ConfigError) as info:
        parse_demo_passes(DEMO + DEMO.replace('"D1"', '"D2"'))
    assert info.value.key == 'pass "D2".card'
    assert "already belongs to 'D1'" in info.value.problem


# ---------------------------------------------------------------------------------------------
# QR codes: the product policy and qr_keys.toml

KEY_B64 = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # RFC 8032 test 1 public key, base64url
KEY_RAW = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def test_qr_policy_defaults_and_overrides() -> None:
    province = _parse(BASE)
    assert province.products["annual"].qr == QrPolicy(30, 1, True)
    assert province.qr_keys == {}
    texts = _edit(
        P, "price_yuan = 399\n", "price_yuan = 399\nqr = { step_seconds = 60, static = false }\n"
    )
    assert _parse(texts).products["annual"].qr == QrPolicy(60, 1, False)


def test_sample_products_accept_the_static_demo_codes(sample: Province) -> None:
    assert all(product.qr.static for product in sample.products.values())


QR_BAD = [
    ("qr = { step_seconds = 1 }", "qr.step_seconds", "at least 5"),
    ("qr = { step_seconds = 3600 }", "qr.step_seconds", "at most 600"),
    ("qr = { skew_steps = 9 }", "qr.skew_steps", "at most 5"),
    ('qr = { static = "yes" }', "qr.static", "true or false"),
    ("qr = { step_secs = 30 }", "qr.step_secs", "did you mean 'step_seconds'"),
]


@pytest.mark.parametrize(("line", "key", "fragment"), QR_BAD, ids=[b[1] + b[2] for b in QR_BAD])
def test_bad_qr_policy_names_the_key(line: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(_edit(P, "price_yuan = 399\n", f"price_yuan = 399\n{line}\n"))
    assert info.value.file == P
    assert info.value.key == f'product "annual".{key}', str(info.value)
    assert fragment in info.value.problem, str(info.value)


def test_qr_keys_parse_base64_in_either_alphabet() -> None:
    std = KEY_B64.replace("-", "+").replace("_", "/") + "="
    text = (
        f'[[key]]\nid = "app-1"\npublic_key = "{KEY_B64}"\nnote = "issuing app"\n\n'
        f'[[key]]\nid = "app-2"\npublic_key = "{std}"\n'
    )
    province = _parse({**BASE, QR_KEYS_FILE: text})
    assert province.qr_keys == {"app-1": KEY_RAW, "app-2": KEY_RAW}


QR_KEYS_BAD = [
    (f'[[key]]\nid = "a b"\npublic_key = "{KEY_B64}"\n', "key[0].id", "bad key id"),
    ('[[key]]\nid = "k1"\npublic_key = "c2hvcnQ"\n', 'key "k1".public_key', "32-byte"),
    ('[[key]]\nid = "k1"\npublic_key = "!!"\n', 'key "k1".public_key', "32-byte"),
    (f'[[key]]\nid = "k1"\npublic_key = "{KEY_B64}"\nkind = 1\n', 'key "k1".kind', "unknown key"),
    (
        f'[[key]]\nid = "k1"\npublic_key = "{KEY_B64}"\n[[key]]\nid = "k1"\n'
        f'public_key = "{KEY_B64}"\n',
        'key "k1".id',
        "duplicate key id",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), QR_KEYS_BAD, ids=[b[2] for b in QR_KEYS_BAD])
def test_bad_qr_keys_name_the_key(text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse({**BASE, QR_KEYS_FILE: text})
    assert info.value.file == QR_KEYS_FILE
    assert info.value.key == key, str(info.value)
    assert fragment in info.value.problem, str(info.value)


def test_qr_keys_file_is_optional_on_disk(tmp_path: Path) -> None:
    for name, text in BASE.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert load_province(tmp_path).qr_keys == {}
    (tmp_path / QR_KEYS_FILE).write_text(f'[[key]]\nid = "k1"\npublic_key = "{KEY_B64}"\n')
    assert load_province(tmp_path).qr_keys == {"k1": KEY_RAW}


# ---------------------------------------------------------------------------------------------
# Venues without exit readers: estimated occupancy

_LAKE_ANCHOR = 'anti_passback = { mode = "hard", minutes = 60 }'


def _lake_with(lines: str) -> dict[str, str]:
    return _edit(V, _LAKE_ANCHOR, f"{_LAKE_ANCHOR}\n{lines}")


def test_venues_count_occupancy_unless_they_say_otherwise() -> None:
    province = _parse(BASE)
    assert {v.stay_model for v in province.venues.values()} == {None}
    lake = _parse(_lake_with("exit_readers = true")).venues["lake"]
    assert lake.stay_model is None


def test_a_venue_without_exit_readers_gets_a_stay_model() -> None:
    lines = 'exit_readers = false\ntypical_stay_minutes = 150\neveryone_out_at = "17:30"'
    lake = _parse(_lake_with(lines)).venues["lake"]
    assert lake.stay_model == StayModel(150, 17 * 60 + 30)
    plain = _parse(_lake_with("exit_readers = false\ntypical_stay_minutes = 90")).venues["lake"]
    assert plain.stay_model == StayModel(90, None)


def test_sample_mountain_areas_estimate_occupancy(sample: Province) -> None:
    estimated = {vid for vid, v in sample.venues.items() if v.stay_model is not None}
    assert {"wz-yandang", "huz-moganshan"} <= estimated
    assert len(estimated) < len(sample.venues)


_NO_EXITS = "exit_readers = false\ntypical_stay_minutes = 150"
STAY_BAD = [
    ("stay with exit readers", "typical_stay_minutes = 150",
     "typical_stay_minutes", "only for venues without exit readers"),
    ("everyone out with exit readers", 'exit_readers = true\neveryone_out_at = "18:00"',
     "everyone_out_at", "only for venues without exit readers"),
    ("no typical stay", "exit_readers = false",
     "typical_stay_minutes", "missing"),
    ("stay too short", "exit_readers = false\ntypical_stay_minutes = 5",
     "typical_stay_minutes", "at least 10"),
    ("stay too long", "exit_readers = false\ntypical_stay_minutes = 400",
     "typical_stay_minutes", "at most 360"),
    ("stay as text", 'exit_readers = false\ntypical_stay_minutes = "150"',
     "typical_stay_minutes", "expected an integer"),
    ("exit readers as text", 'exit_readers = "no"',
     "exit_readers", "expected true or false"),
    ("bad everyone out", f'{_NO_EXITS}\neveryone_out_at = "25:00"',
     "everyone_out_at", "bad time '25:00'"),
    ("everyone out at midnight", f'{_NO_EXITS}\neveryone_out_at = "24:00"',
     "everyone_out_at", "before 24:00"),
    ("everyone out before opening", f'{_NO_EXITS}\neveryone_out_at = "07:00"',
     "everyone_out_at", "before the venue opens"),
    ("estimate over midnight", f"{_NO_EXITS}\ncarry_occupancy = true",
     "carry_occupancy", "cannot be true without exit readers"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "lines", "key", "fragment"), STAY_BAD, ids=[b[0] for b in STAY_BAD]
)
def test_bad_stay_model_names_file_key_and_problem(
    case: str, lines: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(_lake_with(lines))
    err = info.value
    assert (err.file, err.key) == (V, f'venue "lake".{key}'), str(err)
    assert fragment in err.problem, str(err)
