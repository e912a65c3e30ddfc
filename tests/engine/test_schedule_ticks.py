"""Schedules beyond cron, through the tick against a real database with a frozen clock.

Interval, one-off and calendar slots run exactly as listed; jitter delays a slot's start
without making it late; catch-up (latest, all, none) after a clock jump; backfill runs one
at a time in slot order and retried; queued runs claimed once by two owners ticking at once.
Runs are finished by recording an outcome (recording.finish_run), as the engine would.
"""
from __future__ import annotations

import itertools
import threading
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler_service.backfill import backfill_slots
from scheduler_service.engine.records import Outcome
from scheduler_service.engine.recording import finish_run
from scheduler_service.engine.schedules import Schedule, jitter_offset
from scheduler_service.engine.tick import tick
from scheduler_service.extensions import db
from scheduler_service.models import Calendar, Run, Task
from scheduler_service.ops.alerts import AlertIntake
from scheduler_service.ops.models import Alert
from scheduler_service.task_schedules import reschedule, schedule_of

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # a Saturday, in the past of the real clock (backfill needs that)
SHELL = {"type": "shell", "command": "true"}
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
_names = itertools.count()


# --- helpers ------------------------------------------------------------------------------------


def add_task(app, *, now: datetime = T0, next_run_at: datetime | None = None, **values) -> int:
    """A task row as of the frozen ``now`` (the API would anchor it at the real clock). Its slot is
    set after the flush, so that the jitter is drawn from its id as the engine draws it."""
    row = dict(name=f"task-{next(_names)}", timezone="UTC", action=SHELL, enabled=True, schedule_anchor=now)
    row.update(values)
    with app.app_context():
        task = Task(**row)
        db.session.add(task)
        db.session.flush()
        if next_run_at is None:
            reschedule(task, now)
        else:
            task.next_run_at = next_run_at
        db.session.commit()
        return task.id


def add_calendar(app, name: str, *, dates=(), weekdays=()) -> None:
    with app.app_context():
        db.session.add(Calendar(name=name, exclude_dates=list(dates), exclude_weekdays=list(weekdays)))
        db.session.commit()


def run_tick(app, now: datetime, owner: str = "a", capacity: int = 8):
    with app.app_context():
        return tick(now, owner=owner, capacity=capacity)


def finish(app, run_id: int, now: datetime, succeeded: bool = True):
    with app.app_context():
        return finish_run(run_id, Outcome(succeeded=succeeded, message="" if succeeded else "boom"), now)


