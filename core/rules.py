"""The gate decision: may this credential pass this gate of this venue now?

`decide` is pure: the pass, its usage at the venue, the venue, the live capacity view and the
instant all come in as arguments; the answer is an `Outcome` holding the `Decision` and, when the
decision changes anything, the pass's new usage. A denial is an ordinary answer with a `Reason`
code and a short message saying what would have worked; it is never an exception.

Entry checks run in a fixed order and the first failure wins: venue, gate, credential, pass
status, validity dates, product coverage, opening hours, pause, capacity, reservation, peak-day
windows, anti-passback, entry limits, credit. An exit is never refused once venue and gate are
known: nobody is trapped inside. It lowers occupancy only when a known entry justifies it.
"""

from __future__ import annotations

from core.capacity import would_exceed
from core.clock import LocalTime, fmt_day, fmt_minute, local_time, weekday_name
from core.credit import HoldAnswer, refusal_message
from core.labels import LABELS
from core.models import (
    UNLIMITED,
    AlertLevel,
    AntiPassback,
    CapacityView,
    CreditPolicy,
    Decision,
    Direction,
    Outcome,
    PassbackMode,
    PassRecord,
    PassStatus,
    Province,
    Reason,
    Request,
    Usage,
    Venue,
    VenueRule,
)

_NO_CAPACITY = CapacityView()
# Enum members bound once: attribute access on an Enum class is slow on the hot path.
_OK = Reason.OK
_EXIT = Direction.EXIT
_HARD = PassbackMode.HARD
_SOFT = PassbackMode.SOFT
_REVOKED = PassStatus.REVOKED
_BLOCKED = PassStatus.BLOCKED
_RED = AlertLevel.RED
_NO_RANGES: tuple[tuple[int, int], ...] = ()
_MS_PER_MIN = 60_000

_WELCOME = LABELS[Reason.OK]
_WELCOME_FREE = "welcome: free first visit"
_WELCOME_SOFT = "welcome: re-entry recorded"
_GOODBYE = "goodbye"
_EXIT_RECORDED = "exit recorded"
_NO_SLOT = "reservation required: no free slot today"
_NO_WINDOW = "no more entry windows today"

# (reason, message) of a refused entry; built only when an entry is refused.
_Problem = tuple[Reason, str]


def decide(
    pass_: PassRecord | None,
    usage: Usage,
    venue: Venue | None,
    request: Request,
    now_ms: int,
    province: Province,
    capacity: CapacityView = _NO_CAPACITY,
    local: LocalTime | None = None,
    ledger: HoldAnswer | None = None,
) -> Outcome:
    """Decide one scan. `usage` is read, never mutated; `local` may be precomputed per batch.
    `ledger` is the holder-wide credit ledger's verdict for a pay-later entry (`core.credit`);
    without one only the debt seen at this venue counts."""
    if venue is None:
        return _refuse(request, pass_, Reason.UNKNOWN_VENUE, now_ms, AlertLevel.UNSPECIFIED)
    if request.gate_id not in venue.gates:
        return _refuse(request, pass_, Reason.NOT_AUTHORIZED, now_ms, capacity.alert)
    if local is None:
        local = local_time(venue.tz, now_ms)
    if request.direction == _EXIT:
        return _exit(pass_, usage, venue, request, now_ms, province, capacity.alert, local)
    return _entry(pass_, usage, venue, request, now_ms, province, capacity, local, ledger)


# -- entry ----------------------------------------------------------------------------------------


def _entry(
    pass_: PassRecord | None,
    usage: Usage,
    venue: Venue,
    request: Request,
    now_ms: int,
    province: Province,
    capacity: CapacityView,
    local: LocalTime,
    ledger: HoldAnswer | None = None,
) -> Outcome:
    alert = capacity.alert
    if pass_ is None:
        return _refuse(request, None, Reason.UNKNOWN_CREDENTIAL, now_ms, alert)
    problem = _pass_problem(pass_, local.day)
    if problem is not None:
        return _refuse(request, pass_, problem[0], now_ms, alert, problem[1])
    product = province.products.get(pass_.product_id)
    rule = product.venues.get(venue.venue_id) if product is not None else None
    if product is None or rule is None:
        return _refuse(request, pass_, Reason.VENUE_NOT_COVERED, now_ms, alert)
    problem = _venue_problem(venue, rule, capacity, local, province.peak_days)
    if problem is None:
        problem = _holder_problem(venue, rule, usage, now_ms, local)
    if problem is not None:
        remaining = _remaining(rule.entries_per_period, usage.entries)
        return _refuse(request, pass_, problem[0], now_ms, alert, problem[1], remaining)
    return _admit_on_terms(
        pass_, usage, venue, request, now_ms, product.credit, rule, alert, local, ledger
    )


