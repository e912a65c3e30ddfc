"""Cron expressions read in an IANA zone, answered as UTC instants.

The only module that imports croniter and cron_descriptor. It never reads the
clock: every "now" is passed in.

Expressions: 5 fields (minute hour day-of-month month day-of-week), 6 fields
with the seconds field *last* (croniter's form, so ``"* * * * * */5"`` is every
5 seconds), and the aliases @yearly @annually @monthly @weekly @daily
@midnight @hourly. Day-of-month and day-of-week combine as in Vixie cron: when
both are restricted, a day matching either one matches.

Daylight-saving rules (the contract the rest of the service relies on):

* A wall-clock time skipped by a spring-forward gap fires once, at the first
  instant after the gap, when the hour field is fixed (numbers, lists or
  ranges). Several skipped times collapse into that one run.
* A wall-clock time that a fall-back repeats fires once, at its first
  occurrence, when the hour field is fixed.
* When the hour field is ``*`` or a step (``*/2``, ``1-23/2``; also @hourly),
  the schedule follows elapsed time instead: both occurrences of a repeated
  time fire and a skipped time does not fire at all.

How it is computed: wall-clock matches come from a small matcher over
croniter's expanded fields (croniter itself is used for L, # and W, which the
matcher does not know). The zone's offset transitions split time into spans of
constant offset; within a span a wall time maps to one instant, and the rules
above only act where a candidate crosses into the next span. Zones without
transitions (UTC, Etc/GMT+5) skip all of that.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cron_descriptor
from croniter import croniter

__all__ = [
    "CronError",
    "describe",
    "fire_times",
    "next_fire_time",
    "parse_timezone",
    "previous_fire_time",
    "validate",
]

_UTC = dt_timezone.utc
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)

# Feb 29 needs 8 years (2096 -> 2104) and "5th Monday of February" up to 40,
# so 50 years without a match means the expression never matches.
_MAX_YEARS = 50
_MIN_YEAR, _MAX_YEAR = 2, 9998  # keep datetime arithmetic away from its limits
# Fire times lie at most _MAX_YEARS apart and zones change offset about twice a
# year, so a search never crosses more transitions than this.
_MAX_SPANS = 4 * _MAX_YEARS + 16

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter splits on ASCII whitespace only; count fields the same way.
_FIELD_RE = re.compile(r"\S+", re.ASCII)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(ValueError):
    """Bad expression or zone; str(e) is a one-line human message."""


# ---------------------------------------------------------------------------
# Zones


def parse_timezone(name: str) -> ZoneInfo:
    """The zone called ``name`` (an IANA key such as "Europe/Berlin")."""
    if not isinstance(name, str) or not name:
        raise CronError(f"unknown time zone {name!r}")
    return _load_zone(name)


@lru_cache(maxsize=1024)
def _load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    # ValueError: malformed key ("../x"); OSError: a directory such as "America".
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown time zone {name!r}") from None


class _Transition(NamedTuple):
    at: datetime  # naive UTC: the first instant with the new offset
    before: timedelta
    after: timedelta


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta:
    """The zone's UTC offset at the naive-UTC ``instant``."""
    offset = zone.fromutc(instant.replace(tzinfo=zone)).utcoffset()
    assert offset is not None
    return offset


@lru_cache(maxsize=4096)
def _year_transitions(zone: ZoneInfo, year: int) -> tuple[tuple[datetime, ...], tuple[_Transition, ...]]:
    """Offset changes with Jan 1 ``year`` < at <= Jan 1 ``year + 1`` (UTC), and their instants.

    zoneinfo has no public list of transitions, so sample daily and bisect each
    change down to the second; this assumes no zone changes its offset twice
    within one day, which holds for every zone in current tzdata.
    """
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        return (), ()
    found: list[_Transition] = []
    moment = datetime(year, 1, 1)
    offset = _offset_at(zone, moment)
    end = datetime(year + 1, 1, 1)
    while moment < end:
        following = moment + _DAY
        new_offset = _offset_at(zone, following)
        if new_offset != offset:
            low, high = 0, 86400  # seconds after `moment`; low has the old offset, high the new
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_at(zone, moment + timedelta(seconds=middle)) == offset:
                    low = middle
                else:
                    high = middle
            found.append(_Transition(moment + timedelta(seconds=high), offset, new_offset))
        moment, offset = following, new_offset
    return tuple(item.at for item in found), tuple(found)


