"""Every change the admin makes, done by ``services`` (the API's rules), with refusals turned into messages.

``services`` refuses a change by raising a ``refusals.Refused`` (a message for people
and the fields it concerns); this module is the one place the admin turns one into
form errors, shown beside their fields, or into a line of text.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import marshmallow as ma
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict

from .. import services
from ..database import db
from ..models import Task
from ..refusals import Conflict, Refused
from ..schemas import TaskSchema
from .task_form import FORM_WIDE, FieldErrors, errors_from_messages, merge_errors, payload_from_form

Result = TypeVar("Result")

RACE_MESSAGE = "Another change to the same data came first; look again and retry."


def save_task(form: MultiDict, task: Task | None = None) -> tuple[Task | None, FieldErrors]:
    """Create a task (``task`` None) or replace ``task`` from a submitted form.

    Returns the saved task, or None and the errors by form field.
    """
    action_type = form.get("action_type", "")
    payload, unreadable = payload_from_form(form)
    try:
        data = TaskSchema().load(payload)
    except ma.ValidationError as exc:
        return None, merge_errors(unreadable, errors_from_messages(exc.messages, action_type))
    if unreadable:
        return None, unreadable
    saved, refusal = attempt(services.create_task, data) if task is None else attempt(services.update_task, task, data)
    if refusal is not None:
        return None, refusal_errors(refusal, action_type)
    return saved, {}


def attempt(change: Callable[..., Result], *args: Any) -> tuple[Result | None, Refused | None]:
    """Run a ``services`` change; on refusal roll back and return why."""
    try:
        return change(*args), None
    except Refused as exc:
        db.session.rollback()
        return None, exc
    except IntegrityError:
        # A race the service's own checks could not see (two people saving one name).
        db.session.rollback()
        return None, Conflict(RACE_MESSAGE)


def refusal_message(refusal: Refused) -> str:
    """One line for a person: the service's message, else the field errors."""
    if refusal.message:
        return refusal.message
    lines = [
        f"{field}: {text}"
        for field, texts in errors_from_messages(refusal.fields, "").items()
        for text in texts
    ]
    return "; ".join(lines) or "The change was refused."


def refusal_errors(refusal: Refused, action_type: str = "") -> FieldErrors:
    """A refusal as form errors: beside the fields it names, its message above the form."""
    errors = errors_from_messages(refusal.fields, action_type)
    if refusal.message or not errors:
        errors = merge_errors({FORM_WIDE: [refusal_message(refusal)]}, errors)
    return errors
