"""The gate decision: may this credential pass this gate of this venue now?

`decide` is pure: the pass, its usage at the venue, the venue, the live capacity view and the
instant all come in as arguments; the answer is an `Outcome` holding the `Decision` and, when the
decision changes anything, the pass's new usage. A denial is an ordinary answer with a `Reason`
code and a short message saying what would have worked; it is never an exception.

Venue, gate and credential come first (`core.ranking.PRECONDITIONS`): without them nothing else
is known. The entry checks then run in `core.ranking.CHECK_ORDER`, inline and cheap, so an
admitted entry evaluates each once. When one fails, `_closest` looks only for failures ranked
closer (`core.ranking.RANKING`) and answers the closest: a permanent problem outranks a temporary
one, so a pass with no entries left hears so at 06:00 instead of "opens at 08:00".

A reservation counts when the pass holds one for a slot whose window (with the venue's tolerance)
contains now: unused, the entry consumes it; already consumed by this holder, it lets them re-enter
within that window (anti-passback still applies). An exit is never refused once venue and gate are
known: nobody is trapped inside. It lowers occupancy only when a known entry justifies it.
"""

from __future__ import annotations

from collections.abc import Callable

from core.capacity import would_exceed
from core.clock import LocalTime, fmt_day, fmt_minute, local_time, weekday_name
from core.credit import HoldAnswer, refusal_message, yuan
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
    Product,
    Province,
    Reason,
    Request,
    Usage,
    Venue,
    VenueRule,
)
from core.ranking import RANK, RANKING
from core.slots import slot_label

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

_REVOKED_PROBLEM: _Problem = (Reason.REVOKED, LABELS[Reason.REVOKED])
_BLOCKED_PROBLEM: _Problem = (Reason.BLOCKED, LABELS[Reason.BLOCKED])
_NOT_COVERED_PROBLEM: _Problem = (Reason.VENUE_NOT_COVERED, LABELS[Reason.VENUE_NOT_COVERED])
_PAUSED_PROBLEM: _Problem = (Reason.VENUE_PAUSED, LABELS[Reason.VENUE_PAUSED])
_ENTRY_LIMIT_PROBLEM: _Problem = (Reason.ENTRY_LIMIT_REACHED, LABELS[Reason.ENTRY_LIMIT_REACHED])
_DAILY_LIMIT_PROBLEM: _Problem = (Reason.DAILY_LIMIT_REACHED, LABELS[Reason.DAILY_LIMIT_REACHED])
# Refusals of the pass itself: the gate shows no remaining entries with them.
_PASS_REFUSALS = frozenset(
    {Reason.REVOKED, Reason.BLOCKED, Reason.NOT_YET_VALID, Reason.EXPIRED, Reason.VENUE_NOT_COVERED}
)
# `_pay_later_charge` results besides a price.
_FREE_VISIT = -1
_NO_CREDIT = -2


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
    product = province.products.get(pass_.product_id)
    rule = product.venues.get(venue.venue_id) if product is not None else None
    # The checks of core.ranking.CHECK_ORDER, inline: this runs on every entry.
    problem = _pass_problem(pass_, local.day)
    if problem is None:
        if rule is None:
            problem = _NOT_COVERED_PROBLEM
        else:
            problem = _venue_problem(venue, rule, capacity, local, province.peak_days)
            if problem is None:
                problem = _holder_problem(venue, rule, usage, now_ms, local)
    if problem is None:
        assert product is not None and rule is not None
        credit = product.credit
        return _admit_on_terms(
            pass_, usage, venue, request, now_ms, credit, rule, alert, local, ledger
        )
    scan = _Scan(pass_, usage, venue, rule, product, capacity, local, now_ms, province.peak_days)
    scan.ledger = ledger
    reason, message = _closest(problem, scan)
    remaining = UNLIMITED
    if rule is not None and reason not in _PASS_REFUSALS:
        remaining = _remaining(rule.entries_per_period, usage.entries)
    return _refuse(request, pass_, reason, now_ms, alert, message, remaining)


def _pass_problem(pass_: PassRecord, day: int) -> _Problem | None:
    status = pass_.status
    if status == _REVOKED:
        return _REVOKED_PROBLEM
    if status == _BLOCKED:
        return _BLOCKED_PROBLEM
    if day < pass_.valid_from:
        return _not_yet_valid(pass_)
    if day > pass_.valid_until:
        return _expired(pass_)
    return None