def _pass_problem(pass_: PassRecord, day: int) -> _Problem | None:
    status = pass_.status
    if status == _REVOKED:
        return Reason.REVOKED, LABELS[Reason.REVOKED]
    if status == _BLOCKED:
        return Reason.BLOCKED, LABELS[Reason.BLOCKED]
    if day < pass_.valid_from:
        return Reason.NOT_YET_VALID, "valid from " + fmt_day(pass_.valid_from)
    if day > pass_.valid_until:
        return Reason.EXPIRED, "expired " + fmt_day(pass_.valid_until)
    return None


def _venue_problem(
    venue: Venue,
    rule: VenueRule,
    capacity: CapacityView,
    local: LocalTime,
    peak_days: frozenset[int],
) -> _Problem | None:
    """Refusals that hold for every holder of this product at this venue right now."""
    if local.day in venue.closed_dates or not _within(_ranges(venue, local.weekday), local.minute):
        return Reason.VENUE_CLOSED, _closed_message(venue, local)
    if capacity.paused:
        return Reason.VENUE_PAUSED, LABELS[Reason.VENUE_PAUSED]
    occupancy, today = capacity.occupancy, capacity.entries_today
    if would_exceed(occupancy, venue.instant_capacity, today, venue.daily_capacity):
        return Reason.VENUE_FULL, _full_message(venue, occupancy)
    if capacity.reserved_slot is None and _reservation_needed(venue, rule, capacity.alert):
        return Reason.RESERVATION_REQUIRED, _reservation_message(capacity.next_free_slot)
    windows = rule.peak_windows
    if windows and local.day in peak_days and not _within(windows, local.minute):
        return Reason.OUTSIDE_TIME_WINDOW, _window_message(windows, local.minute)
    return None


def _holder_problem(
    venue: Venue, rule: VenueRule, usage: Usage, now_ms: int, local: LocalTime
) -> _Problem | None:
    """Refusals that come from this pass's own use of the venue."""
    ap = venue.anti_passback
    if ap.mode == _HARD and _recently_entered(ap, usage, now_ms):
        return Reason.ANTI_PASSBACK, _reentry_message(venue, ap, usage, local)
    per_period = rule.entries_per_period
    if per_period != UNLIMITED and usage.entries >= per_period:
        return Reason.ENTRY_LIMIT_REACHED, LABELS[Reason.ENTRY_LIMIT_REACHED]
    per_day = rule.entries_per_day
    if per_day != UNLIMITED and _entries_today(usage, local.day) >= per_day:
        return Reason.DAILY_LIMIT_REACHED, LABELS[Reason.DAILY_LIMIT_REACHED]
    return None


def _admit_on_terms(
    pass_: PassRecord,
    usage: Usage,
    venue: Venue,
    request: Request,
    now_ms: int,
    credit: CreditPolicy | None,
    rule: VenueRule,
    alert: AlertLevel,
    local: LocalTime,
    ledger: HoldAnswer | None = None,
) -> Outcome:
    """Last gate: pay-later credit. Admits free, on credit, or plainly; or refuses credit."""
    price = rule.pay_later_price_fen
    if credit is None or price <= 0:
        return _admit(pass_, usage, venue, request, now_ms, rule, alert, local, 0, False)
    if _first_visit_free(pass_, usage, venue, credit):
        return _admit(pass_, usage, venue, request, now_ms, rule, alert, local, 0, True)
    if ledger is None:  # no holder-wide ledger: the debt this venue knows of
        owed = pass_.outstanding_debt_fen + usage.charges_fen
        ledger = HoldAnswer(owed + price <= credit.debt_limit_fen, owed, credit.debt_limit_fen)
    if pass_.credit_tier in credit.pay_later_tiers and ledger.granted:
        return _admit(pass_, usage, venue, request, now_ms, rule, alert, local, price, False)
    message = LABELS[Reason.CREDIT_DENIED]
    if pass_.credit_tier in credit.pay_later_tiers:
        message = refusal_message(ledger)
    remaining = _remaining(rule.entries_per_period, usage.entries)
    return _refuse(request, pass_, Reason.CREDIT_DENIED, now_ms, alert, message, remaining)