def _first_transition(zone: ZoneInfo, low: datetime, high: datetime) -> _Transition | None:
    """The earliest transition with ``low < at <= high``."""
    for year in range(low.year, min(high.year, _MAX_YEAR) + 1):
        instants, transitions = _year_transitions(zone, year)
        index = bisect_right(instants, low)
        if index < len(instants):
            return transitions[index] if instants[index] <= high else None
    return None


def _last_transition(zone: ZoneInfo, low: datetime, high: datetime) -> _Transition | None:
    """The latest transition with ``low < at < high``."""
    for year in range(high.year, max(low.year - 1, _MIN_YEAR) - 1, -1):
        instants, transitions = _year_transitions(zone, year)
        index = bisect_left(instants, high) - 1
        if index >= 0:
            return transitions[index] if instants[index] > low else None
    return None


# ---------------------------------------------------------------------------
# Expressions


class _Spec:
    """A parsed expression: sorted allowed values per field plus the DST mode."""

    __slots__ = (
        "canonical", "has_seconds", "fixed_hour", "use_croniter",
        "seconds", "minutes", "hours", "months", "doms", "dow_next", "dow_prev",
    )

    def __init__(self, canonical: str, fields: list[str], expanded: list[list], use_croniter: bool) -> None:
        self.canonical = canonical
        self.has_seconds = len(fields) == 6
        hour_tokens = fields[1].split(",")
        # A `*` or a step in the hour field means "every so often": such
        # schedules follow elapsed time across DST changes (see module doc).
        self.fixed_hour = not any(token.startswith("*") or "/" in token for token in hour_tokens)
        self.use_croniter = use_croniter
        if use_croniter:
            return

        def values(index: int, low: int, high: int) -> tuple[int, ...]:
            field = expanded[index]
            return tuple(range(low, high + 1)) if field == ["*"] else tuple(sorted(field))

        self.minutes = values(0, 0, 59)
        self.hours = values(1, 0, 23)
        self.months = values(3, 1, 12)
        self.seconds = values(5, 0, 59) if self.has_seconds else (0,)
        self.doms = None if expanded[2] == ["*"] else tuple(sorted(expanded[2]))
        if expanded[4] == ["*"]:
            self.dow_next = self.dow_prev = None
        else:
            # For each cron weekday (0 = Sunday), how many days forward or back
            # to the nearest allowed weekday.
            allowed = set(expanded[4])
            self.dow_next = tuple(
                next(k for k in range(7) if (day + k) % 7 in allowed) for day in range(7)
            )
            self.dow_prev = tuple(
                next(k for k in range(7) if (day - k) % 7 in allowed) for day in range(7)
            )


def _compile(expression: str) -> _Spec:
    if not isinstance(expression, str):
        raise CronError(f"cron expression must be a string, not {type(expression).__name__}")
    return _compile_text(expression)


@lru_cache(maxsize=4096)
def _compile_text(expression: str) -> _Spec:
    text = expression.strip()
    if not text:
        raise CronError("cron expression is empty")
    if text.startswith("@"):
        canonical = _ALIASES.get(text.lower())
        if canonical is None:
            raise CronError(f"unknown cron alias {text!r}; use one of {', '.join(_ALIASES)}")
    else:
        canonical = text
    fields = _FIELD_RE.findall(canonical)
    if len(fields) not in (5, 6):
        count = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
        raise CronError(f"cron expression {text!r} has {count}; expected 5, or 6 with seconds last")
    for field in fields:
        # H needs a per-task seed and R re-rolls on every parse, which would make
        # next and previous fire times disagree between calls.
        if field[:1] in ("H", "h", "R", "r"):
            raise CronError(f"cron expression {text!r}: hashed (H) and random (R) values are not supported")
    try:
        expanded, nth_weekday = croniter.expand(canonical)
    except ValueError as exc:  # every croniter parse error is a ValueError
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1] if lines else type(exc).__name__
        raise CronError(f"invalid cron expression {text!r}: {detail}") from None
    plain = all(isinstance(value, int) for field in expanded for value in field if value != "*")
    # L, # and W depend on the month's calendar; leave those to croniter.
    use_croniter = bool(nth_weekday) or not plain or "w" in fields[2].lower()
    return _Spec(canonical, fields, expanded, use_croniter)