def _venue_problem(
    venue: Venue,
    rule: VenueRule,
    capacity: CapacityView,
    local: LocalTime,
    peak_days: frozenset[int],
) -> _Problem | None:
    """Refusals that hold for every holder of this product at this venue right now."""
    # `_closed` and `_full` inlined: one call less each on every entry.
    if local.day in venue.closed_dates or not _within(_ranges(venue, local.weekday), local.minute):
        return Reason.VENUE_CLOSED, _closed_message(venue, local)
    if capacity.paused:
        return _PAUSED_PROBLEM
    occupancy, today = capacity.occupancy, capacity.entries_today
    if would_exceed(occupancy, venue.instant_capacity, today, venue.daily_capacity):
        return Reason.VENUE_FULL, _full_message(venue, occupancy)
    if _needs_booking(venue, rule, capacity):
        return Reason.RESERVATION_REQUIRED, _reservation_message(venue, capacity)
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
        return _ENTRY_LIMIT_PROBLEM
    per_day = rule.entries_per_day
    if per_day != UNLIMITED and _entries_today(usage, local.day) >= per_day:
        return _DAILY_LIMIT_PROBLEM
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
    """Last check: pay-later credit. Admits free, on credit, or plainly; or refuses credit.

    Every other check has passed here, so a credit refusal is the only failure: nothing closer
    to look for."""
    price = rule.pay_later_price_fen
    if credit is None or price <= 0:
        return _admit(pass_, usage, venue, request, now_ms, rule, alert, local, 0, False)
    charge = _pay_later_charge(pass_, usage, venue, credit, price, ledger)
    if charge == _FREE_VISIT:
        return _admit(pass_, usage, venue, request, now_ms, rule, alert, local, 0, True)
    if charge >= 0:
        return _admit(pass_, usage, venue, request, now_ms, rule, alert, local, charge, False)
    message = _credit_message(pass_, usage, credit, ledger)
    remaining = _remaining(rule.entries_per_period, usage.entries)
    return _refuse(request, pass_, Reason.CREDIT_DENIED, now_ms, alert, message, remaining)


def _pay_later_charge(
    pass_: PassRecord,
    usage: Usage,
    venue: Venue,
    credit: CreditPolicy,
    price: int,
    ledger: HoldAnswer | None = None,
) -> int:
    """What a pay-later entry costs: `_FREE_VISIT`, the price, or `_NO_CREDIT` when refused.
    With the holder-wide ledger's verdict it decides; without one, the debt seen at this venue."""
    if _first_visit_free(pass_, usage, venue, credit):
        return _FREE_VISIT
    if pass_.credit_tier not in credit.pay_later_tiers:
        return _NO_CREDIT
    if ledger is not None:
        return price if ledger.granted else _NO_CREDIT
    owed = pass_.outstanding_debt_fen + usage.charges_fen
    return price if owed + price <= credit.debt_limit_fen else _NO_CREDIT


# -- the closest failure --------------------------------------------------------------------------


class _Scan:
    """Everything the entry checks look at; built only for a refused entry."""

    __slots__ = (
        "capacity",
        "ledger",
        "local",
        "now_ms",
        "pass_",
        "peak_days",
        "product",
        "rule",
        "usage",
        "venue",
    )

    def __init__(
        self,
        pass_: PassRecord,
        usage: Usage,
        venue: Venue,
        rule: VenueRule | None,
        product: Product | None,
        capacity: CapacityView,
        local: LocalTime,
        now_ms: int,
        peak_days: frozenset[int],
    ) -> None:
        self.pass_ = pass_
        self.usage = usage
        self.venue = venue
        self.rule = rule
        self.product = product
        self.capacity = capacity
        self.local = local
        self.now_ms = now_ms
        self.peak_days = peak_days
        self.ledger: HoldAnswer | None = None


def _closest(first: _Problem, scan: _Scan) -> _Problem:
    """The failure to show: `first` unless a check ranked closer fails too."""
    limit = RANK[first[0]]
    for rank, check in _BY_RANK:
        if rank >= limit:
            break
        problem = check(scan)
        if problem is not None:
            return problem  # checks run closest first: the first failure found is the closest
    return first


def _check_revoked(s: _Scan) -> _Problem | None:
    return _REVOKED_PROBLEM if s.pass_.status == _REVOKED else None


def _check_blocked(s: _Scan) -> _Problem | None:
    return _BLOCKED_PROBLEM if s.pass_.status == _BLOCKED else None


def _check_not_yet_valid(s: _Scan) -> _Problem | None:
    return _not_yet_valid(s.pass_) if s.local.day < s.pass_.valid_from else None


def _check_expired(s: _Scan) -> _Problem | None:
    return _expired(s.pass_) if s.local.day > s.pass_.valid_until else None


def _check_not_covered(s: _Scan) -> _Problem | None:
    return _NOT_COVERED_PROBLEM if s.rule is None else None


def _check_closed(s: _Scan) -> _Problem | None:
    if not _closed(s.venue, s.local):
        return None
    return Reason.VENUE_CLOSED, _closed_message(s.venue, s.local)


def _check_paused(s: _Scan) -> _Problem | None:
    return _PAUSED_PROBLEM if s.capacity.paused else None


def _check_full(s: _Scan) -> _Problem | None:
    if not _full(s.venue, s.capacity):
        return None
    return Reason.VENUE_FULL, _full_message(s.venue, s.capacity.occupancy)


def _check_reservation(s: _Scan) -> _Problem | None:
    if not _needs_booking(s.venue, s.rule, s.capacity):
        return None
    return Reason.RESERVATION_REQUIRED, _reservation_message(s.venue, s.capacity)


