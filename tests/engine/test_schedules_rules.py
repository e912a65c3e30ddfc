"""The slot rules of engine/schedules.py, pure (no database, no clock): cron, interval and one-off
schedules with and without a calendar, in zones far from UTC and across their DST changes;
property tests of next_after / latest_until / upcoming / between; jitter_offset."""
from __future__ import annotations

import dataclasses
import os
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scheduler_service.engine.schedules import Calendar, Schedule, jitter_offset

UTC = timezone.utc
MICRO = timedelta(microseconds=1)
CHATHAM, KOLKATA, ST_JOHNS = "Pacific/Chatham", "Asia/Kolkata", "America/St_Johns"
FAR_ZONES = (CHATHAM, KOLKATA, ST_JOHNS)
ALL_ZONES = (*FAR_ZONES, "UTC", "Europe/Berlin")
# SCHEDULE_PROPERTY_EXAMPLES=5000 for a longer hunt; the default keeps the file to a few seconds.
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("SCHEDULE_PROPERTY_EXAMPLES", "80")), deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


# --- helpers -------------------------------------------------------------------------


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def transitions(zone_name: str, year: int = 2026) -> list[tuple[datetime, timedelta, timedelta]]:
    """(instant, offset before, offset after) of each offset change of the zone in ``year``,
    found with zoneinfo: an hourly scan, then bisection to the second."""
    zone = ZoneInfo(zone_name)

    def offset(moment: datetime) -> timedelta:
        return moment.astimezone(zone).utcoffset()

    found = []
    moment, end = utc(year, 1, 1), utc(year + 1, 1, 1)
    while moment < end:
        following = moment + timedelta(hours=1)
        if offset(moment) != offset(following):
            low, high = moment, following  # offset(low) != offset(high)
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append((high, offset(low), offset(high)))
        moment = following
    return found


def local_date(moment: datetime, zone_name: str) -> date:
    return moment.astimezone(ZoneInfo(zone_name)).date()


def day_start(day: date, zone_name: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone_name)).astimezone(UTC)