def runs_of(app, task_id: int) -> list[Run]:
    """The task's runs in slot order (then attempt), detached."""
    with app.app_context():
        rows = db.session.scalars(
            sa.select(Run).where(Run.task_id == task_id).order_by(Run.scheduled_for, Run.attempt, Run.id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def task_row(app, task_id: int) -> Task:
    with app.app_context():
        task = db.session.get(Task, task_id)
        db.session.expunge_all()
        return task


def drive(app, start: datetime, end: datetime, *, step: timedelta, latency: timedelta = timedelta(milliseconds=250)):
    """Tick like the engine from ``start`` to ``end``: at each due time (plus ``latency``) and at
    least every ``step``; each claimed run finishes successfully 10 ms after its claim."""
    claimed, now = [], start
    while now <= end:
        report = run_tick(app, now)
        assert report.errors == 0
        for run in report.claimed:
            finish(app, run.run_id, now + timedelta(milliseconds=10))
            claimed.append(run)
        following = now + step
        if report.next_due_at is not None:
            following = min(following, report.next_due_at + latency)
        now = max(following, now + timedelta(milliseconds=20))
    return claimed


def schedule_runs(runs: list[Run]) -> list[Run]:
    return [run for run in runs if run.status != "skipped"]


def skipped(runs: list[Run]) -> list[Run]:
    return [run for run in runs if run.status == "skipped"]


# --- interval, one-off, calendar ----------------------------------------------------------------


def test_an_interval_task_runs_exactly_the_slots_its_schedule_lists(app):
    anchor = T0
    task_id = add_task(app, now=anchor, interval_seconds=90)
    assert task_row(app, task_id).next_run_at == anchor + timedelta(seconds=90)  # k >= 1: not the anchor itself
    end = anchor + timedelta(minutes=20)
    claimed = drive(app, anchor, end, step=timedelta(seconds=7))

    listed = Schedule(interval_seconds=90, anchor=anchor).between(anchor, end, 1000)
    assert listed == [anchor + k * timedelta(seconds=90) for k in range(1, 14)]
    assert [run.scheduled_for for run in claimed] == listed
    runs = runs_of(app, task_id)
    assert [(run.scheduled_for, run.trigger, run.status, run.attempt) for run in runs] == [
        (slot, "schedule", "success", 1) for slot in listed
    ]
    # Each ran at its slot (the tick came 250 ms after it), not at some other point of the interval.
    assert all(timedelta(0) <= run.started_at - run.scheduled_for <= timedelta(seconds=1) for run in runs)
    assert task_row(app, task_id).next_run_at == anchor + 14 * timedelta(seconds=90)


def test_an_interval_that_does_not_divide_a_minute_keeps_its_anchor_through_irregular_ticks(app):
    anchor = T0 + timedelta(seconds=7)
    task_id = add_task(app, now=anchor, interval_seconds=37, misfire_grace_seconds=60)
    # Ticks at uneven moments, never more than 20 s apart: every slot is reached within the grace.
    now, offsets = anchor, itertools.cycle([3.1, 19.9, 0.4, 11.0, 7.7])
    end = anchor + timedelta(minutes=10)
    while now <= end:
        for run in run_tick(app, now).claimed:
            finish(app, run.run_id, now)
        now += timedelta(seconds=next(offsets))
    runs = runs_of(app, task_id)
    last_tick = now - timedelta(seconds=20)  # at least this late: the offsets are under 20 s
    expected = Schedule(interval_seconds=37, anchor=anchor).between(anchor, last_tick, 1000)
    assert [run.scheduled_for for run in runs][:len(expected)] == expected
    assert [run.scheduled_for for run in runs] == [anchor + k * timedelta(seconds=37) for k in range(1, len(runs) + 1)]
    assert len(runs) >= 16 and all(run.status == "success" for run in runs)


def test_a_one_off_runs_once_and_never_again(app):
    run_at = T0 + timedelta(seconds=30)
    task_id = add_task(app, now=T0, run_at=run_at)
    assert task_row(app, task_id).next_run_at == run_at
    assert run_tick(app, T0).claimed == []
    assert run_tick(app, run_at - timedelta(milliseconds=1)).claimed == []
    [claimed] = run_tick(app, run_at).claimed
    assert (claimed.task_id, claimed.scheduled_for, claimed.trigger) == (task_id, run_at, "schedule")
    after = task_row(app, task_id)
    assert (after.next_run_at, after.due_at, after.enabled) == (None, None, True)
    finish(app, claimed.run_id, run_at + SECOND)
    for later in (run_at + SECOND, run_at + timedelta(minutes=5), run_at + timedelta(days=400)):
        report = run_tick(app, later)
        assert report.claimed == [] and report.skips == [] and report.next_due_at is None
    [run] = runs_of(app, task_id)
    assert (run.scheduled_for, run.status) == (run_at, "success")
    assert task_row(app, task_id).next_run_at is None


def test_a_one_off_reached_after_downtime_within_the_grace_still_runs_once(app):
    run_at = T0 + timedelta(seconds=30)
    task_id = add_task(app, now=T0, run_at=run_at, misfire_grace_seconds=60)
    [claimed] = run_tick(app, run_at + timedelta(seconds=45)).claimed
    assert claimed.scheduled_for == run_at
    finish(app, claimed.run_id, run_at + timedelta(seconds=46))
    assert run_tick(app, run_at + timedelta(hours=1)).claimed == []
    assert [run.scheduled_for for run in runs_of(app, task_id)] == [run_at]
    assert task_row(app, task_id).next_run_at is None


CALENDAR_CASES = {
    # Fall-back on 2026-11-01 (02:00 NDT -> 01:00 NST): 01:30 happens twice and runs once. 23:00 local
    # is the next UTC day, so the excluded dates must be read in the task's zone.
    "st-johns-fall-back": dict(
        zone="America/St_Johns", cron="30 1,23 * * *",
        start=datetime(2026, 10, 28, 12, 0, tzinfo=UTC), end=datetime(2026, 11, 4, 12, 0, tzinfo=UTC),
        dates=["2026-11-03", "2026-10-29"], weekdays=[6],  # and every Saturday
    ),
    # Spring-forward on 2026-09-27 (02:45 -> 03:45 CHADT): 03:00 does not exist and runs once, at 03:45.
    "chatham-spring-forward": dict(
        zone="Pacific/Chatham", cron="0 3,23 * * *",
        start=datetime(2026, 9, 23, 0, 0, tzinfo=UTC), end=datetime(2026, 9, 30, 0, 0, tzinfo=UTC),
        dates=["2026-09-29"], weekdays=[5],  # and every Friday
    ),
}


@pytest.mark.parametrize("case", sorted(CALENDAR_CASES))
def test_calendar_runs_over_days_equal_the_slots_listed_and_the_backfill_slots(app, client, case):
    spec = CALENDAR_CASES[case]
    add_calendar(app, case, dates=spec["dates"], weekdays=spec["weekdays"])
    task_id = add_task(app, now=spec["start"], cron_expression=spec["cron"], timezone=spec["zone"], calendar=case)
    start, end = spec["start"], spec["end"]

    response = client.get(f"/api/tasks/{task_id}/schedule/", query_string={"start": start.isoformat(), "count": 100})
    assert response.status_code == 200, response.get_json()
    listed = [datetime.fromisoformat(value) for value in response.get_json()["next_runs"]]
    listed = [slot for slot in listed if slot <= end]
    with app.app_context():
        assert listed == schedule_of(db.session.get(Task, task_id)).between(start, end, 1000)
    # The calendar and the zone really bite in this window: no slot on an excluded local date.
    zone_dates = {slot.astimezone(ZoneInfo(spec["zone"])).date() for slot in listed}
    assert not {day.isoformat() for day in zone_dates} & set(spec["dates"])
    assert not {day.isoweekday() for day in zone_dates} & set(spec["weekdays"])
    assert len(listed) >= 6

    claimed = drive(app, start, end, step=timedelta(hours=1))

    assert [run.scheduled_for for run in claimed] == listed
    runs = runs_of(app, task_id)
    assert [(run.scheduled_for, run.status) for run in runs] == [(slot, "success") for slot in listed]
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert backfill_slots(task, start, end, "all", end) == listed
    dry = client.post(f"/api/tasks/{task_id}/backfill/",
                      json={"start": start.isoformat(), "end": end.isoformat(), "reprocess": "all", "dry_run": True})
    assert dry.status_code == 202, dry.get_json()
    assert [datetime.fromisoformat(value) for value in dry.get_json()["slots"]] == listed
    assert dry.get_json()["runs"] == [] and len(runs_of(app, task_id)) == len(listed)


def test_the_calendar_cases_cross_their_dst_change_with_one_run_per_wall_time(app):
    # St John's 01:30 on the fall-back day is 04:00Z (NDT) then 05:00Z (NST): only the first is a slot.
    st_johns = Schedule(cron_expression="30 1 * * *", timezone="America/St_Johns")
    day = st_johns.between(datetime(2026, 11, 1, 0, 0, tzinfo=UTC), datetime(2026, 11, 1, 12, 0, tzinfo=UTC), 10)
    assert day == [datetime(2026, 11, 1, 4, 0, tzinfo=UTC)]
    # Chatham 03:00 on the spring-forward day falls in the gap: once, at 03:45 CHADT (14:00Z the day before).
    chatham = Schedule(cron_expression="0 3 * * *", timezone="Pacific/Chatham")
    [gap] = chatham.between(datetime(2026, 9, 26, 6, 0, tzinfo=UTC), datetime(2026, 9, 26, 18, 0, tzinfo=UTC), 10)
    assert gap == datetime(2026, 9, 26, 14, 0, tzinfo=UTC)


# --- jitter ----------------------------------------------------------------------------------------


def test_jitter_delays_each_slot_s_start_within_its_bound_and_keeps_scheduled_for(app):
    jitter = 600
    slot = T0 + timedelta(hours=1)
    task_id = add_task(app, now=T0, cron_expression="0 * * * *", jitter_seconds=jitter, misfire_grace_seconds=0)
    for hour in range(4):
        task = task_row(app, task_id)
        assert task.next_run_at == slot
        drawn = task.due_at - slot
        assert timedelta(0) <= drawn <= timedelta(seconds=jitter)
        assert drawn == jitter_offset(task_id, slot, jitter)  # every process draws the same delay
        if drawn > timedelta(0):
            assert run_tick(app, slot).claimed == []  # the slot itself is not yet due
            assert run_tick(app, task.due_at - timedelta(milliseconds=1)).claimed == []
        report = run_tick(app, task.due_at)
        [claimed] = report.claimed
        assert report.skips == []  # a zero grace, yet the jittered start is not a missed slot
        assert (claimed.scheduled_for, claimed.due_at, claimed.start_due_at) == (slot, task.due_at, task.due_at)
        finish(app, claimed.run_id, task.due_at + SECOND)
        slot += timedelta(hours=1)
    runs = runs_of(app, task_id)
    assert [run.scheduled_for for run in runs] == [T0 + timedelta(hours=h) for h in range(1, 5)]
    assert all(run.status == "success" and run.started_at > run.scheduled_for for run in runs)
    # Different slots draw different delays: the jitter spreads starts, it is not one fixed offset.
    assert len({run.started_at - run.scheduled_for for run in runs}) > 1


def test_a_jittered_start_is_not_late_the_start_lag_counts_from_its_due_time(app):
    jitter = 600
    task_id = add_task(app, now=T0, cron_expression="0 * * * *", jitter_seconds=jitter,
                       notify={"url": "http://hooks.internal/late", "events": ["late"], "late_after_seconds": 2})
    task = task_row(app, task_id)
    assert task.due_at - task.next_run_at > timedelta(seconds=5), "this draw must be longer than the late bound"
    [claimed] = run_tick(app, task.due_at).claimed
    lags: list[tuple[str, float]] = []
    intake = AlertIntake(app, lambda trigger, lag: lags.append((trigger, lag)))
    # Started half a second after its due time (minutes after its slot): on time.
    intake.process([("started", claimed, task.due_at + timedelta(milliseconds=500))], task.due_at + SECOND)
    assert lags == [("schedule", pytest.approx(0.5))]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Alert)) == 0
    # The same run started 5 s after its due time is late: the rule is live, only the jitter is excused.
    intake.process([("started", claimed, task.due_at + timedelta(seconds=5))], task.due_at + timedelta(seconds=6))
    with app.app_context():
        [late] = db.session.scalars(sa.select(Alert)).all()
        assert late.event == "late" and late.payload["late_by_seconds"] == pytest.approx(5.0)


