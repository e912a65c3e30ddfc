"""What the list pages read: tasks and runs, filtered and paged as the API does it.

The query strings are read with the API's own argument schemas, so a filter
means the same in the browser as in ``/api/tasks/`` and ``/api/logs/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from .. import listing
from ..api.pagination import paginate
from ..database import db
from ..models import FINISHED_RUN_STATUSES, AuditEntry, Run, Task
from ..refusals import Invalid
from ..schemas import RunQueryArgsSchema, TaskQueryArgsSchema

RECENT_RUNS_SHOWN = 10
HISTORY_SHOWN = 20


@dataclass
class Filters:
    """A list page's query string: the values that passed, what to show in the form, and what did not pass."""

    args: dict[str, Any]
    shown: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def query(self, **changes: Any) -> dict[str, str]:
        """The query string of another page of this list: the same filters, from the first page unless a cursor is given."""
        values = {key: value for key, value in self.shown.items() if key != "cursor"}
        values.update({key: value for key, value in changes.items() if value is not None})
        return values


def read_filters(schema: ma.Schema, query: MultiDict) -> Filters:
    """Load the query string with ``schema``; a bad filter is reported and left out, not fatal."""
    shown = {key: value.strip() for key, value in query.items() if value.strip()}
    try:
        return Filters(schema.load(shown), shown)
    except ma.ValidationError as exc:
        errors = {key: _texts(messages) for key, messages in exc.messages.items()}
        passed = {key: value for key, value in shown.items() if key not in errors}
        return Filters(schema.load(passed), shown, errors)


def task_filters(query: MultiDict) -> Filters:
    return read_filters(TaskQueryArgsSchema(), query)


def run_filters(query: MultiDict) -> Filters:
    return read_filters(RunQueryArgsSchema(), query)


def task_page(args: dict[str, Any]) -> dict[str, Any]:
    """One page of tasks, oldest first (``{"items", "next_cursor"}``)."""
    query = listing.task_query(args)
    return _page(query, Task.id, args, newest_first=False)


def run_page(args: dict[str, Any]) -> dict[str, Any]:
    """One page of the execution log, newest first."""
    query = listing.run_query(args)
    return _page(query, Run.id, args, newest_first=True)


def last_finished_runs(task_ids: list[int]) -> dict[int, Run]:
    """Each task's latest finished run: its last outcome."""
    if not task_ids:
        return {}
    latest = (
        sa.select(sa.func.max(Run.id))
        .where(Run.task_id.in_(task_ids), Run.status.in_(FINISHED_RUN_STATUSES))
        .group_by(Run.task_id)
    )
    return {run.task_id: run for run in db.session.scalars(sa.select(Run).where(Run.id.in_(latest)))}


def recent_runs(task_id: int, limit: int = RECENT_RUNS_SHOWN) -> list[Run]:
    query = sa.select(Run).where(Run.task_id == task_id).order_by(Run.id.desc()).limit(limit)
    return list(db.session.scalars(query))


def count_runs(task_id: int) -> int:
    return db.session.execute(sa.select(sa.func.count()).where(Run.task_id == task_id)).scalar_one()


def task_names(exclude: int | None = None) -> list[tuple[int, str]]:
    """Every task as (id, name), by name: the choices of the task selects."""
    query = sa.select(Task.id, Task.name).order_by(Task.name)
    if exclude is not None:
        query = query.where(Task.id != exclude)
    return [(task_id, name) for task_id, name in db.session.execute(query)]


def _page(query: sa.Select, id_column: Any, args: dict[str, Any], newest_first: bool) -> dict[str, Any]:
    try:
        return paginate(query, id_column, limit=args["limit"], cursor=args["cursor"], newest_first=newest_first)
    except Invalid:
        # A cursor we did not give out (edited by hand): start from the first page.
        return paginate(query, id_column, limit=args["limit"], cursor=None, newest_first=newest_first)


def _texts(messages: Any) -> list[str]:
    return [str(item) for item in messages] if isinstance(messages, list) else [str(messages)]


def task_history(task_id: int) -> list[AuditEntry]:
    """The task's latest audit entries, newest first."""
    return db.session.scalars(
        sa.select(AuditEntry).where(AuditEntry.task_id == task_id).order_by(AuditEntry.id.desc()).limit(HISTORY_SHOWN)
    ).all()


def tasks_using(column: Any, names: list[str] | None = None) -> dict[str, list[tuple[int, str]]]:
    """(id, name) of the tasks that name each calendar or pool (``column``: Task.calendar or
    Task.pool), of ``names`` or all, by task name."""
    query = sa.select(column, Task.id, Task.name).where(column.is_not(None)).order_by(Task.name)
    if names is not None:
        query = query.where(column.in_(names))
    users: dict[str, list[tuple[int, str]]] = {}
    for key, task_id, task_name in db.session.execute(query):
        users.setdefault(key, []).append((task_id, task_name))
    return users