def _check_window(s: _Scan) -> _Problem | None:
    windows = s.rule.peak_windows if s.rule is not None else _NO_RANGES
    minute = s.local.minute
    if not windows or s.local.day not in s.peak_days or _within(windows, minute):
        return None
    return Reason.OUTSIDE_TIME_WINDOW, _window_message(windows, minute)


def _check_passback(s: _Scan) -> _Problem | None:
    ap = s.venue.anti_passback
    if ap.mode != _HARD or not _recently_entered(ap, s.usage, s.now_ms):
        return None
    return Reason.ANTI_PASSBACK, _reentry_message(s.venue, ap, s.usage, s.local)


def _check_entry_limit(s: _Scan) -> _Problem | None:
    per_period = s.rule.entries_per_period if s.rule is not None else UNLIMITED
    if per_period == UNLIMITED or s.usage.entries < per_period:
        return None
    return _ENTRY_LIMIT_PROBLEM


def _check_daily_limit(s: _Scan) -> _Problem | None:
    per_day = s.rule.entries_per_day if s.rule is not None else UNLIMITED
    if per_day == UNLIMITED or _entries_today(s.usage, s.local.day) < per_day:
        return None
    return _DAILY_LIMIT_PROBLEM


def _check_credit(s: _Scan) -> _Problem | None:
    credit = s.product.credit if s.product is not None else None
    price = s.rule.pay_later_price_fen if s.rule is not None else 0
    if credit is None or price <= 0:
        return None
    if _pay_later_charge(s.pass_, s.usage, s.venue, credit, price, s.ledger) != _NO_CREDIT:
        return None
    return Reason.CREDIT_DENIED, _credit_message(s.pass_, s.usage, credit, s.ledger)


# One check per entry reason, in core.ranking.CHECK_ORDER (a unit test holds them to it).
_CHECKS: dict[Reason, Callable[[_Scan], _Problem | None]] = {
    Reason.REVOKED: _check_revoked,
    Reason.BLOCKED: _check_blocked,
    Reason.NOT_YET_VALID: _check_not_yet_valid,
    Reason.EXPIRED: _check_expired,
    Reason.VENUE_NOT_COVERED: _check_not_covered,
    Reason.VENUE_CLOSED: _check_closed,
    Reason.VENUE_PAUSED: _check_paused,
    Reason.VENUE_FULL: _check_full,
    Reason.RESERVATION_REQUIRED: _check_reservation,
    Reason.OUTSIDE_TIME_WINDOW: _check_window,
    Reason.ANTI_PASSBACK: _check_passback,
    Reason.ENTRY_LIMIT_REACHED: _check_entry_limit,
    Reason.DAILY_LIMIT_REACHED: _check_daily_limit,
    Reason.CREDIT_DENIED: _check_credit,
}
_BY_RANK: tuple[tuple[int, Callable[[_Scan], _Problem | None]], ...] = tuple(
    (RANK[reason], _CHECKS[reason]) for reason in RANKING
)


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


def _closed(venue: Venue, local: LocalTime) -> bool:
    day, minute = local.day, local.minute
    return day in venue.closed_dates or not _within(_ranges(venue, local.weekday), minute)


def _full(venue: Venue, capacity: CapacityView) -> bool:
    return would_exceed(
        capacity.occupancy, venue.instant_capacity, capacity.entries_today, venue.daily_capacity
    )


def _needs_booking(venue: Venue, rule: VenueRule | None, capacity: CapacityView) -> bool:
    """A reservation is needed and the pass has none for now: neither an unused one nor one it
    already used to enter within the same slot window (a re-entry)."""
    if capacity.reserved_slot is not None or capacity.reentry_slot is not None:
        return False
    return (
        venue.reservation_required
        or (rule is not None and rule.reservation_required)
        or (venue.reservation_only_at_red and capacity.alert >= _RED)
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
        return f"welcome: pay later {yuan(charge)} yuan"
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


def _reservation_message(venue: Venue, capacity: CapacityView) -> str:
    held = capacity.held_slot
    if held is not None:
        # The pass already holds a later slot today: booking another is not what would work.
        opens = max(0, held.start_min - venue.reservation_tolerance_before_min)
        return "reserved " + slot_label(held) + ": entry from " + fmt_minute(opens)
    nxt = capacity.next_free_slot
    return "reserve a slot: next free " + nxt if nxt else _NO_SLOT


def _not_yet_valid(pass_: PassRecord) -> _Problem:
    return Reason.NOT_YET_VALID, "valid from " + fmt_day(pass_.valid_from)


def _expired(pass_: PassRecord) -> _Problem:
    return Reason.EXPIRED, "expired " + fmt_day(pass_.valid_until)


def _credit_message(
    pass_: PassRecord, usage: Usage, credit: CreditPolicy, ledger: HoldAnswer | None = None
) -> str:
    if pass_.credit_tier not in credit.pay_later_tiers:
        return LABELS[Reason.CREDIT_DENIED]
    if ledger is not None:
        return refusal_message(ledger)
    owed = pass_.outstanding_debt_fen + usage.charges_fen
    return f"debt over limit: owe {yuan(owed)} of {yuan(credit.debt_limit_fen)} yuan"


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