def _admit(
    pass_: PassRecord,
    usage: Usage,
    venue: Venue,
    request: Request,
    now_ms: int,
    rule: VenueRule,
    alert: AlertLevel,
    local: LocalTime,
    charge: int,
    free: bool,
) -> Outcome:
    entries = usage.entries + 1
    ap = venue.anti_passback
    soft = ap.mode == _SOFT and _recently_entered(ap, usage, now_ms)
    # Positional construction (field order of Decision / Usage / Outcome): the admit path runs
    # on every entry and keyword arguments cost measurably more.
    decision = Decision(
        request.request_id,
        True,
        _OK,
        _welcome(charge, free, soft),
        pass_.pass_id,
        _remaining(rule.entries_per_period, entries),
        alert,
        charge > 0,
        now_ms,
        charge,
        soft,
        free,
    )
    if request.dry_run:
        return Outcome(decision)
    day = local.day
    new = Usage(
        entries,
        day,
        _entries_today(usage, day) + 1,
        now_ms,
        True,
        usage.free_visits + 1 if free else usage.free_visits,
        usage.charges_fen + charge,
        usage.exits,
    )
    return Outcome(decision, new, True)


# -- exit -----------------------------------------------------------------------------------------


def _exit(
    pass_: PassRecord | None,
    usage: Usage,
    venue: Venue,
    request: Request,
    now_ms: int,
    province: Province,
    alert: AlertLevel,
    local: LocalTime,
) -> Outcome:
    """Always lets the holder out. Only an exit that a known entry justifies lowers occupancy."""
    matched = pass_ is not None and pass_.status != _REVOKED and _inside(venue, usage, local)
    decision = Decision(
        request_id=request.request_id,
        allowed=True,
        reason=Reason.OK,
        message=_GOODBYE if matched else _EXIT_RECORDED,
        pass_id=pass_.pass_id if pass_ is not None else "",
        remaining_entries=_remaining_at(province, pass_, venue, usage),
        venue_alert=alert,
        decided_at_ms=now_ms,
    )
    if request.dry_run:
        return Outcome(decision)
    if not matched:
        return Outcome(decision, unmatched_exit=True)
    new = usage.copy()
    new.inside = False
    new.exits += 1
    return Outcome(decision, new, exited=True)


def _inside(venue: Venue, usage: Usage, local: LocalTime) -> bool:
    """The pass's last entry still counts in occupancy: it is inside, and either the venue keeps
    occupancy over midnight or the entry was today (a reset at midnight already dropped it)."""
    return usage.inside and (venue.carry_occupancy or usage.day == local.day)


# -- helpers --------------------------------------------------------------------------------------


def _refuse(
    request: Request,
    pass_: PassRecord | None,
    reason: Reason,
    now_ms: int,
    alert: AlertLevel,
    message: str | None = None,
    remaining: int = UNLIMITED,
) -> Outcome:
    decision = Decision(
        request.request_id,
        False,
        reason,
        LABELS[reason] if message is None else message,
        pass_.pass_id if pass_ is not None else "",
        remaining,
        alert,
        False,
        now_ms,
    )
    return Outcome(decision)


def _ranges(venue: Venue, weekday: int) -> tuple[tuple[int, int], ...]:
    opening = venue.opening
    return opening[weekday] if weekday < len(opening) else _NO_RANGES


def _within(ranges: tuple[tuple[int, int], ...], minute: int) -> bool:
    # A plain loop, not any(<generator>): this runs on every entry and the generator costs more.
    for start, end in ranges:  # noqa: SIM110
        if start <= minute < end:
            return True
    return False