def test_a_jittered_slot_reached_after_downtime_counts_its_lateness_from_the_due_time(app):
    """misfire_grace is measured on the task's shifted clock: a jitter of minutes and a grace of
    seconds still run the slot when it is reached a few seconds after its due time."""
    task_id = add_task(app, now=T0, cron_expression="0 * * * *", jitter_seconds=1800, misfire_grace_seconds=10)
    task = task_row(app, task_id)
    assert task.due_at - task.next_run_at > timedelta(seconds=20)
    [claimed] = run_tick(app, task.due_at + timedelta(seconds=8)).claimed
    assert claimed.scheduled_for == task.next_run_at
    finish(app, claimed.run_id, task.due_at + timedelta(seconds=9))
    # The next slot, reached well past its due time plus the grace, is skipped (one row).
    following = task_row(app, task_id)
    report = run_tick(app, following.due_at + timedelta(seconds=30))
    assert report.claimed == [] and [skip.slot for skip in report.skips] == [following.next_run_at]


# --- catch-up after downtime -----------------------------------------------------------------------

DOWNTIME_END = T0 + timedelta(minutes=3, seconds=30)  # the slots of T0, T0+1, T0+2, T0+3 min were missed
MISSED = [T0 + n * MINUTE for n in range(4)]


def catchup_task(app, catchup: str, grace: int, **values) -> int:
    return add_task(app, now=T0 - MINUTE, cron_expression="* * * * *", next_run_at=T0, catchup=catchup,
                    misfire_grace_seconds=grace, **values)