@lru_cache(maxsize=4096)
def _schedule(expression: str) -> _Spec:
    """The compiled expression, checked to match at least once."""
    spec = _compile_text(expression)
    if _wall_next(spec, datetime(2000, 1, 1)) is None:
        raise CronError(f"cron expression {expression.strip()!r}: expression never matches")
    return spec


def _checked(expression: str) -> _Spec:
    _compile(expression)  # type check and syntax errors first
    return _schedule(expression)


# ---------------------------------------------------------------------------
# Wall-clock matching (naive local datetimes, no zone)


def _days_in(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month]


def _next_day(spec: _Spec, year: int, month: int, day: int, last: int) -> int | None:
    """The first matching day >= ``day`` in the month, if any."""
    if day > last:
        return None
    doms, dow_next = spec.doms, spec.dow_next
    if doms is None and dow_next is None:
        return day
    best = None
    if doms is not None:
        index = bisect_left(doms, day)
        if index < len(doms) and doms[index] <= last:
            best = doms[index]
    if dow_next is not None:
        candidate = day + dow_next[(date(year, month, day).weekday() + 1) % 7]
        if candidate <= last and (best is None or candidate < best):
            best = candidate
    return best


def _prev_day(spec: _Spec, year: int, month: int, day: int) -> int | None:
    """The last matching day <= ``day`` in the month, if any."""
    if day < 1:
        return None
    doms, dow_prev = spec.doms, spec.dow_prev
    if doms is None and dow_prev is None:
        return day
    best = None
    if doms is not None:
        index = bisect_right(doms, day) - 1
        if index >= 0:
            best = doms[index]
    if dow_prev is not None:
        candidate = day - dow_prev[(date(year, month, day).weekday() + 1) % 7]
        if candidate >= 1 and (best is None or candidate > best):
            best = candidate
    return best


def _scan_forward(spec: _Spec, start: datetime) -> datetime | None:
    """The first matching wall time >= ``start`` (whole seconds)."""
    months, hours, minutes, seconds = spec.months, spec.hours, spec.minutes, spec.seconds
    y, mo, d, h, mi, se = start.year, start.month, start.day, start.hour, start.minute, start.second
    last_year = min(y + _MAX_YEARS, _MAX_YEAR)
    # Each `continue` moves to the start of the next month, day, hour or minute.
    while True:
        index = bisect_left(months, mo)
        if index == len(months):
            y, mo, d, h, mi, se = y + 1, months[0], 1, 0, 0, 0
        elif months[index] != mo:
            mo, d, h, mi, se = months[index], 1, 0, 0, 0
        if y > last_year:
            return None
        day = _next_day(spec, y, mo, d, _days_in(y, mo))
        if day is None:
            mo, d, h, mi, se = mo + 1, 1, 0, 0, 0
            continue
        if day != d:
            d, h, mi, se = day, 0, 0, 0
        index = bisect_left(hours, h)
        if index == len(hours):
            d, h, mi, se = d + 1, 0, 0, 0
            continue
        if hours[index] != h:
            h, mi, se = hours[index], 0, 0
        index = bisect_left(minutes, mi)
        if index == len(minutes):
            h, mi, se = h + 1, 0, 0
            continue
        if minutes[index] != mi:
            mi, se = minutes[index], 0
        index = bisect_left(seconds, se)
        if index == len(seconds):
            mi, se = mi + 1, 0
            continue
        return datetime(y, mo, d, h, mi, seconds[index])