def _next_start(ranges: tuple[tuple[int, int], ...], after: int) -> int:
    """The earliest range start later than `after`, or -1."""
    best = -1
    for start, _end in ranges:
        if start > after and (best < 0 or start < best):
            best = start
    return best


def _entries_today(usage: Usage, day: int) -> int:
    return usage.entries_today if usage.day == day else 0


def _remaining(per_period: int, entries: int) -> int:
    if per_period == UNLIMITED:
        return UNLIMITED
    left = per_period - entries
    return left if left > 0 else 0


def _remaining_at(province: Province, pass_: PassRecord | None, venue: Venue, usage: Usage) -> int:
    product = province.products.get(pass_.product_id) if pass_ is not None else None
    rule = product.venues.get(venue.venue_id) if product is not None else None
    return UNLIMITED if rule is None else _remaining(rule.entries_per_period, usage.entries)


def _recently_entered(ap: AntiPassback, usage: Usage, now_ms: int) -> bool:
    """Inside, or the last entry is younger than the passback window.

    "Inside" lapses after the window because many scenic areas have no exit gates, so both
    conditions reduce to the age of the last entry; an exit does not shorten the window (the
    pass must not go round to a second person), while an annulled entry restores the previous one.
    """
    last = usage.last_entry_ms
    return last > 0 and now_ms - last < ap.minutes * _MS_PER_MIN


def _reservation_needed(venue: Venue, rule: VenueRule, alert: AlertLevel) -> bool:
    return (
        venue.reservation_required
        or rule.reservation_required
        or (venue.reservation_only_at_red and alert >= _RED)
    )


def _first_visit_free(pass_: PassRecord, usage: Usage, venue: Venue, credit: CreditPolicy) -> bool:
    return (
        venue.state_owned
        and usage.free_visits == 0
        and not pass_.groups.isdisjoint(credit.first_visit_free_groups)
    )


# -- messages: say what would have worked -------------------------------------------------------


def _welcome(charge: int, free: bool, soft: bool) -> str:
    if free:
        return _WELCOME_FREE
    if charge > 0:
        return f"welcome: pay later {_yuan(charge)} yuan"
    return _WELCOME_SOFT if soft else _WELCOME


def _closed_message(venue: Venue, local: LocalTime) -> str:
    day, weekday = local.day, local.weekday
    if day not in venue.closed_dates:
        start = _next_start(_ranges(venue, weekday), local.minute)
        if start >= 0:
            return "opens at " + fmt_minute(start)
    for ahead in range(1, 8):
        if day + ahead in venue.closed_dates:
            continue
        start = _next_start(_ranges(venue, (weekday + ahead) % 7), -1)
        if start >= 0:
            return "opens " + _when(ahead, day, weekday) + fmt_minute(start)
    return LABELS[Reason.VENUE_CLOSED]


def _full_message(venue: Venue, occupancy: int) -> str:
    if 0 < venue.instant_capacity <= occupancy:
        return "venue full: please wait"
    return "venue full for today"


def _reservation_message(next_free_slot: str | None) -> str:
    return "reserve a slot: next free " + next_free_slot if next_free_slot else _NO_SLOT


def _window_message(windows: tuple[tuple[int, int], ...], minute: int) -> str:
    start = _next_start(windows, minute)
    return "entry allowed from " + fmt_minute(start) if start >= 0 else _NO_WINDOW


def _reentry_message(venue: Venue, ap: AntiPassback, usage: Usage, local: LocalTime) -> str:
    # Round up to the minute so that the time shown is never too early.
    at = local_time(venue.tz, usage.last_entry_ms + ap.minutes * _MS_PER_MIN + _MS_PER_MIN - 1)
    ahead = at.day - local.day
    prefix = "" if ahead <= 0 else _when(ahead, local.day, local.weekday)
    return "re-entry from " + prefix + fmt_minute(at.minute)


def _when(ahead: int, day: int, weekday: int) -> str:
    """A day `ahead` days after `day`, as a display prefix: "tomorrow ", "Wed ", or a date."""
    if ahead == 1:
        return "tomorrow "
    if ahead < 7:
        return weekday_name(weekday + ahead) + " "
    return fmt_day(day + ahead) + " "


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"