def test_catchup_latest_runs_only_the_latest_missed_slot(app):
    task_id = catchup_task(app, "latest", 300)
    report = run_tick(app, DOWNTIME_END)
    assert [(c.scheduled_for, c.trigger) for c in report.claimed] == [(MISSED[-1], "schedule")]
    assert report.skips == [] and report.queued == 0
    finish(app, report.claimed[0].run_id, DOWNTIME_END + SECOND)
    assert run_tick(app, DOWNTIME_END + timedelta(seconds=2)).claimed == []  # nothing queued behind it
    assert [(run.scheduled_for, run.status) for run in runs_of(app, task_id)] == [(MISSED[-1], "success")]
    assert task_row(app, task_id).next_run_at == T0 + 4 * MINUTE


def test_catchup_latest_logs_the_slots_beyond_the_grace_once(app):
    task_id = catchup_task(app, "latest", 100)  # T0+2 and T0+3 are within 100 s of the jump, T0 and T0+1 not
    report = run_tick(app, DOWNTIME_END)
    assert [c.scheduled_for for c in report.claimed] == [MISSED[-1]]
    runs = runs_of(app, task_id)
    [skip] = skipped(runs)
    assert skip.scheduled_for == T0 and "more than 100s late" in skip.message
    assert [run.scheduled_for for run in schedule_runs(runs)] == [MISSED[-1]]


