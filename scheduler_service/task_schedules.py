"""A stored task's ``Schedule`` (engine/schedules.py), its calendar read from the database,
and the one way a task's next slot is set: ``next_run_at`` with its ``due_at``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .database import db
from .engine.schedules import Calendar, Schedule
from .models import Calendar as CalendarRow
from .models import Task


SCHEDULE_KINDS = ("cron_expression", "interval_seconds", "run_at")


def anchor_at(now: datetime) -> datetime:
    """The anchor of a schedule set at ``now``: whole seconds, so that "every 90 seconds" falls on them."""
    return now.replace(microsecond=0)


def schedule_problems(values: dict[str, Any], *, has_parents: bool, run_at_changed: bool,
                      now: datetime) -> list[tuple[str, str]]:
    """(field, message) for each way ``values`` (a task's schedule fields) is not a schedule."""
    problems = []
    kinds = [field for field in SCHEDULE_KINDS if values.get(field) is not None]
    if len(kinds) > 1:
        problems.append((kinds[1], f"A task has at most one of cron_expression, interval_seconds and run_at; "
                                   f"this one has {' and '.join(kinds)}."))
    if not kinds and not has_parents:
        problems.append(("cron_expression", "Required unless the task has interval_seconds, run_at or depends_on."))
    if run_at_changed and values.get("run_at") is not None and values["run_at"] <= now:
        problems.append(("run_at", "Must be in the future."))
    name = values.get("calendar")
    if name is not None:
        row = db.session.get(CalendarRow, name)
        if row is None:
            problems.append(("calendar", f"Unknown calendar {name!r}."))
        elif len(kinds) == 1 and not problems and _calendar_ends_schedule(values, row, now):
            problems.append(("calendar", f"Calendar {name!r} excludes every slot this schedule has left."))
    return problems


def _calendar_ends_schedule(values: dict[str, Any], row: CalendarRow, now: datetime) -> bool:
    """Whether the schedule has a slot after ``now`` without the calendar and none with it."""
    schedule = Schedule(
        cron_expression=values.get("cron_expression"), interval_seconds=values.get("interval_seconds"),
        anchor=values.get("schedule_anchor") or anchor_at(now), run_at=values.get("run_at"),
        timezone=values.get("timezone") or "UTC",
    )
    calendar = Calendar.from_lists(row.exclude_dates or [], row.exclude_weekdays or [])
    return schedule.next_after(now) is not None and replace(schedule, calendar=calendar).next_after(now) is None


def load_calendars(names: Iterable[str | None]) -> dict[str, Calendar]:
    """The calendars called ``names`` (None ignored), in one query."""
    wanted = sorted({name for name in names if name is not None})
    if not wanted:
        return {}
    rows = db.session.execute(
        sa.select(CalendarRow.name, CalendarRow.exclude_dates, CalendarRow.exclude_weekdays)
        .where(CalendarRow.name.in_(wanted))
    )
    return {name: Calendar.from_lists(dates, weekdays) for name, dates, weekdays in rows}


def schedule_for(values: Any, calendars: dict[str, Calendar]) -> Schedule:
    """The schedule of a task row or ``Task`` (anything with the task's schedule attributes)."""
    return Schedule(
        cron_expression=values.cron_expression, interval_seconds=values.interval_seconds,
        anchor=values.schedule_anchor, run_at=values.run_at, timezone=values.timezone,
        calendar=calendars.get(values.calendar) if values.calendar is not None else None,
    )


def schedule_of(task: Task) -> Schedule:
    return schedule_for(task, load_calendars([task.calendar]))


def next_slot(task: Task, now: datetime) -> datetime | None:
    """The first slot strictly after ``now``, or None for a disabled or dependency-only task."""
    if not task.enabled or not task.has_schedule:
        return None
    return schedule_of(task).next_after(now)


def set_next_slot(task: Task, slot: datetime | None) -> None:
    """Make ``slot`` the task's next one; it comes due after the jitter drawn for it (models.py
    sets ``due_at``), drawn from the task's id: flush a new task first."""
    task.next_run_at = slot


def reschedule(task: Task, now: datetime) -> None:
    """Start the task's schedule again from ``now``: missed slots are not run."""
    set_next_slot(task, next_slot(task, now))


def task_schedule(task: Task, start: datetime, count: int) -> dict[str, Any]:
    """What ``GET /api/tasks/{id}/schedule/`` answers: the slots a disabled task would have
    are not slots (it is never run by the schedule), nor has a dependency-only task any. A task
    paused until a time has the slots from then on (pausing.py resumes it at the first)."""
    schedule = schedule_of(task)
    description = schedule.describe()
    if task.paused_until is not None:
        after = max(start, task.paused_until - timedelta(microseconds=1))
        return {"description": f"Paused until {task.paused_until.isoformat()}. {description}",
                "next_runs": schedule.upcoming(after, count)}
    if not task.enabled:
        return {"description": f"{'Paused' if task.pause_note else 'Disabled'}. {description}", "next_runs": []}
    return {"description": description, "next_runs": schedule.upcoming(start, count)}
