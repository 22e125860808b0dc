"""Parses and validates the province configuration: TOML text in, a `Province` out.

Pure: the caller reads the files and supplies the time-zone factory. Every problem surfaces as one
`ConfigError` naming the file, the key path (`venue "hz-lingyin".slots[1].start`) and what is wrong,
so an operator can fix the file without reading this code. The format is documented in
`config/README.md`.
"""

from __future__ import annotations

import binascii
import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any, NoReturn

from core.models import (
    UNLIMITED,
    AlertThresholds,
    AntiPassback,
    CredentialKind,
    CreditPolicy,
    CreditTier,
    PassbackMode,
    PassRecord,
    PassStatus,
    Product,
    Province,
    QrPolicy,
    SharedCardPolicy,
    Slot,
    StayModel,
    Venue,
    VenueRule,
)
from core.occupancy import MAX_TYPICAL_STAY_MIN, MIN_TYPICAL_STAY_MIN
from core.qr import KEY_ID_RE, PUBLIC_KEY_BYTES

PROVINCE_FILE = "province.toml"
VENUES_FILE = "venues.toml"
PRODUCTS_FILE = "products.toml"
DEMO_PASSES_FILE = "demo_passes.toml"
# Optional: public keys of signed-QR issuers (besides those in the credentials directory).
QR_KEYS_FILE = "qr_keys.toml"
CONFIG_FILES = (PROVINCE_FILE, VENUES_FILE, PRODUCTS_FILE)

VENUE_KINDS = ("scenic_area", "museum", "library", "gallery", "zoo")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RANGE_DAYS = 366
MAX_TOLERANCE_MIN = 240
MAX_PASSBACK_MIN = 24 * 60
# Signed QR codes: real apps refresh every 30-60 s; a window of minutes would invite replays.
MIN_QR_STEP_S, MAX_QR_STEP_S = 5, 600
MAX_QR_SKEW_STEPS = 5
# Shared-card detection (`core.travel`): straight-line km/h a holder can at most travel.
DEFAULT_TRAVEL_SPEED_KMH = 60.0
MAX_TRAVEL_SPEED_KMH = 1000.0
_SHARED_CARD_POLICIES = {"flag": SharedCardPolicy.FLAG, "refuse": SharedCardPolicy.REFUSE}

_PROVINCE_KEYS = frozenset(
    {"name", "default_timezone", "peak_days", "travel_speed_kmh", "decision_log_days"}
)
DEFAULT_DECISION_LOG_DAYS = 90
MAX_DECISION_LOG_DAYS = 3660
_VENUE_KEYS = frozenset(
    {
        "id",
        "name",
        "city",
        "kind",
        "timezone",
        "state_owned",
        "hours",
        "closed_weekdays",
        "weekday_hours",
        "closed_dates",
        "instant_capacity",
        "daily_capacity",
        "exit_readers",
        "typical_stay_minutes",
        "everyone_out_at",
        "anti_passback",
        "gates",
        "gate_count",
        "reservation_required",
        "slots",
        "allow_slot_overbooking",
        "reservation_tolerance",
        "alerts",
        "reservation_only_at_red",
        "carry_occupancy",
        "location",
    }
)
_PASSBACK_KEYS = frozenset({"mode", "minutes"})
_LOCATION_KEYS = frozenset({"lat", "lon"})
_SLOT_KEYS = frozenset({"id", "start", "end", "capacity"})
_TOLERANCE_KEYS = frozenset({"before", "after"})
_ALERT_KEYS = frozenset({"yellow", "orange", "red"})
_PRODUCT_KEYS = frozenset(
    {"id", "name", "price_yuan", "default", "cover", "exclude", "credit", "qr", "shared_card"}
)
_QR_POLICY_KEYS = frozenset({"step_seconds", "skew_steps", "static"})
_QR_KEY_KEYS = frozenset({"id", "public_key", "note"})
_RULE_KEYS = frozenset(
    {
        "entries_per_period",
        "entries_per_day",
        "reservation_required",
        "peak_windows",
        "pay_later_price_yuan",
    }
)
_SELECTOR_KEYS = frozenset({"venues", "cities", "kinds", "all"})
_CREDIT_KEYS = frozenset({"pay_later_tiers", "debt_limit_yuan", "first_visit_free_groups"})
_DEMO_KEYS = frozenset(
    {
        "id",
        "product",
        "card",
        "qr",
        "id_document",
        "valid_from",
        "valid_until",
        "status",
        "credit_tier",
        "groups",
        "debt_yuan",
        "note",
    }
)
_DEMO_CREDENTIALS = {
    "card": CredentialKind.CARD,
    "qr": CredentialKind.QR,
    "id_document": CredentialKind.ID,
}
_PASSBACK_MODES = {"none": PassbackMode.NONE, "soft": PassbackMode.SOFT, "hard": PassbackMode.HARD}

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME_RE = re.compile(r"(\d{2}):(\d{2})")
_SYNTAX_RE = re.compile(r"(?s)(.*?) \(at (line (\d+), column \d+|end of document)\)$")
_MISSING: Any = object()