def _scan_backward(spec: _Spec, start: datetime) -> datetime | None:
    """The last matching wall time <= ``start`` (whole seconds)."""
    months, hours, minutes, seconds = spec.months, spec.hours, spec.minutes, spec.seconds
    y, mo, d, h, mi, se = start.year, start.month, start.day, start.hour, start.minute, start.second
    first_year = max(y - _MAX_YEARS, _MIN_YEAR)
    # Each `continue` moves to the end of the previous month, day, hour or
    # minute; day 31 stands for "the month's last day".
    while True:
        index = bisect_right(months, mo) - 1
        if index < 0:
            y, mo, d, h, mi, se = y - 1, months[-1], 31, 23, 59, 59
        elif months[index] != mo:
            mo, d, h, mi, se = months[index], 31, 23, 59, 59
        if y < first_year:
            return None
        d = min(d, _days_in(y, mo))
        day = _prev_day(spec, y, mo, d)
        if day is None:
            mo, d, h, mi, se = mo - 1, 31, 23, 59, 59
            continue
        if day != d:
            d, h, mi, se = day, 23, 59, 59
        index = bisect_right(hours, h) - 1
        if index < 0:
            d, h, mi, se = d - 1, 23, 59, 59
            continue
        if hours[index] != h:
            h, mi, se = hours[index], 59, 59
        index = bisect_right(minutes, mi) - 1
        if index < 0:
            h, mi, se = h - 1, 59, 59
            continue
        if minutes[index] != mi:
            mi, se = minutes[index], 59
        index = bisect_right(seconds, se) - 1
        if index < 0:
            mi, se = mi - 1, 59
            continue
        return datetime(y, mo, d, h, mi, seconds[index])


def _wall_next(spec: _Spec, wall: datetime) -> datetime | None:
    """The first matching wall time strictly after ``wall``."""
    step = _SECOND if spec.has_seconds else _MINUTE
    floor = wall.replace(microsecond=0) if spec.has_seconds else wall.replace(second=0, microsecond=0)
    if not _MIN_YEAR <= floor.year <= _MAX_YEAR:
        return None
    if spec.use_croniter:
        # croniter steps one unit past a whole-unit start, i.e. strictly after it.
        try:
            return croniter(
                spec.canonical, floor, max_years_between_matches=_MAX_YEARS
            ).get_next(datetime)
        except (ValueError, OverflowError):  # CroniterBadDateError: no match in range
            return None
    return _scan_forward(spec, floor + step)


def _wall_prev(spec: _Spec, wall: datetime) -> datetime | None:
    """The last matching wall time strictly before ``wall``."""
    step = _SECOND if spec.has_seconds else _MINUTE
    floor = wall.replace(microsecond=0) if spec.has_seconds else wall.replace(second=0, microsecond=0)
    if not _MIN_YEAR <= floor.year <= _MAX_YEAR:
        return None
    if spec.use_croniter:
        # croniter's previous is strictly before a whole-unit start.
        ceiling = floor if floor == wall else floor + step
        try:
            return croniter(
                spec.canonical, ceiling, max_years_between_matches=_MAX_YEARS
            ).get_prev(datetime)
        except (ValueError, OverflowError):
            return None
    return _scan_backward(spec, floor if floor < wall else floor - step)


# ---------------------------------------------------------------------------
# Wall times to instants (all instants are naive UTC here)


def _next_instant(spec: _Spec, zone: ZoneInfo, after: datetime) -> datetime | None:
    if not _MIN_YEAR <= after.year <= _MAX_YEAR:
        return None
    # zoneinfo gives an offset without a datetime only for zones that never
    # change it (UTC, Etc/GMT+5); for any other zone the general path below applies.
    fixed = zone.utcoffset(None)
    if fixed is not None:
        wall = _wall_next(spec, after + fixed)
        return None if wall is None else wall - fixed

    # Walk the spans of constant offset from `after` on. In the current span
    # (starting at instant `start`, offset `offset`) look for walls > `floor`.
    start, offset = after, _offset_at(zone, after)
    floor = after + offset
    if spec.fixed_hour:
        behind = _last_transition(zone, after - _DAY, after + _MICROSECOND)
        if behind is not None and behind.before > behind.after and floor < behind.at + behind.before:
            # `after` lies in the repeat of a fall-back; the repeated walls already fired.
            floor = behind.at + behind.before - _MICROSECOND
    for _ in range(_MAX_SPANS):
        wall = _wall_next(spec, floor)
        if wall is None:
            return None
        candidate = wall - offset
        ahead = _first_transition(zone, start, candidate)
        if ahead is None:
            return candidate
        # The candidate lies beyond the span, so `wall` >= the span's last wall.
        if spec.fixed_hour and ahead.after > ahead.before and wall < ahead.at + ahead.after:
            return ahead.at  # a wall time in the gap runs right after it
        start, offset = ahead.at, ahead.after
        # Fixed hours skip the repeated walls of a fall-back; stepped hours run them again.
        floor = ahead.at + (max(ahead.before, ahead.after) if spec.fixed_hour else ahead.after) - _MICROSECOND
    return None


