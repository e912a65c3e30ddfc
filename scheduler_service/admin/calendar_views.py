"""The admin's calendar pages: list, create, edit, delete.

Routes on the admin blueprint (``views.blp``), so the same login and CSRF guard
covers them. Input goes through the API's CalendarSchema and writes through
``calendars`` (audit entries, the tasks' next slots moved at once), so the admin
and ``/api/calendars/`` refuse the same things.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from flask import flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from .. import calendars
from ..models import Calendar, Task
from ..schedule_schemas import CalendarSchema, CalendarUpdateSchema
from .named_delete import delete_view
from .queries import tasks_using
from .task_form import FORM_WIDE, FieldErrors, errors_from_messages
from .task_writes import attempt, refusal_errors
from .views import blp

# ISO weekday number (1 = Monday) to the name shown.
WEEKDAYS = {1: "Monday", 2: "Tuesday", 3: "Wednesday", 4: "Thursday", 5: "Friday", 6: "Saturday", 7: "Sunday"}
# Excluded dates are typed one a line or separated by commas (spaces and semicolons pass too).
_DATE_SEPARATORS = re.compile(r"[\s,;]+")


@blp.get("/calendars/")
def calendar_list():
    return render_template("admin/calendars.html", calendars=calendars.list_calendars(),
                           users=tasks_using(Task.calendar), weekdays=WEEKDAYS)


@blp.route("/calendars/new", methods=["GET", "POST"])
def calendar_new():
    if request.method == "GET":
        return _calendar_form(None, {"name": "", "description": "", "exclude_dates": "", "exclude_weekdays": []}, {})
    payload = _payload_from_form(request.form, with_name=True)
    data, errors = _load(CalendarSchema(), payload)
    if data is not None:
        calendar, refusal = attempt(calendars.create_calendar, data)
        if refusal is None:
            flash(f"Calendar “{calendar.name}” created.", "success")
            return redirect(url_for("admin.calendar_list"))
        errors = refusal_errors(refusal)
    return _calendar_form(None, _form_values(request.form), errors), 422


@blp.route("/calendars/<name>/edit", methods=["GET", "POST"])
def calendar_edit(name: str):
    calendar = calendars.get_calendar(name)
    if request.method == "GET":
        return _calendar_form(calendar, _values_from_calendar(calendar), {})
    data, errors = _load(CalendarUpdateSchema(), _payload_from_form(request.form, with_name=False))
    if data is not None:
        saved, refusal = attempt(calendars.update_calendar, calendar, data)
        if refusal is None:
            flash(f"Calendar “{saved.name}” saved; the next slots of its tasks follow it.", "success")
            return redirect(url_for("admin.calendar_list"))
        errors = refusal_errors(refusal)
    return _calendar_form(calendar, _form_values(request.form), errors), 422


@blp.route("/calendars/<name>/delete", methods=["GET", "POST"])
def calendar_delete(name: str):
    return delete_view(name, kind="calendar", column=Task.calendar, get=calendars.get_calendar,
                       delete=calendars.delete_calendar)


# --- the form --------------------------------------------------------------------------------


def _payload_from_form(form: MultiDict, *, with_name: bool) -> dict[str, Any]:
    """The calendar JSON a submitted form means; bad values are passed on for the schema to name."""
    payload: dict[str, Any] = {
        "description": form.get("description", "").replace("\r\n", "\n"),  # as the task form's
        "exclude_dates": _dates(form.get("exclude_dates", "")),
        "exclude_weekdays": [_weekday(value) for value in form.getlist("exclude_weekdays")],
    }
    if with_name:
        payload["name"] = form.get("name", "").strip()
    return payload


def _load(schema: ma.Schema, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, FieldErrors]:
    try:
        return schema.load(payload), {}
    except ma.ValidationError as exc:
        return None, _schema_errors(exc.messages, payload)


def _schema_errors(messages: Any, payload: dict[str, Any]) -> FieldErrors:
    """Schema messages by form field; a bad date is named by what was typed, not by its position."""
    dates = messages.get("exclude_dates") if isinstance(messages, Mapping) else None
    if not isinstance(dates, Mapping):
        return errors_from_messages(messages, "")
    others = errors_from_messages({key: value for key, value in messages.items() if key != "exclude_dates"}, "")
    typed = payload["exclude_dates"]
    lines = [
        f"“{typed[index]}”: {text}" if isinstance(index, int) and index < len(typed) else f"{index}: {text}"
        for index, texts in dates.items() for text in (texts if isinstance(texts, list) else [texts])
    ]
    return {**others, "exclude_dates": lines}


def _dates(text: str) -> list[str]:
    return [part for part in _DATE_SEPARATORS.split(text) if part]


def _weekday(value: str) -> int | str:
    """An int, or the text itself so that the schema reports "Not a valid integer."."""
    return int(value) if value.strip().isdigit() else value


def _form_values(form: MultiDict) -> dict[str, Any]:
    """A submitted form as the values to show again next to its errors."""
    return {
        "name": form.get("name", ""), "description": form.get("description", ""),
        "exclude_dates": form.get("exclude_dates", ""),
        "exclude_weekdays": [_weekday(value) for value in form.getlist("exclude_weekdays")],
    }


def _values_from_calendar(calendar: Calendar) -> dict[str, Any]:
    return {
        "name": calendar.name, "description": calendar.description or "",
        "exclude_dates": "\n".join(calendar.exclude_dates or []),
        "exclude_weekdays": list(calendar.exclude_weekdays or []),
    }


def _calendar_form(calendar: Calendar | None, values: dict[str, Any], errors: FieldErrors) -> str:
    users = tasks_using(Task.calendar, [calendar.name]).get(calendar.name, []) if calendar else []
    return render_template("admin/calendar_form.html", calendar=calendar, values=values, errors=errors,
                           weekdays=WEEKDAYS, form_wide=FORM_WIDE, users=users)
