"""A task's slots: cron, interval or one-off, read in its zone, with its calendar's days left out.

Pure: every "now" is passed in. The tick, the API's schedule and backfill endpoints and
the admin all ask a ``Schedule``, so what is listed is what runs.

* cron: ``cron.py``'s fire times (its DST rules).
* interval: ``anchor + k * interval_seconds``, k >= 1, in elapsed time (no zone involved).
* one-off: ``run_at``, once.
* a calendar removes every slot whose date, in the task's zone, it excludes. A slot on an
  excluded day moves the search to the next open day (not the next slot), so an
  every-second schedule next to a long holiday costs one step, not 86,400 per day.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from . import cron

ONE_MICROSECOND = timedelta(microseconds=1)
# Slots in a row found on excluded days before a schedule counts as never firing again
# (cron "0 0 * * 1" with Mondays excluded lands on one every week, forever).
MAX_EXCLUDED_STEPS = 5000


@dataclass(frozen=True)
class Calendar:
    exclude_dates: frozenset[date] = frozenset()
    exclude_weekdays: frozenset[int] = frozenset()  # ISO: 1 = Monday

    @classmethod
    def from_lists(cls, dates: Iterable[str], weekdays: Iterable[int]) -> Calendar:
        return cls(frozenset(date.fromisoformat(day) for day in dates), frozenset(weekdays))

    def excludes(self, day: date) -> bool:
        return day in self.exclude_dates or day.isoweekday() in self.exclude_weekdays

    def open_day(self, day: date, step: int) -> date:
        """The first day from ``day`` on (``step`` 1) or back (``step`` -1) that is not excluded.
        Every date excluded can close at most one open weekday a week, so the search ends."""
        for _ in range(7 * (len(self.exclude_dates) + 1)):
            if not self.excludes(day):
                return day
            day += timedelta(days=step)
        raise AssertionError("a calendar leaves at least one weekday open")


@dataclass(frozen=True)
class Schedule:
    """One task's slots. At most one of ``cron_expression``, ``interval_seconds``, ``run_at``
    is set; with none set the task has no slots of its own (it runs after its parents)."""

    cron_expression: str | None = None
    interval_seconds: int | None = None
    anchor: datetime | None = None  # interval slots count from here
    run_at: datetime | None = None
    timezone: str = "UTC"
    calendar: Calendar | None = None

    @property
    def kind(self) -> str | None:
        if self.cron_expression is not None:
            return "cron"
        if self.interval_seconds is not None:
            return "interval"
        if self.run_at is not None:
            return "once"
        return None

    # --- the slots --------------------------------------------------------------------

    def next_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after ``moment``; None if there is none (before the year 10000)."""
        try:
            return self._next_included(moment)
        except OverflowError:  # the next slot or excluded day lies past datetime.max
            return None

    def latest_until(self, moment: datetime) -> datetime | None:
        """The last slot at or before ``moment``; None if there is none."""
        try:
            return self._latest_included(moment)
        except OverflowError:
            return None

    def _next_included(self, moment: datetime) -> datetime | None:
        for _ in range(MAX_EXCLUDED_STEPS):
            slot = self._raw_next(moment)
            if slot is None or not self._excluded(slot):
                return slot
            # On to the next open day; never backwards (a fall-back at midnight can put the
            # next day's start before this slot).
            assert self.calendar is not None
            open_day = self.calendar.open_day(self._local_date(slot) + timedelta(days=1), 1)
            moment = max(slot, self._day_start(open_day) - ONE_MICROSECOND)
        return None

    def _latest_included(self, moment: datetime) -> datetime | None:
        for _ in range(MAX_EXCLUDED_STEPS):
            slot = self._raw_latest(moment)
            if slot is None or not self._excluded(slot):
                return slot
            assert self.calendar is not None
            open_day = self.calendar.open_day(self._local_date(slot) - timedelta(days=1), -1)
            moment = min(slot, self._day_start(open_day + timedelta(days=1))) - ONE_MICROSECOND
        return None

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` slots strictly after ``after``."""
        slots: list[datetime] = []
        slot = self.next_after(after)
        while slot is not None and len(slots) < count:
            slots.append(slot)
            slot = self.next_after(slot)
        return slots

    def between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The slots with ``start <= slot <= end``, oldest first; at most ``limit + 1`` of them,
        so that a caller can tell "exactly limit" from "more than limit"."""
        slots: list[datetime] = []
        slot = self.next_after(start - ONE_MICROSECOND)
        while slot is not None and slot <= end and len(slots) <= limit:
            slots.append(slot)
            slot = self.next_after(slot)
        return slots

    def describe(self) -> str:
        if self.cron_expression is not None:
            text = cron.describe(self.cron_expression)
            if self.timezone != "UTC":
                text += f" ({self.timezone})"
        elif self.interval_seconds is not None:
            text = f"Every {_duration(self.interval_seconds)}"
        elif self.run_at is not None:
            text = f"Once, at {self.run_at.astimezone(timezone.utc).isoformat()}"
        else:
            return "After its parents succeed"
        if self.calendar is not None:
            text += ", except on the calendar's excluded days"
        return text

    # --- the rules before the calendar ------------------------------------------------

    def _raw_next(self, moment: datetime) -> datetime | None:
        if self.cron_expression is not None:
            # fire_times, not next_fire_time: near the year 10000 it ends the list instead of raising.
            following = cron.fire_times(self.cron_expression, self.timezone, moment, 1)
            return following[0] if following else None
        if self.interval_seconds is not None:
            assert self.anchor is not None, "an interval schedule needs its anchor"
            step = timedelta(seconds=self.interval_seconds)
            passed = max((moment - self.anchor) // step, 0)
            return self.anchor + (passed + 1) * step
        if self.run_at is not None:
            return self.run_at if self.run_at > moment else None
        return None

    def _raw_latest(self, moment: datetime) -> datetime | None:
        if self.cron_expression is not None:
            return cron.previous_fire_time(self.cron_expression, self.timezone, moment + ONE_MICROSECOND)
        if self.interval_seconds is not None:
            assert self.anchor is not None, "an interval schedule needs its anchor"
            step = timedelta(seconds=self.interval_seconds)
            passed = (moment - self.anchor) // step
            return self.anchor + passed * step if passed >= 1 else None
        if self.run_at is not None:
            return self.run_at if self.run_at <= moment else None
        return None

    # --- days in the task's zone --------------------------------------------------------

    @property
    def _zone(self) -> ZoneInfo:
        return cron.parse_timezone(self.timezone)

    def _local_date(self, moment: datetime) -> date:
        return moment.astimezone(self._zone).date()

    def _excluded(self, slot: datetime) -> bool:
        return self.calendar is not None and self.calendar.excludes(self._local_date(slot))

    def _day_start(self, day: date) -> datetime:
        # fold=0: a midnight that a spring-forward skips maps to the gap's start, which is
        # the first instant of that day.
        return datetime.combine(day, time(0), tzinfo=self._zone).astimezone(timezone.utc)


def jitter_offset(task_id: int, slot: datetime, jitter_seconds: int) -> timedelta:
    """How long after ``slot`` the task starts: spread evenly over 0..jitter_seconds (in
    milliseconds) by a hash of the task and the slot, like Jenkins' ``H``. Every process
    draws the same delay for the same slot, so the draw needs no coordination."""
    if jitter_seconds <= 0:
        return timedelta(0)
    key = f"{task_id}/{slot.timestamp()}".encode()
    draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return timedelta(milliseconds=draw % (jitter_seconds * 1000 + 1))


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}s" if count != 1 else unit
    return f"{seconds} seconds" if seconds != 1 else "second"