def _previous_instant(spec: _Spec, zone: ZoneInfo, before: datetime) -> datetime | None:
    if not _MIN_YEAR <= before.year <= _MAX_YEAR:
        return None
    fixed = zone.utcoffset(None)
    if fixed is not None:
        wall = _wall_prev(spec, before + fixed)
        return None if wall is None else wall - fixed

    # The mirror of _next_instant: spans from `before` backwards, walls < `ceiling`.
    end, offset = before, _offset_at(zone, before - _MICROSECOND)
    ceiling = before + offset
    for _ in range(_MAX_SPANS):
        wall = _wall_prev(spec, ceiling)
        if wall is None:
            return None
        candidate = wall - offset
        # Transitions more than a day before the candidate cannot affect it.
        behind = _last_transition(zone, candidate - _DAY, end)
        if behind is None:
            return candidate
        if candidate >= behind.at:
            repeat = spec.fixed_hour and behind.before > behind.after and wall < behind.at + behind.before
            if not repeat:
                return candidate
            # A fixed hour's repeated wall: its first occurrence is in the previous span.
        elif spec.fixed_hour and behind.after > behind.before and wall >= behind.at + behind.before:
            return behind.at  # the wall lies in the gap, whose run is at the gap's end
        end, offset = behind.at, behind.before
        ceiling = behind.at + behind.before
    return None


def _utc_naive(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(_UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------
# Public API


def validate(expression: str, timezone: str = "UTC") -> None:
    """Raise CronError unless ``expression`` is usable in ``timezone`` and ever fires."""
    _checked(expression)
    parse_timezone(timezone)


def next_fire_time(expression: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after the aware ``after``, as an aware UTC datetime."""
    spec = _checked(expression)
    zone = parse_timezone(timezone)
    result = _next_instant(spec, zone, _utc_naive(after, "after"))
    if result is None:  # only near the end of the datetime range
        raise CronError(f"cron expression {expression.strip()!r}: no fire time after {after.isoformat()}")
    return result.replace(tzinfo=_UTC)


def fire_times(expression: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, ascending, aware UTC."""
    if count < 0:
        raise ValueError("count must be >= 0")
    spec = _checked(expression)
    zone = parse_timezone(timezone)
    moment = _utc_naive(after, "after")
    times: list[datetime] = []
    for _ in range(count):
        following = _next_instant(spec, zone, moment)
        if following is None:
            break  # only near the end of the datetime range
        times.append(following.replace(tzinfo=_UTC))
        moment = following
    return times


def previous_fire_time(expression: str, timezone: str, before: datetime) -> datetime | None:
    """The last fire time strictly before the aware ``before`` (aware UTC).

    None when there is none within about 50 years. The latest slot at or before
    ``now`` is ``previous_fire_time(expression, zone, now + 1 microsecond)``.
    """
    spec = _checked(expression)
    zone = parse_timezone(timezone)
    result = _previous_instant(spec, zone, _utc_naive(before, "before"))
    return None if result is None else result.replace(tzinfo=_UTC)


def describe(expression: str) -> str:
    """An English description, e.g. "At 01:30 AM", in the task zone's wall clock.

    Needs only valid syntax: an expression that never matches is still described.
    """
    spec = _compile(expression)
    fields = _FIELD_RE.findall(spec.canonical)
    if spec.has_seconds:
        # cron_descriptor expects the seconds field first.
        fields = fields[5:] + fields[:5]
    # Pin the language and clock format: the default follows the host's locale.
    options = cron_descriptor.Options(locale_code="en_US", use_24hour_time_format=False)
    try:
        return cron_descriptor.get_description(" ".join(fields), options)
    except Exception:  # noqa: BLE001 - a description is a nicety; croniter accepted the expression
        return spec.canonical