@pytest.mark.parametrize("policy", ["forbid", "allow"])
def test_catchup_all_runs_each_missed_slot_once_one_at_a_time_oldest_first(app, policy):
    task_id = catchup_task(app, "all", 300, concurrency_policy=policy)
    report = run_tick(app, DOWNTIME_END, owner="a")
    assert report.queued == 4 and report.skips == []
    [first] = report.claimed  # the oldest queued run starts in the same tick
    assert (first.scheduled_for, first.trigger, first.attempt) == (MISSED[0], "schedule", 1)
    pending = [run for run in runs_of(app, task_id) if run.status == "pending"]
    assert [(run.scheduled_for, run.trigger, run.attempt) for run in pending] == [
        (slot, "schedule", 1) for slot in MISSED[1:]
    ]
    now, order = DOWNTIME_END, [first]
    for index in range(1, 4):
        # While one runs, nobody starts the next: not another owner, not a later tick.
        assert run_tick(app, now, owner="b").claimed == []
        assert run_tick(app, now + SECOND, owner="a").claimed == []
        now += 2 * SECOND
        finish(app, order[-1].run_id, now)
        [following] = run_tick(app, now, owner="ab"[index % 2]).claimed
        assert (following.scheduled_for, following.trigger) == (MISSED[index], "schedule")
        order.append(following)
    now += 2 * SECOND
    finish(app, order[-1].run_id, now)
    assert run_tick(app, now).claimed == []

    runs = runs_of(app, task_id)
    assert [(run.scheduled_for, run.status, run.trigger) for run in runs] == [
        (slot, "success", "schedule") for slot in MISSED
    ]
    assert all(later.started_at >= earlier.finished_at for earlier, later in zip(runs, runs[1:]))
    task = task_row(app, task_id)
    assert (task.next_run_at, task.active_runs, task.status) == (T0 + 4 * MINUTE, 0, "success")
    # The schedule goes on as usual afterwards.
    [regular] = run_tick(app, T0 + 4 * MINUTE).claimed
    assert regular.scheduled_for == T0 + 4 * MINUTE


@pytest.mark.parametrize("policy", ["forbid", "allow"])
def test_catchup_all_waits_for_a_run_that_was_still_going_when_the_clock_jumped(app, policy):
    task_id = catchup_task(app, "all", 300, concurrency_policy=policy)
    [long_run] = run_tick(app, T0).claimed  # the T0 slot runs, on time, and keeps running
    report = run_tick(app, DOWNTIME_END)
    assert report.claimed == [] and report.queued == 3  # T0+1 .. T0+3 wait for it
    assert run_tick(app, DOWNTIME_END, owner="b").claimed == []
    finish(app, long_run.run_id, DOWNTIME_END + SECOND)
    [following] = run_tick(app, DOWNTIME_END + 2 * SECOND, owner="b").claimed
    assert following.scheduled_for == MISSED[1]
    slots = Counter(run.scheduled_for for run in runs_of(app, task_id))
    assert slots == Counter(MISSED)


def test_catchup_all_skips_the_slots_beyond_the_grace_in_one_row_and_queues_the_rest(app):
    task_id = catchup_task(app, "all", 100)
    report = run_tick(app, DOWNTIME_END)
    assert report.queued == 2
    assert [c.scheduled_for for c in report.claimed] == [MISSED[2]]
    runs = runs_of(app, task_id)
    [skip] = skipped(runs)
    assert skip.scheduled_for == T0 and "more than 100s late" in skip.message
    assert [run.scheduled_for for run in schedule_runs(runs)] == MISSED[2:]