def reference_between(schedule: Schedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """``between`` as the contract states it: ``upcoming`` from just before start, while <= end."""
    return [slot for slot in schedule.upcoming(start - MICRO, limit + 1) if slot <= end]


def without_calendar(schedule: Schedule) -> Schedule:
    return dataclasses.replace(schedule, calendar=None)


def filtered_by_calendar(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Independent of the calendar stepping: every raw slot in [start, end], less the excluded local dates."""
    raw = without_calendar(schedule).between(start, end, 100000)
    assert len(raw) <= 100000
    return [slot for slot in raw if not schedule.calendar.excludes(local_date(slot, schedule.timezone))]


@dataclasses.dataclass(frozen=True)
class CountingSchedule(Schedule):
    """A Schedule that counts the raw (pre-calendar) steps it takes."""

    steps: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def _raw_next(self, moment):
        self.steps.append(("next", moment))
        return super()._raw_next(moment)

    def _raw_latest(self, moment):
        self.steps.append(("latest", moment))
        return super()._raw_latest(moment)


# --- the zones' transitions (what the tests below rely on) ------------------------------


def test_the_zones_change_offset_as_expected_in_2026():
    chatham = transitions(CHATHAM)
    st_johns = transitions(ST_JOHNS)
    assert transitions(KOLKATA) == []
    assert [(before, after) for _, before, after in chatham] == [
        (timedelta(hours=13, minutes=45), timedelta(hours=12, minutes=45)),
        (timedelta(hours=12, minutes=45), timedelta(hours=13, minutes=45)),
    ]
    assert [(before, after) for _, before, after in st_johns] == [
        (-timedelta(hours=3, minutes=30), -timedelta(hours=2, minutes=30)),
        (-timedelta(hours=2, minutes=30), -timedelta(hours=3, minutes=30)),
    ]
    # St John's: 2026-03-08 02:00 NST and 2026-11-01 02:00 NDT
    assert [instant for instant, _, _ in st_johns] == [utc(2026, 3, 8, 5, 30), utc(2026, 11, 1, 4, 30)]


# --- cron, interval, one-off without a calendar -----------------------------------------


def test_cron_slots_in_kolkata():
    schedule = Schedule(cron_expression="0 9 * * *", timezone=KOLKATA)
    assert schedule.next_after(utc(2026, 6, 1)) == utc(2026, 6, 1, 3, 30)
    assert schedule.next_after(utc(2026, 6, 1, 3, 30)) == utc(2026, 6, 2, 3, 30)  # strictly after
    assert schedule.latest_until(utc(2026, 6, 1, 3, 30)) == utc(2026, 6, 1, 3, 30)  # at or before
    assert schedule.latest_until(utc(2026, 6, 1, 3, 30) - MICRO) == utc(2026, 5, 31, 3, 30)
    assert schedule.upcoming(utc(2026, 6, 1), 3) == [utc(2026, 6, d, 3, 30) for d in (1, 2, 3)]
    assert schedule.between(utc(2026, 6, 1, 3, 30), utc(2026, 6, 3, 3, 30), 10) == [
        utc(2026, 6, d, 3, 30) for d in (1, 2, 3)]


def test_cron_slots_across_st_johns_spring_forward():
    schedule = Schedule(cron_expression="30 2 * * *", timezone=ST_JOHNS)
    assert schedule.upcoming(utc(2026, 3, 7), 3) == [
        utc(2026, 3, 7, 6, 0),   # 02:30 NST (-03:30)
        utc(2026, 3, 8, 5, 30),  # 02:30 does not exist: right after the gap, 03:00 NDT
        utc(2026, 3, 9, 5, 0),   # 02:30 NDT (-02:30)
    ]
    assert schedule.latest_until(utc(2026, 3, 9)) == utc(2026, 3, 8, 5, 30)


def test_cron_slots_across_chatham_fall_back_run_a_repeated_time_once():
    # 2026-04-05 03:45 CHADT (+13:45) becomes 02:45 CHAST (+12:45): 03:00 happens twice.
    schedule = Schedule(cron_expression="0 3 * * *", timezone=CHATHAM)
    slots = schedule.between(utc(2026, 4, 3), utc(2026, 4, 6), 10)
    assert slots == [utc(2026, 4, 3, 13, 15), utc(2026, 4, 4, 13, 15), utc(2026, 4, 5, 14, 15)]


def test_interval_slots_count_from_the_anchor():
    anchor = utc(2026, 1, 1, 0, 0, 0)
    schedule = Schedule(interval_seconds=90, anchor=anchor, timezone=CHATHAM)
    assert schedule.next_after(anchor - timedelta(days=300)) == anchor + timedelta(seconds=90)
    assert schedule.next_after(anchor) == anchor + timedelta(seconds=90)
    assert schedule.next_after(anchor + timedelta(seconds=90)) == anchor + timedelta(seconds=180)
    assert schedule.latest_until(anchor + timedelta(seconds=179)) == anchor + timedelta(seconds=90)
    assert schedule.latest_until(anchor + timedelta(seconds=89)) is None  # the anchor is not a slot
    assert schedule.latest_until(anchor) is None
    assert schedule.between(anchor, anchor + timedelta(seconds=270), 10) == [
        anchor + timedelta(seconds=s) for s in (90, 180, 270)]
    # elapsed time: a DST change does not move interval slots
    across = Schedule(interval_seconds=3600, anchor=utc(2026, 3, 8), timezone=ST_JOHNS)
    assert across.between(utc(2026, 3, 8, 4), utc(2026, 3, 8, 7), 10) == [utc(2026, 3, 8, h) for h in (4, 5, 6, 7)]


def test_a_one_off_has_one_slot():
    run_at = utc(2026, 7, 1, 12, 0, 0)
    schedule = Schedule(run_at=run_at, timezone=KOLKATA)
    assert schedule.next_after(run_at - MICRO) == run_at
    assert schedule.next_after(run_at) is None
    assert schedule.latest_until(run_at) == run_at
    assert schedule.latest_until(run_at - MICRO) is None
    assert schedule.upcoming(utc(2020, 1, 1), 5) == [run_at]
    assert schedule.between(run_at, run_at, 5) == [run_at]
    assert schedule.between(run_at + MICRO, utc(2030, 1, 1), 5) == []


def test_a_dependency_only_schedule_has_no_slots():
    schedule = Schedule(timezone=CHATHAM)
    assert schedule.kind is None
    assert schedule.next_after(utc(2026, 1, 1)) is None and schedule.latest_until(utc(2026, 1, 1)) is None
    assert schedule.upcoming(utc(2026, 1, 1), 3) == [] and schedule.between(utc(2026, 1, 1), utc(2027, 1, 1), 5) == []


def test_between_returns_at_most_limit_plus_one():
    schedule = Schedule(cron_expression="* * * * *")
    slots = schedule.between(utc(2026, 1, 1), utc(2026, 1, 2), 10)
    assert slots == [utc(2026, 1, 1, 0, m) for m in range(11)]
    assert len(schedule.between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 9), 10)) == 10


def test_describe():
    assert Schedule(cron_expression="30 1 * * *").describe() == "At 01:30 AM"
    assert Schedule(cron_expression="30 1 * * *", timezone=KOLKATA).describe() == f"At 01:30 AM ({KOLKATA})"
    assert Schedule(interval_seconds=90, anchor=utc(2026, 1, 1)).describe() == "Every 90 seconds"
    assert Schedule(interval_seconds=7200, anchor=utc(2026, 1, 1)).describe() == "Every 2 hours"
    assert Schedule(interval_seconds=60, anchor=utc(2026, 1, 1)).describe() == "Every minute"
    assert "2026-07-01T12:00:00+00:00" in Schedule(run_at=utc(2026, 7, 1, 12)).describe()
    assert "calendar" in Schedule(cron_expression="0 * * * *", calendar=Calendar()).describe()
    assert Schedule().describe() == "After its parents succeed"


# --- calendars: local dates in far zones ---------------------------------------------


def test_calendar_from_lists():
    calendar = Calendar.from_lists(["2026-12-25"], [6, 7])
    assert calendar.excludes(date(2026, 12, 25)) and calendar.excludes(date(2026, 12, 26))  # Fri; Sat
    assert not calendar.excludes(date(2026, 12, 24)) and not calendar.excludes(date(2026, 12, 28))


def test_a_kolkata_midnight_slot_belongs_to_its_local_date():
    # 00:00 in Kolkata is 18:30 UTC the day before.
    calendar = Calendar(exclude_dates=frozenset({date(2026, 6, 10)}))
    schedule = Schedule(cron_expression="0 0 * * *", timezone=KOLKATA, calendar=calendar)
    slots = schedule.between(utc(2026, 6, 8), utc(2026, 6, 12), 10)
    assert slots == [utc(2026, 6, 8, 18, 30), utc(2026, 6, 10, 18, 30), utc(2026, 6, 11, 18, 30)]
    # local 06-10 00:00 (= 06-09 18:30 UTC) is out; local 06-11 00:00 (UTC date 06-10) is in
    assert schedule.latest_until(utc(2026, 6, 10, 18, 0)) == utc(2026, 6, 8, 18, 30)
    assert schedule.next_after(utc(2026, 6, 9)) == utc(2026, 6, 10, 18, 30)


def test_a_chatham_slot_belongs_to_its_local_date():
    # 12:30 local (+12:45 in June) is 23:45 UTC the day before.
    calendar = Calendar(exclude_dates=frozenset({date(2026, 6, 10)}))
    schedule = Schedule(cron_expression="30 12 * * *", timezone=CHATHAM, calendar=calendar)
    assert schedule.upcoming(utc(2026, 6, 8, 12), 2) == [utc(2026, 6, 8, 23, 45), utc(2026, 6, 10, 23, 45)]


def test_st_johns_slots_late_in_the_evening_belong_to_their_local_date():
    # 22:00 NDT (-02:30) is 00:30 UTC the next day.
    calendar = Calendar(exclude_dates=frozenset({date(2026, 7, 1)}))
    schedule = Schedule(cron_expression="0 22 * * *", timezone=ST_JOHNS, calendar=calendar)
    assert schedule.upcoming(utc(2026, 6, 30, 12), 2) == [utc(2026, 7, 1, 0, 30), utc(2026, 7, 3, 0, 30)]


def test_excluded_weekdays_are_local_weekdays():
    # 2026-06-13 is a Saturday; 08:00 in Chatham (+12:45) is 19:15 UTC on Friday.
    calendar = Calendar(exclude_weekdays=frozenset({6, 7}))
    schedule = Schedule(cron_expression="0 8 * * *", timezone=CHATHAM, calendar=calendar)
    slots = schedule.between(utc(2026, 6, 11), utc(2026, 6, 16), 20)
    days = [local_date(slot, CHATHAM) for slot in slots]
    assert days == [date(2026, 6, 12), date(2026, 6, 15), date(2026, 6, 16)]
    assert slots[0] == utc(2026, 6, 11, 19, 15)


DST_SCHEDULES = [
    ("cron", "*/15 * * * *"), ("cron", "0 * * * *"), ("cron", "30 2 * * *"), ("cron", "0 3 * * *"),
    ("cron", "45 2 * * *"), ("cron", "15 1,2,3 * * *"), ("cron", "0 0 * * *"), ("cron", "59 23 * * *"),
    ("cron", "0 */2 * * *"), ("interval", 7 * 60 + 13), ("interval", 3600), ("interval", 86400),
]


def _schedule(kind, value, zone, calendar) -> Schedule:
    if kind == "cron":
        return Schedule(cron_expression=value, timezone=zone, calendar=calendar)
    return Schedule(interval_seconds=value, anchor=utc(2026, 1, 1, 0, 0, 7), timezone=zone, calendar=calendar)


@pytest.mark.parametrize("zone", [CHATHAM, ST_JOHNS])
@pytest.mark.parametrize("kind, value", DST_SCHEDULES)
def test_an_excluded_date_on_a_dst_change_has_no_slots(zone, kind, value):
    for instant, _, _ in transitions(zone):
        # the local dates on both sides of the change (the same date unless it happens at midnight)
        for day in {local_date(instant - MICRO, zone), local_date(instant, zone)}:
            for calendar in (Calendar(exclude_dates=frozenset({day})),
                             Calendar(exclude_weekdays=frozenset({day.isoweekday()}))):
                schedule = _schedule(kind, value, zone, calendar)
                start, end = day_start(day - timedelta(days=2), zone), day_start(day + timedelta(days=3), zone)
                slots = schedule.between(start, end, 5000)
                label = (zone, kind, value, day, calendar)
                assert slots == filtered_by_calendar(schedule, start, end), label
                assert day not in {local_date(slot, zone) for slot in slots}, label
                assert {day - timedelta(days=1), day + timedelta(days=1)} <= {local_date(s, zone) for s in slots}, label
                # stepping over the day from either side lands on the neighbouring days
                before = schedule.latest_until(day_start(day + timedelta(days=1), zone) - MICRO)
                after = schedule.next_after(day_start(day, zone) - MICRO)
                assert local_date(before, zone) == day - timedelta(days=1), label
                assert local_date(after, zone) == day + timedelta(days=1), label
                assert schedule.next_after(before) == after and schedule.latest_until(after - MICRO) == before, label


def test_spring_forward_gap_slot_excluded_with_its_day():
    day = date(2026, 3, 8)
    schedule = Schedule(cron_expression="30 2 * * *", timezone=ST_JOHNS,
                        calendar=Calendar(exclude_dates=frozenset({day})))
    assert schedule.next_after(utc(2026, 3, 7, 12)) == utc(2026, 3, 9, 5, 0)
    assert schedule.latest_until(utc(2026, 3, 9)) == utc(2026, 3, 7, 6, 0)


@pytest.mark.parametrize("zone", ["America/Havana", "America/Santiago", "Asia/Beirut"])
def test_zones_that_change_at_midnight_keep_excluded_days_out(zone):
    """Zones whose DST change happens at local midnight: a day may start in a gap or twice."""
    for instant, _, _ in transitions(zone):
        for day in {local_date(instant - MICRO, zone), local_date(instant, zone)}:
            for expression in ("*/30 * * * *", "0 0 * * *", "0 * * * *", "59 23 * * *"):
                schedule = Schedule(cron_expression=expression, timezone=zone,
                                    calendar=Calendar(exclude_dates=frozenset({day})))
                start, end = day_start(day - timedelta(days=2), zone), day_start(day + timedelta(days=3), zone)
                slots = schedule.between(start, end, 5000)
                assert slots == filtered_by_calendar(schedule, start, end), (zone, day, expression)
                assert day not in {local_date(slot, zone) for slot in slots}


def test_a_one_off_on_an_excluded_day_has_no_slot():
    run_at = utc(2026, 6, 9, 23, 0)  # 2026-06-10 11:45 in Chatham
    schedule = Schedule(run_at=run_at, timezone=CHATHAM, calendar=Calendar(exclude_dates=frozenset({date(2026, 6, 10)})))
    assert schedule.next_after(utc(2026, 1, 1)) is None and schedule.latest_until(utc(2027, 1, 1)) is None
    assert schedule.upcoming(utc(2026, 1, 1), 3) == []
    kept = dataclasses.replace(schedule, calendar=Calendar(exclude_dates=frozenset({date(2026, 6, 9)})))
    assert kept.upcoming(utc(2026, 1, 1), 3) == [run_at]  # its UTC date is not its date


def test_a_calendar_that_excludes_every_slot_ends_the_schedule():
    # Mondays only, Mondays excluded: no slot, and no endless loop.
    schedule = Schedule(cron_expression="0 9 * * 1", timezone=KOLKATA, calendar=Calendar(exclude_weekdays=frozenset({1})))
    assert schedule.next_after(utc(2026, 1, 1)) is None
    assert schedule.latest_until(utc(2026, 1, 1)) is None
    assert schedule.upcoming(utc(2026, 1, 1), 5) == []


# --- bounded work across long exclusions ------------------------------------------


def _holiday(first: date, days: int) -> Calendar:
    return Calendar(exclude_dates=frozenset(first + timedelta(days=n) for n in range(days)))


@pytest.mark.parametrize("zone", FAR_ZONES)
@pytest.mark.parametrize("kind, value", [("cron", "* * * * * *"), ("cron", "* * * * *"), ("interval", 1)])
def test_a_dense_schedule_steps_over_a_long_exclusion_at_once(zone, kind, value):
    first = date(2026, 3, 1)  # covers the St John's spring-forward (03-08)
    days = 14
    calendar = _holiday(first, days)
    common = dict(timezone=zone, calendar=calendar)
    schedule = (CountingSchedule(cron_expression=value, **common) if kind == "cron"
                else CountingSchedule(interval_seconds=value, anchor=utc(2026, 1, 1), **common))
    inside = day_start(first, zone) + timedelta(hours=5)
    after = schedule.next_after(inside)
    assert after == day_start(first + timedelta(days=days), zone)  # the first instant after the holiday
    assert len(schedule.steps) <= 2, schedule.steps  # one slot found inside the holiday, one after it

    schedule.steps.clear()
    last_inside = day_start(first + timedelta(days=days), zone) - timedelta(hours=5)
    before = schedule.latest_until(last_inside)
    assert before is not None and local_date(before, zone) == first - timedelta(days=1)
    assert day_start(first, zone) - before <= timedelta(minutes=1)
    assert len(schedule.steps) <= 2, schedule.steps

    schedule.steps.clear()
    slots = schedule.between(day_start(first, zone) - timedelta(seconds=3), inside + timedelta(days=days), 10)
    assert len(slots) == 11 and len(schedule.steps) <= 20


def test_the_longest_calendar_allowed_is_looked_past():
    # Ten thousand excluded dates in a row (the API's limit), weekends excluded too: the
    # first slot after them is found, on the first weekday after the last date.
    first = date(2026, 1, 1)
    calendar = Calendar(exclude_dates=_holiday(first, 10000).exclude_dates, exclude_weekdays=frozenset({6, 7}))
    schedule = Schedule(cron_expression="0 9 * * *", timezone=ST_JOHNS, calendar=calendar)
    after = schedule.next_after(utc(2026, 1, 1))
    assert after is not None and local_date(after, ST_JOHNS) == date(2053, 5, 19)  # 2053-05-18 is the last date
    assert schedule.latest_until(after - timedelta(seconds=1)) == schedule.latest_until(utc(2026, 1, 1))


# --- properties ------------------------------------------------------------------------


CRONS = ("* * * * *", "*/7 * * * *", "0 * * * *", "30 2 * * *", "45 2 * * *", "0 3 * * *", "15 1,2,3 * * *",
         "0 0 * * *", "59 23 * * *", "0 9 * * 1-5", "0 */5 * * *", "*/10 * * * * 0,30", "5 4 * * 0", "0 12 1 * *")
TRANSITIONS = {zone: [instant for instant, _, _ in transitions(zone, 2026)] for zone in ALL_ZONES}

moments = st.datetimes(min_value=datetime(2025, 10, 1), max_value=datetime(2027, 3, 1), timezones=st.just(UTC))
whole_second_moments = moments.map(lambda moment: moment.replace(microsecond=0))


@st.composite
def calendars(draw):
    if draw(st.booleans()):
        return None
    weekdays = draw(st.frozensets(st.integers(1, 7), max_size=3))
    dates = draw(st.frozensets(st.dates(date(2025, 9, 25), date(2027, 3, 10)), max_size=5))
    return Calendar(exclude_dates=dates, exclude_weekdays=weekdays)


@st.composite
def schedules(draw):
    zone = draw(st.sampled_from(ALL_ZONES))
    calendar = draw(calendars())
    kind = draw(st.sampled_from(("cron", "cron", "interval", "once")))
    if kind == "cron":
        return Schedule(cron_expression=draw(st.sampled_from(CRONS)), timezone=zone, calendar=calendar)
    if kind == "interval":
        return Schedule(interval_seconds=draw(st.integers(1, 100000)), anchor=draw(whole_second_moments),
                        timezone=zone, calendar=calendar)
    return Schedule(run_at=draw(moments), timezone=zone, calendar=calendar)


@st.composite
def starts(draw, schedule: Schedule):
    """A moment anywhere, or near one of the zone's DST changes, or near a calendar's excluded day."""
    choices = [draw(moments)]
    if TRANSITIONS[schedule.timezone]:
        near = draw(st.sampled_from(TRANSITIONS[schedule.timezone]))
        choices.append(near + timedelta(seconds=draw(st.integers(-3 * 86400, 86400))))
    if schedule.calendar is not None and schedule.calendar.exclude_dates:
        day = draw(st.sampled_from(sorted(schedule.calendar.exclude_dates)))
        choices.append(day_start(day, schedule.timezone) + timedelta(seconds=draw(st.integers(-86400, 86400))))
    return draw(st.sampled_from(choices))


def near_dates(draw, schedule: Schedule, moment: datetime) -> Schedule:
    """The schedule with its calendar (if any) also excluding some days near ``moment``."""
    if schedule.calendar is None:
        return schedule
    first = local_date(moment, schedule.timezone) - timedelta(days=1)
    extra = draw(st.frozensets(st.integers(0, 6).map(lambda n: first + timedelta(days=n)), max_size=3))
    calendar = dataclasses.replace(schedule.calendar, exclude_dates=schedule.calendar.exclude_dates | extra)
    return dataclasses.replace(schedule, calendar=calendar)


@st.composite
def windows(draw):
    schedule = draw(schedules())
    start = draw(starts(schedule))
    schedule = near_dates(draw, schedule, start)
    end = start + timedelta(seconds=draw(st.integers(0, 4 * 86400)), microseconds=draw(st.integers(0, 999999)))
    return schedule, start, end


LIMIT = 150


@PROPERTY_SETTINGS
@given(windows())
def test_between_is_upcoming_from_just_before_start_while_not_after_end(window):
    schedule, start, end = window
    slots = schedule.between(start, end, LIMIT)
    assert slots == reference_between(schedule, start, end, LIMIT)
    assert all(start <= slot <= end for slot in slots)
    assert len(slots) <= LIMIT + 1


@PROPERTY_SETTINGS
@given(windows(), st.data())
def test_a_calendar_removes_exactly_the_slots_on_its_excluded_local_dates(window, data):
    schedule, start, end = window
    raw = without_calendar(schedule).upcoming(start - MICRO, LIMIT)
    # compare over the range the raw slots cover (a dense schedule has too many to list)
    covered_end = min(end, raw[-1]) if len(raw) == LIMIT else end
    raw = [slot for slot in raw if slot <= covered_end]
    if raw:
        # exclude some of the local dates (and perhaps a weekday) that hold slots
        days = sorted({local_date(slot, schedule.timezone) for slot in raw})
        calendar = schedule.calendar or Calendar()
        calendar = Calendar(
            exclude_dates=calendar.exclude_dates | data.draw(st.frozensets(st.sampled_from(days), max_size=3)),
            exclude_weekdays=calendar.exclude_weekdays | data.draw(
                st.frozensets(st.sampled_from([day.isoweekday() for day in days]), max_size=1)),
        )
        schedule = dataclasses.replace(schedule, calendar=calendar)
    expected = [slot for slot in raw if not (
        schedule.calendar is not None and schedule.calendar.excludes(local_date(slot, schedule.timezone)))]
    assert schedule.between(start, covered_end, 10 * LIMIT) == expected


@st.composite
def schedules_and_moments(draw):
    schedule = draw(schedules())
    after = draw(starts(schedule))
    return near_dates(draw, schedule, after), after


@PROPERTY_SETTINGS
@given(schedules_and_moments(), st.integers(1, 40))
def test_each_upcoming_slot_is_found_from_either_side(schedule_and_moment, count):
    schedule, after = schedule_and_moment
    slots = schedule.upcoming(after, count)
    assert len(slots) <= count
    assert all(a < b for a, b in zip(slots, slots[1:]))
    assert not slots or slots[0] > after
    for slot in slots:
        assert schedule.latest_until(slot) == slot
        assert schedule.next_after(slot - MICRO) == slot
        if schedule.calendar is not None:
            assert not schedule.calendar.excludes(local_date(slot, schedule.timezone))
    for previous, following in zip(slots, slots[1:]):
        middle = previous + (following - previous) / 2
        assert schedule.next_after(previous) == following
        assert schedule.latest_until(following - MICRO) == previous
        assert schedule.next_after(middle) == following or middle == following
        assert schedule.latest_until(middle) == previous
    if slots:
        # nothing between `after` and the first slot
        assert schedule.next_after(after) == slots[0]
        latest = schedule.latest_until(after)
        assert latest is None or latest <= after
        if latest is not None:
            assert schedule.next_after(latest) == slots[0]


@PROPERTY_SETTINGS
@given(schedules(), moments)
def test_interval_and_one_off_slots_are_where_they_should_be(schedule, after):
    slots = schedule.upcoming(after, 20)
    if schedule.kind == "interval":
        step = timedelta(seconds=schedule.interval_seconds)
        for slot in slots:
            assert slot > schedule.anchor and (slot - schedule.anchor) % step == timedelta(0)
        if schedule.calendar is None and slots:
            assert slots[0] - max(after, schedule.anchor) <= step
            assert all(b - a == step for a, b in zip(slots, slots[1:]))
    elif schedule.kind == "once":
        excluded = schedule.calendar is not None and schedule.calendar.excludes(
            local_date(schedule.run_at, schedule.timezone))
        assert slots == ([schedule.run_at] if schedule.run_at > after and not excluded else [])


# --- jitter -----------------------------------------------------------------------------


def test_no_jitter_is_no_delay():
    for slot in (utc(2026, 1, 1), utc(2026, 3, 8, 5, 30), utc(2030, 12, 31, 23, 59, 59)):
        assert jitter_offset(1, slot, 0) == timedelta(0)
        assert jitter_offset(12345, slot, 0) == timedelta(0)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(1, 2**31), moments, st.integers(0, 3600))
def test_jitter_is_within_bounds_and_the_same_for_the_same_slot(task_id, slot, jitter):
    offset = jitter_offset(task_id, slot, jitter)
    assert timedelta(0) <= offset <= timedelta(seconds=jitter)
    assert jitter_offset(task_id, slot, jitter) == offset
    # the same instant written in another zone is the same slot
    assert jitter_offset(task_id, slot.astimezone(ZoneInfo(CHATHAM)), jitter) == offset


def test_jitter_spreads_slots_and_tasks():
    jitter = 3600
    slots = [utc(2026, 1, 1) + timedelta(hours=n) for n in range(1000)]
    offsets = [jitter_offset(7, slot, jitter).total_seconds() for slot in slots]
    assert len(set(offsets)) > 950
    assert min(offsets) < 0.05 * jitter and max(offsets) > 0.95 * jitter
    assert 0.4 * jitter < sum(offsets) / len(offsets) < 0.6 * jitter
    # a tenth of the range each: no bucket empty or crowded
    buckets = [0] * 10
    for value in offsets:
        buckets[min(int(value / jitter * 10), 9)] += 1
    assert all(50 <= count <= 150 for count in buckets), buckets
    # many tasks on one slot start apart
    by_task = {jitter_offset(task_id, slots[0], jitter) for task_id in range(1, 501)}
    assert len(by_task) > 450


def test_a_one_second_jitter_still_spreads_within_the_second():
    offsets = {jitter_offset(3, utc(2026, 1, 1) + timedelta(minutes=n), 1) for n in range(500)}
    assert all(timedelta(0) <= offset <= timedelta(seconds=1) for offset in offsets)
    assert len(offsets) > 300