class ConfigError(Exception):
    """A configuration problem: which file, which key (or line), and what is wrong."""

    def __init__(self, file: str, key: str, problem: str, line: int | None = None) -> None:
        super().__init__(file, key, problem)
        self.file = file
        self.key = key
        self.problem = problem
        self.line = line

    def __str__(self) -> str:
        if not self.key:
            return f"{self.file}: {self.problem}"
        return f"{self.file}: {self.key}: {self.problem}"


class _Invalid(ValueError):
    """A value-level problem; the caller attaches the file and key."""


# ---------------------------------------------------------------------------------------------
# Public entry points


def parse_province(texts: Mapping[str, str], tz_factory: Callable[[str], tzinfo]) -> Province:
    """Builds the validated `Province` from the texts of province/venues/products.toml (and of
    qr_keys.toml when `texts` has it)."""
    docs = {name: _load(name, texts) for name in CONFIG_FILES}
    zones = _Zones(tz_factory)
    root = _Table(PROVINCE_FILE, "", docs[PROVINCE_FILE], _PROVINCE_KEYS)
    name = root.text("name")
    default_tz = root.text("default_timezone")
    zones.get(default_tz, PROVINCE_FILE, "default_timezone")
    peak_days = _dates(root, "peak_days")
    venues = _parse_venues(docs[VENUES_FILE], default_tz, zones)
    products = _parse_products(docs[PRODUCTS_FILE], venues)
    qr_keys = parse_qr_keys(texts[QR_KEYS_FILE]) if QR_KEYS_FILE in texts else {}
    speed = _travel_speed(root)
    log_days = root.number(
        "decision_log_days", DEFAULT_DECISION_LOG_DAYS, minimum=1, maximum=MAX_DECISION_LOG_DAYS
    )
    return Province(name, default_tz, venues, products, peak_days, qr_keys, speed, log_days)


def parse_demo_passes(text: str, province: Province | None = None) -> list[PassRecord]:
    """Parses `demo_passes.toml`; with `province`, also checks that each product exists."""
    doc = _parse_toml(DEMO_PASSES_FILE, text)
    root = _Table(DEMO_PASSES_FILE, "", doc, frozenset({"pass"}))
    passes: list[PassRecord] = []
    seen_ids: dict[str, str] = {}
    seen_credentials: dict[tuple[CredentialKind, str], str] = {}
    for index, raw in root.tables("pass"):
        tbl = _Table(DEMO_PASSES_FILE, _item_path("pass", index, raw), raw, _DEMO_KEYS)
        record = _demo_pass(tbl, province)
        _claim(tbl, seen_ids, record.pass_id, "pass id", f"pass[{index}]")
        for kind, value in record.credentials:
            owner = seen_credentials.setdefault((kind, value), record.pass_id)
            if owner != record.pass_id:
                tbl.fail(kind.name.lower(), f"credential {value!r} already belongs to {owner!r}")
        passes.append(record)
    return passes


# ---------------------------------------------------------------------------------------------
# TOML documents and typed tables


def _load(name: str, texts: Mapping[str, str]) -> dict[str, Any]:
    if name not in texts:
        raise ConfigError(name, "", "file is missing")
    return _parse_toml(name, texts[name])


def _parse_toml(name: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _SYNTAX_RE.match(message)
        if match is None:
            raise ConfigError(name, "", f"TOML syntax error: {message}") from None
        if match.group(3):
            line, where = int(match.group(3)), match.group(2)
        else:
            line = text.count("\n") + 1
            where = f"line {line} (end of document)"
        raise ConfigError(name, where, f"TOML syntax error: {match.group(1)}", line) from None


def _toml_type(value: Any) -> str:
    kinds = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        (datetime, "a date-time"),
        (date, "a date"),
        (time, "a time"),
    )
    return next((label for kind, label in kinds if isinstance(value, kind)), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_key(name: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(sorted(allowed))})"


def _item_path(label: str, index: int, raw: dict[str, Any]) -> str:
    """`venue "hz-lingyin"` when the item has a usable id, else `venue[3]` (0-based)."""
    item_id = raw.get("id")
    if isinstance(item_id, str) and _ID_RE.fullmatch(item_id):
        return f'{label} "{item_id}"'
    return f"{label}[{index}]"