def test_catchup_none_runs_nothing_missed_and_logs_one_skipped_row(app):
    task_id = catchup_task(app, "none", 300)
    report = run_tick(app, DOWNTIME_END)
    assert report.claimed == [] and report.queued == 0
    [skip] = runs_of(app, task_id)
    assert (skip.status, skip.scheduled_for) == ("skipped", T0)
    assert "catchup none" in skip.message and MISSED[-1].isoformat() in skip.message
    assert run_tick(app, DOWNTIME_END + SECOND).claimed == []
    task = task_row(app, task_id)
    assert task.next_run_at == T0 + 4 * MINUTE
    [regular] = run_tick(app, T0 + 4 * MINUTE).claimed  # a slot reached on time still runs
    assert regular.scheduled_for == T0 + 4 * MINUTE


def test_catchup_none_with_part_of_the_slots_beyond_the_grace_is_still_one_row(app):
    task_id = catchup_task(app, "none", 100)
    report = run_tick(app, DOWNTIME_END)
    assert report.claimed == []
    [skip] = runs_of(app, task_id)
    assert skip.status == "skipped" and skip.scheduled_for == T0


@pytest.mark.parametrize("catchup", ["latest", "all", "none"])
def test_slots_all_missed_beyond_the_grace_are_one_skipped_episode_whatever_the_catchup(app, catchup):
    task_id = catchup_task(app, catchup, 20)  # even the latest, T0+3, is 30 s late
    report = run_tick(app, DOWNTIME_END)
    assert report.claimed == [] and report.queued == 0
    [skip] = runs_of(app, task_id)
    assert (skip.status, skip.scheduled_for) == ("skipped", T0)
    assert "more than 20s late" in skip.message and MISSED[-1].isoformat() in skip.message
    assert task_row(app, task_id).next_run_at == T0 + 4 * MINUTE


# --- backfill -----------------------------------------------------------------------------------------

HOURLY_NOW = T0 + timedelta(minutes=30)  # the engine's clock; the hourly task's next slot is T0 + 1 h
BACKFILLED = [T0 - timedelta(hours=h) for h in range(5, -1, -1)]  # T0-5h .. T0


def post_backfill(client, task_id: int, start: datetime, end: datetime, reprocess: str = "missing") -> dict:
    response = client.post(f"/api/tasks/{task_id}/backfill/",
                           json={"start": start.isoformat(), "end": end.isoformat(), "reprocess": reprocess})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def hourly_task(app, **values) -> int:
    return add_task(app, now=HOURLY_NOW, cron_expression="0 * * * *", **values)


@pytest.mark.parametrize("policy", ["forbid", "allow"])
def test_backfill_runs_are_claimed_one_at_a_time_in_slot_order(app, client, policy):
    task_id = hourly_task(app, concurrency_policy=policy)
    answer = post_backfill(client, task_id, BACKFILLED[0], BACKFILLED[-1])
    assert [datetime.fromisoformat(slot) for slot in answer["slots"]] == BACKFILLED
    assert [(run["trigger"], run["status"], run["attempt"]) for run in answer["runs"]] == [("backfill", "pending", 1)] * 6

    now, order = HOURLY_NOW, []
    for index, slot in enumerate(BACKFILLED):
        [claimed] = run_tick(app, now, owner="ab"[index % 2]).claimed
        assert (claimed.scheduled_for, claimed.trigger) == (slot, "backfill")
        order.append(claimed)
        assert run_tick(app, now, owner="c").claimed == []  # one at a time, whoever ticks
        assert run_tick(app, now + SECOND, owner="a").claimed == []
        now += 2 * SECOND
        finish(app, claimed.run_id, now)
    assert run_tick(app, now).claimed == []
    runs = runs_of(app, task_id)
    assert [(run.scheduled_for, run.trigger, run.status) for run in runs] == [
        (slot, "backfill", "success") for slot in BACKFILLED
    ]
    assert all(later.started_at >= earlier.finished_at for earlier, later in zip(runs, runs[1:]))


