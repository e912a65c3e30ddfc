"""Deleting a calendar or a pool: one page for both, since a task names either by its name.

The page lists the tasks that still name it (then it cannot go: the service refuses
with 409, and the page says so again after a refused POST).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from .queries import tasks_using
from .task_writes import attempt, refusal_message

TEMPLATE = "admin/named_delete.html"


def delete_view(name: str, *, kind: str, column: Any, get: Callable[[str], Any],
                delete: Callable[[Any], None]) -> Any:
    """GET: ask; POST: delete the ``kind`` ("calendar", "pool") called ``name`` unless a task names it."""
    item = get(name)
    if request.method == "GET":
        return render_template(TEMPLATE, kind=kind, item=item, users=_users(column, name))
    _, refusal = attempt(delete, item)
    if refusal is not None:
        # Rolled back: read again for the page.
        return render_template(TEMPLATE, kind=kind, item=get(name), users=_users(column, name),
                               refusal=refusal_message(refusal)), 409
    flash(f"{kind.capitalize()} “{name}” deleted.", "success")
    return redirect(url_for(f"admin.{kind}_list"))


def _users(column: Any, name: str) -> list[tuple[int, str]]:
    return tasks_using(column, [name]).get(name, [])
