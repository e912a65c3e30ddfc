"""Calendars: the days a task's schedule leaves out. Writes that the API and the admin share.

A change of a calendar moves the next slot of every task that uses it at once, in the
same transaction, so no task runs on a day its calendar has just excluded.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import audit
from .clock import utcnow
from .extensions import db, scheduler
from .models import Calendar, Task
from .refusals import Conflict, NotFound
from .task_schedules import reschedule

CALENDAR_FIELDS = ("description", "exclude_dates", "exclude_weekdays")


def get_calendar(name: str) -> Calendar:
    calendar = db.session.get(Calendar, name)
    if calendar is None:
        raise NotFound("calendar", name)
    return calendar


def list_calendars() -> list[Calendar]:
    return list(db.session.scalars(sa.select(Calendar).order_by(Calendar.name)))


def _snapshot(calendar: Calendar | None) -> dict[str, Any] | None:
    if calendar is None:
        return None
    return {"calendar": calendar.name, **{field: getattr(calendar, field) for field in CALENDAR_FIELDS}}


def create_calendar(data: dict[str, Any]) -> Calendar:
    if db.session.get(Calendar, data["name"]) is not None:
        raise Conflict(f"a calendar named {data['name']!r} already exists", {"name": ["Already taken."]})
    calendar = Calendar(**data)
    db.session.add(calendar)
    audit.record("create", None, audit.diff(None, _snapshot(calendar)))
    db.session.commit()
    return calendar


def update_calendar(calendar: Calendar, data: dict[str, Any]) -> Calendar:
    before = _snapshot(calendar)
    for field in CALENDAR_FIELDS:
        setattr(calendar, field, data[field])
    changes = audit.diff(before, _snapshot(calendar))
    if changes:
        changes["calendar"] = [calendar.name, calendar.name]  # which calendar, though its name did not change
        audit.record("update", None, changes)
        _reschedule_users(calendar.name)
    db.session.commit()
    scheduler.wake()
    return calendar


def delete_calendar(calendar: Calendar) -> None:
    users = db.session.scalars(sa.select(Task.name).where(Task.calendar == calendar.name).order_by(Task.name)).all()
    if users:
        raise Conflict(f"calendar {calendar.name!r} is used by: {', '.join(users)}; change those tasks first")
    audit.record("delete", None, audit.diff(_snapshot(calendar), None))
    db.session.delete(calendar)
    db.session.commit()


def _reschedule_users(name: str) -> None:
    """Move each enabled task of calendar ``name`` to its next slot by the calendar as it now is.
    A slot already due is left to the engine, which plans it by the new calendar."""
    db.session.flush()  # the new days, for the tasks' schedules
    now = utcnow()
    tasks = db.session.scalars(sa.select(Task).where(Task.calendar == name, Task.enabled)).all()
    for task in tasks:
        if task.next_run_at is None or task.next_run_at > now:
            reschedule(task, now)