@pytest.mark.parametrize("policy", ["forbid", "allow"])
def test_backfill_waits_while_a_scheduled_run_of_the_task_is_active(app, client, policy):
    task_id = hourly_task(app, concurrency_policy=policy)
    post_backfill(client, task_id, BACKFILLED[-2], BACKFILLED[-1])
    slot = T0 + timedelta(hours=1)
    report = run_tick(app, slot)  # the task's own slot comes due with the backfill runs pending
    assert [(c.scheduled_for, c.trigger) for c in report.claimed] == [(slot, "schedule")]
    assert run_tick(app, slot + SECOND, owner="b").claimed == []
    finish(app, report.claimed[0].run_id, slot + 2 * SECOND)
    [backfill_run] = run_tick(app, slot + 3 * SECOND, owner="b").claimed
    assert (backfill_run.scheduled_for, backfill_run.trigger) == (BACKFILLED[-2], "backfill")
    # The next slot comes due while that backfill run runs: under forbid it is skipped and logged,
    # under allow it runs beside it; the second backfill run waits in either case.
    following = run_tick(app, slot + timedelta(hours=1))
    if policy == "forbid":
        assert following.claimed == []
        assert [skip.slot for skip in following.skips] == [slot + timedelta(hours=1)]
    else:
        assert [(c.scheduled_for, c.trigger) for c in following.claimed] == [(slot + timedelta(hours=1), "schedule")]
    assert all(run.trigger != "backfill" or run.scheduled_for != BACKFILLED[-1] or run.status == "pending"
               for run in runs_of(app, task_id))


def test_a_failed_backfill_run_is_retried_as_a_fresh_chain_even_with_a_high_attempt_number(app, client):
    task_id = hourly_task(app, max_retries=1, retry_delay_seconds=10)
    first_slot, second_slot = BACKFILLED[-2], BACKFILLED[-1]
    with app.app_context():  # the first slot failed twice already: its backfill run is attempt 3
        for attempt in (1, 2):
            db.session.add(Run(task_id=task_id, attempt=attempt, trigger="schedule" if attempt == 1 else "retry",
                               status="failed", scheduled_for=first_slot, started_at=first_slot,
                               finished_at=first_slot + SECOND, message="boom", created_at=first_slot))
        db.session.commit()
    answer = post_backfill(client, task_id, first_slot, second_slot, reprocess="failed")
    assert [(run["scheduled_for"], run["attempt"]) for run in answer["runs"]] == [
        (first_slot.isoformat(), 3), (second_slot.isoformat(), 1),
    ]

    [claimed] = run_tick(app, HOURLY_NOW).claimed
    assert (claimed.scheduled_for, claimed.attempt, claimed.trigger) == (first_slot, 3, "backfill")
    failed_at = HOURLY_NOW + 2 * SECOND
    finished = finish(app, claimed.run_id, failed_at, succeeded=False)
    assert finished.retry_at == failed_at + timedelta(seconds=10)
    task = task_row(app, task_id)
    assert (task.status, task.retry_count, task.next_retry_at) == ("retrying", 1, failed_at + timedelta(seconds=10))
    # Waiting for its retry, the task is active: the next backfill run does not start.
    assert run_tick(app, failed_at + timedelta(seconds=5), owner="b").claimed == []
    [retry] = run_tick(app, failed_at + timedelta(seconds=10), owner="b").claimed
    assert (retry.trigger, retry.attempt) == ("retry", 2)
    assert run_tick(app, failed_at + timedelta(seconds=11)).claimed == []
    finish(app, retry.run_id, failed_at + timedelta(seconds=12), succeeded=False)
    task = task_row(app, task_id)
    assert (task.status, task.retry_count, task.next_retry_at) == ("failed", 1, None)  # max_retries used up
    [second] = run_tick(app, failed_at + timedelta(seconds=13)).claimed
    assert (second.scheduled_for, second.attempt, second.trigger) == (second_slot, 1, "backfill")
    finish(app, second.run_id, failed_at + timedelta(seconds=14))
    task = task_row(app, task_id)
    assert (task.status, task.retry_count) == ("success", 0)


def test_a_backfill_run_of_an_old_slot_is_not_a_late_start(app, client):
    """`late` is "a scheduled run (or retry) started more than late_after_seconds after its slot"
    (README, alerts). A backfill run is asked for by a person, hours or days after its slot, like a
    manual run: its start is not late, or every backfilled slot raises an alert."""
    task_id = hourly_task(app, notify={"url": "http://hooks.internal/late", "events": ["late"],
                                       "late_after_seconds": 60})
    post_backfill(client, task_id, BACKFILLED[-1], BACKFILLED[-1])
    [claimed] = run_tick(app, HOURLY_NOW).claimed
    assert claimed.trigger == "backfill"
    intake = AlertIntake(app, lambda trigger, lag: None)
    intake.process([("started", claimed, HOURLY_NOW)], HOURLY_NOW + SECOND)
    with app.app_context():
        events = [(alert.event, alert.payload.get("late_by_seconds")) for alert in db.session.scalars(sa.select(Alert))]
    assert events == []