class _Table:
    """One TOML table being read: typed access by key, full key paths in every error."""

    def __init__(self, file: str, path: str, data: dict[str, Any], allowed: frozenset[str]):
        self.file = file
        self.path = path
        self.data = data
        for name in data:
            if name not in allowed:
                self.fail(name, _unknown_key(name, allowed))

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ConfigError(self.file, self.key(name), problem)

    def has(self, name: str) -> bool:
        return name in self.data

    def value(self, name: str, expected: str, ok: Callable[[Any], bool], default: Any) -> Any:
        if name not in self.data:
            if default is _MISSING:
                self.fail(name, f"missing (expected {expected})")
            return default
        value = self.data[name]
        if not ok(value):
            self.fail(name, f"expected {expected}, got {_toml_type(value)}")
        return value

    def text(self, name: str, default: Any = _MISSING) -> str:
        value = self.value(name, "a string", lambda v: isinstance(v, str), default)
        if name in self.data and not value.strip():
            self.fail(name, "must not be empty")
        return value  # type: ignore[no-any-return]

    def raw(self, name: str, expected: str) -> Any:
        """A required value of any type; the caller's parser checks its shape."""
        return self.value(name, expected, lambda _: True, _MISSING)

    def ident(self, name: str) -> str:
        value = self.text(name)
        if not _ID_RE.fullmatch(value):
            self.fail(name, f"bad id {value!r} (letters, digits, '.', '_', '-'; at most 64)")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        return bool(self.value(name, "true or false", lambda v: isinstance(v, bool), default))

    def number(
        self, name: str, default: Any = _MISSING, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.value(name, "an integer", _is_int, default)
        if value < minimum:
            self.fail(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(name, f"must be at most {maximum}, got {value}")
        return int(value)

    def real(self, name: str, default: float, minimum: float, maximum: float) -> float:
        """A number (integer or float) within [minimum, maximum]."""
        value = self.value(name, "a number", _is_number, default)
        if not minimum <= value <= maximum:  # NaN fails this too
            self.fail(name, f"must be between {minimum:g} and {maximum:g}, got {value}")
        return float(value)

    def texts(self, name: str) -> list[str]:
        value = self.value(name, "an array of strings", _is_str_list, [])
        for i, item in enumerate(value):
            if not item.strip():
                self.fail(f"{name}[{i}]", "must not be empty")
        return list(value)

    def child(self, name: str, allowed: frozenset[str]) -> _Table | None:
        value = self.value(name, "a table", lambda v: isinstance(v, dict), None)
        return None if value is None else _Table(self.file, self.key(name), value, allowed)

    def tables(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        value = self.value(name, "an array of tables", _is_table_list, [])
        return list(enumerate(value))

    def convert(self, name: str, parse: Callable[[Any], Any], value: Any) -> Any:
        try:
            return parse(value)
        except _Invalid as exc:
            self.fail(name, str(exc))


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _claim(tbl: _Table, seen: dict[str, str], item: str, what: str, where: str) -> None:
    """Records that the item at `where` uses id `item`; a second user is an error."""
    if item in seen:
        tbl.fail("id", f"duplicate {what} {item!r} (first used at {seen[item]})")
    seen[item] = where


class _Zones:
    """Calls the time-zone factory once per name and names the key when a zone is unknown."""

    def __init__(self, factory: Callable[[str], tzinfo]) -> None:
        self._factory = factory
        self._zones: dict[str, tzinfo] = {}

    def get(self, name: str, file: str, key: str) -> tzinfo:
        if name not in self._zones:
            try:
                self._zones[name] = self._factory(name)
            except Exception as exc:  # any factory failure means "this zone cannot be used"
                raise ConfigError(file, key, f"unknown time zone {name!r}") from exc
        return self._zones[name]


# ---------------------------------------------------------------------------------------------
# Times, ranges, dates, money


def _minutes(text: str) -> int:
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise _Invalid(f"bad time {text!r} (expected HH:MM)")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes > 0):
        raise _Invalid(f"bad time {text!r} (expected 00:00 to 24:00)")
    return hours * 60 + minutes


def _time_range(text: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    if not sep:
        raise _Invalid(f"bad time range {text!r} (expected HH:MM-HH:MM)")
    first, last = _minutes(start), _minutes(end)
    if last <= first:
        raise _Invalid(f"time range {text!r} ends before it starts")
    return first, last


def _time_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    """A range string or an array of them: sorted, non-overlapping."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise _Invalid(f"expected 'HH:MM-HH:MM' or an array of them, got {_toml_type(value)}")
    if not items:
        raise _Invalid("needs at least one time range")
    ranges = sorted(_time_range(v) for v in items)
    for (_, prev_end), (start, _) in pairwise(ranges):
        if start < prev_end:
            raise _Invalid(f"time ranges overlap at {_hhmm(start)}")
    return tuple(ranges)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Invalid(f"bad date {value!r} (expected YYYY-MM-DD)")


def _date_span(value: Any) -> range:
    """One date, or 'YYYY-MM-DD..YYYY-MM-DD' (inclusive), as a range of ordinals."""
    if isinstance(value, str) and ".." in value:
        first_text, _, last_text = value.partition("..")
        first, last = _date(first_text), _date(last_text)
        if last < first:
            raise _Invalid(f"date range {value!r} ends before it starts")
        if (last - first).days >= MAX_RANGE_DAYS:
            raise _Invalid(f"date range {value!r} is longer than {MAX_RANGE_DAYS} days")
        return range(first.toordinal(), last.toordinal() + 1)
    day = _date(value).toordinal()
    return range(day, day + 1)


def _dates(tbl: _Table, name: str) -> frozenset[int]:
    items = tbl.value(name, "an array of dates", lambda v: isinstance(v, list), [])
    days: set[int] = set()
    for i, item in enumerate(items):
        days.update(tbl.convert(f"{name}[{i}]", _date_span, item))
    return frozenset(days)


def _fen(value: Any) -> int:
    if not (_is_int(value) or isinstance(value, float)):
        raise _Invalid(f"expected an amount in yuan, got {_toml_type(value)}")
    try:
        fen = Decimal(str(value)) * 100
    except InvalidOperation:
        raise _Invalid(f"bad amount {value!r}") from None
    if fen < 0:
        raise _Invalid(f"must not be negative, got {value}")
    if fen != fen.to_integral_value():
        raise _Invalid(f"{value} has more than two decimals (fen)")
    return int(fen)


def _money(tbl: _Table, name: str, default: int = 0) -> int:
    if not tbl.has(name):
        return default
    return int(tbl.convert(name, _fen, tbl.data[name]))


def _count_or_unlimited(value: Any) -> int:
    if value == "unlimited":
        return UNLIMITED
    if not _is_int(value):
        raise _Invalid(f'expected a positive integer or "unlimited", got {value!r}')
    if value < 1:
        raise _Invalid(f'must be at least 1 (or "unlimited"), got {value}')
    return int(value)


# ---------------------------------------------------------------------------------------------
# venues.toml


def _parse_venues(doc: dict[str, Any], default_tz: str, zones: _Zones) -> dict[str, Venue]:
    root = _Table(VENUES_FILE, "", doc, frozenset({"venue"}))
    items = root.tables("venue")
    if not items:
        root.fail("venue", "no [[venue]] tables")
    venues: dict[str, Venue] = {}
    seen: dict[str, str] = {}
    gate_owner: dict[str, str] = {}
    for index, raw in items:
        tbl = _Table(VENUES_FILE, _item_path("venue", index, raw), raw, _VENUE_KEYS)
        venue = _venue(tbl, default_tz, zones)
        _claim(tbl, seen, venue.venue_id, "venue id", f"venue[{index}]")
        for gate in sorted(venue.gates):
            owner = gate_owner.setdefault(gate, venue.venue_id)
            if owner != venue.venue_id:
                tbl.fail("gates", f"gate {gate!r} already belongs to venue {owner!r}")
        venues[venue.venue_id] = venue
    return venues


def _venue(tbl: _Table, default_tz: str, zones: _Zones) -> Venue:
    venue_id = tbl.ident("id")
    kind = tbl.text("kind")
    if kind not in VENUE_KINDS:
        tbl.fail("kind", f"unknown kind {kind!r} (expected one of: {', '.join(VENUE_KINDS)})")
    tz_name = tbl.text("timezone", default_tz)
    instant, daily = _capacities(tbl)
    opening = _opening(tbl)
    slots = _slots(tbl, opening, daily)
    reservation_required = tbl.flag("reservation_required")
    only_at_red = tbl.flag("reservation_only_at_red")
    for name, wanted in (
        ("reservation_required", reservation_required),
        ("reservation_only_at_red", only_at_red),
    ):
        if wanted and not slots:
            tbl.fail(name, "needs reservation slots (add slots = [...])")
    return Venue(
        venue_id=venue_id,
        name=tbl.text("name"),
        city=tbl.text("city"),
        tz_name=tz_name,
        tz=zones.get(tz_name, VENUES_FILE, tbl.key("timezone")),
        opening=opening,
        instant_capacity=instant,
        daily_capacity=daily,
        anti_passback=_anti_passback(tbl),
        gates=_gates(tbl, venue_id),
        kind=kind,
        state_owned=tbl.flag("state_owned"),
        reservation_required=reservation_required,
        slots=slots,
        reservation_tolerance_before_min=_tolerance(tbl, "before", 15),
        reservation_tolerance_after_min=_tolerance(tbl, "after", 30),
        closed_dates=_dates(tbl, "closed_dates"),
        stay_model=_stay_model(tbl, opening),
        alerts=_alerts(tbl),
        reservation_only_at_red=only_at_red,
        carry_occupancy=tbl.flag("carry_occupancy"),
        location=_location(tbl),
    )


def _location(tbl: _Table) -> tuple[float, float] | None:
    """`location = { lat = 30.24, lon = 120.10 }` in degrees (WGS 84), or None."""
    sub = tbl.child("location", _LOCATION_KEYS)
    if sub is None:
        return None
    for name in ("lat", "lon"):
        if not sub.has(name):
            sub.fail(name, "missing (degrees: location = { lat = 30.24, lon = 120.1 })")
    return sub.real("lat", 0.0, -90.0, 90.0), sub.real("lon", 0.0, -180.0, 180.0)


def _travel_speed(root: _Table) -> float:
    speed = root.real("travel_speed_kmh", DEFAULT_TRAVEL_SPEED_KMH, 0.0, MAX_TRAVEL_SPEED_KMH)
    if speed == 0:
        root.fail("travel_speed_kmh", "must be above 0")
    return speed


def _capacities(tbl: _Table) -> tuple[int, int]:
    instant = tbl.number("instant_capacity", minimum=1)
    daily = tbl.number("daily_capacity", minimum=1)
    if instant > daily:
        tbl.fail("instant_capacity", f"{instant} exceeds daily_capacity {daily}")
    return instant, daily


def _weekday(tbl: _Table, key: str, name: str) -> int:
    if name not in WEEKDAYS:
        tbl.fail(key, f"unknown weekday {name!r} (expected one of: {', '.join(WEEKDAYS)})")
    return WEEKDAYS.index(name)


def _opening(tbl: _Table) -> tuple[tuple[tuple[int, int], ...], ...]:
    base = tbl.convert("hours", _time_ranges, tbl.raw("hours", "'HH:MM-HH:MM'"))
    week: list[tuple[tuple[int, int], ...]] = [base] * 7
    closed: set[int] = set()
    for i, name in enumerate(tbl.texts("closed_weekdays")):
        day = _weekday(tbl, f"closed_weekdays[{i}]", name)
        closed.add(day)
        week[day] = ()
    overrides = tbl.value("weekday_hours", "a table", lambda v: isinstance(v, dict), {})
    for name, value in overrides.items():
        key = f"weekday_hours.{name}"
        day = _weekday(tbl, key, name)
        if day in closed:
            tbl.fail(key, f"{name} is also listed in closed_weekdays")
        week[day] = () if value == "closed" else tbl.convert(key, _time_ranges, value)
    if not any(week):
        tbl.fail("hours", "the venue is never open (every weekday is closed)")
    return tuple(week)


def _anti_passback(tbl: _Table) -> AntiPassback:
    sub = tbl.child("anti_passback", _PASSBACK_KEYS)
    if sub is None:
        return AntiPassback()
    mode_name = sub.text("mode")
    if mode_name not in _PASSBACK_MODES:
        sub.fail("mode", f"unknown mode {mode_name!r} (expected hard, soft or none)")
    mode = _PASSBACK_MODES[mode_name]
    minutes = sub.number("minutes", 0, maximum=MAX_PASSBACK_MIN)
    if mode is PassbackMode.NONE and minutes:
        sub.fail("minutes", 'has no effect with mode = "none"')
    return AntiPassback(mode, minutes)


def _gates(tbl: _Table, venue_id: str) -> frozenset[str]:
    if tbl.has("gates") and tbl.has("gate_count"):
        tbl.fail("gate_count", "give either gates or gate_count, not both")
    if tbl.has("gate_count"):
        count = tbl.number("gate_count", minimum=1, maximum=999)
        return frozenset(f"{venue_id}-g{n:02d}" for n in range(1, count + 1))
    if not tbl.has("gates"):
        tbl.fail("gates", "missing (give gates = [...] or gate_count = N)")
    gates = tbl.texts("gates")
    if not gates:
        tbl.fail("gates", "must name at least one gate")
    for i, gate in enumerate(gates):
        if not _ID_RE.fullmatch(gate):
            tbl.fail(f"gates[{i}]", f"bad gate id {gate!r}")
        if gate in gates[:i]:
            tbl.fail(f"gates[{i}]", f"duplicate gate {gate!r}")
    return frozenset(gates)


def _slots(
    tbl: _Table, opening: tuple[tuple[tuple[int, int], ...], ...], daily: int
) -> tuple[Slot, ...]:
    slots: list[tuple[int, Slot]] = []
    for index, raw in tbl.tables("slots"):
        sub = _Table(tbl.file, tbl.key(f"slots[{index}]"), raw, _SLOT_KEYS)
        slot_id = sub.ident("id")
        start = sub.convert("start", _minutes, sub.text("start"))
        end = sub.convert("end", _minutes, sub.text("end"))
        if end <= start:
            sub.fail("end", f"slot ends ({_hhmm(end)}) before it starts ({_hhmm(start)})")
        if not any(a <= start and end <= b for day in opening for a, b in day):
            sub.fail("start", f"slot {_hhmm(start)}-{_hhmm(end)} is outside the opening hours")
        if any(s.slot_id == slot_id for _, s in slots):
            sub.fail("id", f"duplicate slot id {slot_id!r}")
        slots.append((index, Slot(slot_id, start, end, sub.number("capacity", minimum=1))))
    ordered = sorted(slots, key=lambda item: item[1].start_min)
    for (_, prev), (index, slot) in pairwise(ordered):
        if slot.start_min < prev.end_min:
            tbl.fail(f"slots[{index}]", f"overlaps slot {prev.slot_id!r}")
    total = sum(slot.capacity for _, slot in slots)
    if total > daily and not tbl.flag("allow_slot_overbooking"):
        tbl.fail(
            "slots",
            f"slot capacities sum to {total}, more than daily_capacity {daily} "
            "(set allow_slot_overbooking = true to permit)",
        )
    return tuple(slot for _, slot in ordered)


def _stay_model(tbl: _Table, opening: tuple[tuple[tuple[int, int], ...], ...]) -> StayModel | None:
    """None when exit readers count occupancy; else how to estimate it (`core.occupancy`)."""
    if tbl.flag("exit_readers", True):
        for name in ("typical_stay_minutes", "everyone_out_at"):
            if tbl.has(name):
                tbl.fail(name, "only for venues without exit readers (add exit_readers = false)")
        return None
    if not tbl.has("typical_stay_minutes"):
        tbl.fail(
            "typical_stay_minutes",
            "missing: a venue without exit readers needs the typical (median) stay in minutes "
            "to estimate who is inside",
        )
    stay = tbl.number(
        "typical_stay_minutes", minimum=MIN_TYPICAL_STAY_MIN, maximum=MAX_TYPICAL_STAY_MIN
    )
    if tbl.flag("carry_occupancy"):
        tbl.fail(
            "carry_occupancy",
            "cannot be true without exit readers: the estimate is built from the entries of the "
            "local day",
        )
    if not tbl.has("everyone_out_at"):
        return StayModel(stay)
    out = tbl.convert("everyone_out_at", _minutes, tbl.text("everyone_out_at"))
    if out >= 24 * 60:
        tbl.fail("everyone_out_at", "must be before 24:00 (the estimate restarts at midnight)")
    if not any(start < out for day in opening for start, _ in day):
        tbl.fail("everyone_out_at", f"{_hhmm(out)} is before the venue opens on every day")
    return StayModel(stay, out)


def _tolerance(tbl: _Table, name: str, default: int) -> int:
    sub = tbl.child("reservation_tolerance", _TOLERANCE_KEYS)
    return default if sub is None else sub.number(name, default, maximum=MAX_TOLERANCE_MIN)


def _alerts(tbl: _Table) -> AlertThresholds:
    sub = tbl.child("alerts", _ALERT_KEYS)
    if sub is None:
        return AlertThresholds()
    base = AlertThresholds()
    defaults = {"yellow": base.yellow_pct, "orange": base.orange_pct, "red": base.red_pct}
    levels = {name: sub.number(name, default, 1, 100) for name, default in defaults.items()}
    for lower, upper in (("yellow", "orange"), ("orange", "red")):
        if levels[upper] <= levels[lower]:
            sub.fail(upper, f"must be above {lower} ({levels[lower]}), got {levels[upper]}")
    return AlertThresholds(levels["yellow"], levels["orange"], levels["red"])


# ---------------------------------------------------------------------------------------------
# products.toml


def _parse_products(doc: dict[str, Any], venues: dict[str, Venue]) -> dict[str, Product]:
    root = _Table(PRODUCTS_FILE, "", doc, frozenset({"product"}))
    products: dict[str, Product] = {}
    seen: dict[str, str] = {}
    for index, raw in root.tables("product"):
        tbl = _Table(PRODUCTS_FILE, _item_path("product", index, raw), raw, _PRODUCT_KEYS)
        product = _product(tbl, venues)
        _claim(tbl, seen, product.product_id, "product id", f"product[{index}]")
        products[product.product_id] = product
    return products


# A rule under construction: field -> (value, key path that set it), so a later check can name
# the key that asked for something impossible.
_Fields = dict[str, tuple[Any, str]]


def _product(tbl: _Table, venues: dict[str, Venue]) -> Product:
    product_id = tbl.ident("id")
    name = tbl.text("name")
    price = _money(tbl, "price_yuan")
    qr = _qr_policy(tbl.child("qr", _QR_POLICY_KEYS))
    credit = _credit(tbl.child("credit", _CREDIT_KEYS))
    default_tbl = tbl.child("default", _RULE_KEYS)
    default = _rule_fields(default_tbl) if default_tbl is not None else {}
    covered: dict[str, _Fields] = {}
    groups = tbl.tables("cover")
    if not groups:
        tbl.fail("cover", "missing (a product must cover at least one venue: [[product.cover]])")
    for index, raw in groups:
        group = _Table(tbl.file, tbl.key(f"cover[{index}]"), raw, _SELECTOR_KEYS | _RULE_KEYS)
        fields = _rule_fields(group)
        for venue_id in _select(group, venues):
            covered.setdefault(venue_id, dict(default)).update(fields)
    for i, venue_id in enumerate(tbl.texts("exclude")):
        _known_venue(tbl, f"exclude[{i}]", venue_id, venues)
        covered.pop(venue_id, None)
    if not covered:
        tbl.fail("cover", "covers no venue")
    rules = {vid: _rule(venues[vid], covered[vid], credit) for vid in venues if vid in covered}
    return Product(product_id, name, rules, price, credit, qr, _shared_card(tbl))


def _shared_card(tbl: _Table) -> SharedCardPolicy:
    text = tbl.text("shared_card", "flag")
    policy = _SHARED_CARD_POLICIES.get(text)
    if policy is None:
        tbl.fail("shared_card", f"unknown policy {text!r} (expected flag or refuse)")
    return policy


def _qr_policy(tbl: _Table | None) -> QrPolicy:
    base = QrPolicy()
    if tbl is None:
        return base
    return QrPolicy(
        step_seconds=tbl.number("step_seconds", base.step_seconds, MIN_QR_STEP_S, MAX_QR_STEP_S),
        skew_steps=tbl.number("skew_steps", base.skew_steps, maximum=MAX_QR_SKEW_STEPS),
        static=tbl.flag("static", base.static),
    )


def _rule_fields(tbl: _Table) -> _Fields:
    fields: _Fields = {}
    for name in ("entries_per_period", "entries_per_day"):
        if tbl.has(name):
            fields[name] = (tbl.convert(name, _count_or_unlimited, tbl.data[name]), tbl.key(name))
    if tbl.has("reservation_required"):
        fields["reservation_required"] = (
            tbl.flag("reservation_required"),
            tbl.key("reservation_required"),
        )
    if tbl.has("peak_windows"):
        # An empty list is meaningful here: a later group lifts the default's windows.
        value = tbl.data["peak_windows"]
        windows = () if value == [] else tbl.convert("peak_windows", _time_ranges, value)
        fields["peak_windows"] = (windows, tbl.key("peak_windows"))
    if tbl.has("pay_later_price_yuan"):
        price = _money(tbl, "pay_later_price_yuan")
        fields["pay_later_price_fen"] = (price, tbl.key("pay_later_price_yuan"))
    return fields


def _select(group: _Table, venues: dict[str, Venue]) -> list[str]:
    """The venue ids a cover group picks: every selector given must match (AND)."""
    if not any(group.has(name) for name in _SELECTOR_KEYS):
        group.fail("venues", "missing (give venues, cities, kinds or all = true)")
    chosen = list(venues) if group.flag("all") else None
    if group.has("all") and chosen is None:
        group.fail("all", "only all = true makes sense; omit it instead")
    for name, attr, known in (
        ("venues", "venue_id", set(venues)),
        ("cities", "city", {v.city for v in venues.values()}),
        ("kinds", "kind", set(VENUE_KINDS)),
    ):
        if not group.has(name):
            continue
        wanted = group.texts(name)
        if not wanted:
            group.fail(name, "must not be empty")
        for i, item in enumerate(wanted):
            if item not in known:
                group.fail(f"{name}[{i}]", _unknown_item(name, item, known))
        pool = chosen if chosen is not None else list(venues)
        chosen = [vid for vid in pool if getattr(venues[vid], attr) in wanted]
    if not chosen:
        group.fail("venues", "the selectors together match no venue")
    return chosen


def _unknown_item(selector: str, item: str, known: set[str]) -> str:
    what = {"venues": "venue", "cities": "city", "kinds": "venue kind"}[selector]
    close = difflib.get_close_matches(item, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {item!r}{hint}"


def _known_venue(tbl: _Table, key: str, venue_id: str, venues: dict[str, Venue]) -> None:
    if venue_id not in venues:
        tbl.fail(key, _unknown_item("venues", venue_id, set(venues)))


def _rule(venue: Venue, fields: _Fields, credit: CreditPolicy | None) -> VenueRule:
    values = {name: value for name, (value, _) in fields.items()}
    rule = VenueRule(**values)
    if rule.reservation_required and not venue.slots:
        key = fields["reservation_required"][1]
        problem = f"venue {venue.venue_id!r} has no reservation slots"
        raise ConfigError(PRODUCTS_FILE, key, problem)
    if rule.pay_later_price_fen and credit is None:
        key = fields["pay_later_price_fen"][1]
        raise ConfigError(PRODUCTS_FILE, key, "pay-later price needs a [product.credit] policy")
    return rule


def _credit(tbl: _Table | None) -> CreditPolicy | None:
    if tbl is None:
        return None
    tiers: set[CreditTier] = set()
    names = tbl.texts("pay_later_tiers") if tbl.has("pay_later_tiers") else ["GOOD"]
    for i, name in enumerate(names):
        tier = CreditTier.__members__.get(name.upper())
        if tier is None or tier is CreditTier.UNSPECIFIED:
            tbl.fail(f"pay_later_tiers[{i}]", f"unknown tier {name!r} (GOOD, NORMAL or POOR)")
        tiers.add(tier)
    groups = frozenset(tbl.texts("first_visit_free_groups"))
    return CreditPolicy(frozenset(tiers), _money(tbl, "debt_limit_yuan"), groups)


# ---------------------------------------------------------------------------------------------
# qr_keys.toml


def parse_qr_keys(text: str) -> dict[str, bytes]:
    """Trusted signed-QR issuer keys: key id -> raw 32-byte Ed25519 public key."""
    doc = _parse_toml(QR_KEYS_FILE, text)
    root = _Table(QR_KEYS_FILE, "", doc, frozenset({"key"}))
    keys: dict[str, bytes] = {}
    seen: dict[str, str] = {}
    for index, raw in root.tables("key"):
        tbl = _Table(QR_KEYS_FILE, _item_path("key", index, raw), raw, _QR_KEY_KEYS)
        key_id = tbl.text("id")
        if not KEY_ID_RE.fullmatch(key_id):
            tbl.fail("id", f"bad key id {key_id!r} (letters, digits, '.', '_', '-'; at most 32)")
        _claim(tbl, seen, key_id, "key id", f"key[{index}]")
        tbl.text("note", "")
        keys[key_id] = tbl.convert("public_key", _public_key, tbl.text("public_key"))
    return keys


def _public_key(text: str) -> bytes:
    """Base64 (standard or URL-safe, padding optional) of a raw Ed25519 public key."""
    body = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = binascii.a2b_base64(body + "=" * (-len(body) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise _Invalid(f"expected the base64 of a {PUBLIC_KEY_BYTES}-byte Ed25519 public key")
    return raw


# ---------------------------------------------------------------------------------------------
# demo_passes.toml


def _demo_pass(tbl: _Table, province: Province | None) -> PassRecord:
    pass_id = tbl.ident("id")
    product_id = tbl.text("product")
    if province is not None and product_id not in province.products:
        known = set(province.products)
        close = difflib.get_close_matches(product_id, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        tbl.fail("product", f"unknown product {product_id!r}{hint}")
    tbl.text("note", "")
    valid_from = tbl.convert("valid_from", _date, tbl.raw("valid_from", "a date"))
    valid_until = tbl.convert("valid_until", _date, tbl.raw("valid_until", "a date"))
    if valid_until < valid_from:
        tbl.fail("valid_until", f"{valid_until} is before valid_from {valid_from}")
    return PassRecord(
        pass_id=pass_id,
        product_id=product_id,
        credentials=_demo_credentials(tbl),
        valid_from=valid_from.toordinal(),
        valid_until=valid_until.toordinal(),
        status=_enum(tbl, "status", PassStatus, PassStatus.ACTIVE),
        credit_tier=_enum(tbl, "credit_tier", CreditTier, CreditTier.NORMAL),
        groups=frozenset(tbl.texts("groups")),
        outstanding_debt_fen=_money(tbl, "debt_yuan"),
    )


def _demo_credentials(tbl: _Table) -> tuple[tuple[CredentialKind, str], ...]:
    credentials: list[tuple[CredentialKind, str]] = []
    for name, kind in _DEMO_CREDENTIALS.items():
        value = tbl.value(name, "a string or an array of strings", _is_str_or_list, [])
        for item in [value] if isinstance(value, str) else value:
            if not item.strip():
                tbl.fail(name, "must not be empty")
            credentials.append((kind, item))
    if not credentials:
        tbl.fail("card", "a pass needs at least one credential (card, qr or id_document)")
    return tuple(credentials)


def _is_str_or_list(value: Any) -> bool:
    return isinstance(value, str) or _is_str_list(value)


def _enum(tbl: _Table, name: str, enum: Any, default: Any) -> Any:
    text = tbl.text(name, default.name.lower())
    member = enum.__members__.get(text.upper())
    if member is None or member.name == "UNSPECIFIED":
        choices = ", ".join(m.lower() for m in enum.__members__ if m != "UNSPECIFIED")
        tbl.fail(name, f"unknown {name} {text!r} (expected one of: {choices})")
    return member