def test_a_failed_backfill_run_that_succeeds_on_retry_resets_the_chain(app, client):
    task_id = hourly_task(app, max_retries=3, retry_delay_seconds=5)
    post_backfill(client, task_id, BACKFILLED[-1], BACKFILLED[-1])
    [claimed] = run_tick(app, HOURLY_NOW).claimed
    finish(app, claimed.run_id, HOURLY_NOW + SECOND, succeeded=False)
    assert (task_row(app, task_id).status, task_row(app, task_id).retry_count) == ("retrying", 1)
    [retry] = run_tick(app, HOURLY_NOW + timedelta(seconds=6)).claimed
    assert (retry.trigger, retry.attempt) == ("retry", 2)
    finish(app, retry.run_id, HOURLY_NOW + timedelta(seconds=7))
    task = task_row(app, task_id)
    assert (task.status, task.retry_count, task.next_retry_at) == ("success", 0, None)


# --- exactly once with two owners --------------------------------------------------------------------


def queued_work(app, client) -> dict[int, list[datetime]]:
    """Three hourly tasks with 5 backfill runs each, and a minute task with catch-up runs queued."""
    expected: dict[int, list[datetime]] = {}
    for policy in ("forbid", "allow", "forbid"):
        task_id = hourly_task(app, concurrency_policy=policy)
        post_backfill(client, task_id, BACKFILLED[1], BACKFILLED[-1])
        expected[task_id] = BACKFILLED[1:]
    catchup = add_task(app, now=HOURLY_NOW - timedelta(minutes=5), cron_expression="* * * * *", catchup="all",
                       next_run_at=HOURLY_NOW - timedelta(minutes=4), misfire_grace_seconds=600,
                       concurrency_policy="allow")
    expected[catchup] = [HOURLY_NOW - timedelta(minutes=m) for m in range(4, -1, -1)]
    return expected


def check_claims(app, rounds: list[list], expected: dict[int, list[datetime]]) -> None:
    claims = [claim for round_claims in rounds for claim in round_claims]
    assert [run_id for run_id, count in Counter(c.run_id for c in claims).items() if count > 1] == []
    for round_claims in rounds:
        per_task = Counter(c.task_id for c in round_claims)
        assert [task for task, count in per_task.items() if count > 1] == [], "two runs of one task at once"
    by_task: dict[int, list[datetime]] = defaultdict(list)
    for claim in claims:
        by_task[claim.task_id].append(claim.scheduled_for)
    assert dict(by_task) == expected  # each queued run once, in slot order
    for task_id, slots in expected.items():
        runs = runs_of(app, task_id)
        assert [(run.scheduled_for, run.status) for run in runs] == [(slot, "success") for slot in slots]


def test_two_owners_ticking_at_the_same_moment_claim_each_queued_run_once(app, client):
    expected = queued_work(app, client)
    rounds, now = [], HOURLY_NOW
    for _ in range(20):
        first = run_tick(app, now, owner="a").claimed
        second = run_tick(app, now, owner="b").claimed
        if not first and not second:
            break
        # The first owner took the head of every idle task: the second finds nothing left.
        assert second == []
        rounds.append(first + second)
        now += SECOND
        for claim in first + second:
            finish(app, claim.run_id, now)
        now += SECOND
    check_claims(app, rounds, expected)
    assert len(rounds) == 5


def test_two_owners_in_threads_claim_each_queued_run_once(app, client):
    expected = queued_work(app, client)
    rounds, now, errors = [], HOURLY_NOW, 0
    for _ in range(60):
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def owner_tick(owner: str, moment: datetime = now) -> None:
            with app.app_context():
                barrier.wait()
                results[owner] = tick(moment, owner=owner, capacity=8)

        threads = [threading.Thread(target=owner_tick, args=(owner,)) for owner in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        claimed = results["a"].claimed + results["b"].claimed
        errors += results["a"].errors + results["b"].errors
        if claimed:
            rounds.append(claimed)
            # While these run, the database shows at most one running run per task.
            with app.app_context():
                running = Counter(db.session.scalars(sa.select(Run.task_id).where(Run.status == "running")))
                assert [task for task, count in running.items() if count > 1] == []
        elif not any(run.status == "pending" for task_id in expected for run in runs_of(app, task_id)):
            break
        now += SECOND
        for claim in claimed:
            finish(app, claim.run_id, now)
        now += SECOND
    check_claims(app, rounds, expected)
