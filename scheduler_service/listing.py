"""The filtered lists the API and the admin pages both show (tasks and the execution log),
and the task counts the stats and the metrics both show.

The API reads its lists as plain rows rather than ORM objects: for a page of 50, building
the objects cost more than the query itself, and their garbage made the worker's full
garbage collections (60-140 ms each on the W4 machine) frequent enough to show in p99.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from .database import db
from .models import TASK_STATUSES, Run, Task, task_dependencies

# What a list of runs shows (RunSummarySchema's fields), task_name joined in.
RUN_SUMMARY_COLUMNS = (
    Run.id, Run.task_id, Task.name.label("task_name"), Run.attempt, Run.trigger, Run.status, Run.scheduled_for,
    Run.started_at, Run.finished_at, Run.duration_seconds, Run.exit_code, Run.http_status, Run.output, Run.message,
)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def task_query(filters: dict[str, Any]) -> sa.Select:
    """Tasks (with their parents) matching ``enabled``, ``status`` and ``q`` (name contains,
    % and _ taken literally)."""
    # With a LIMIT, SQLAlchemy pages the tasks in a subquery and joins the parents to that:
    # one statement per page.
    return _filter_tasks(sa.select(Task).options(joinedload(Task.parents)), filters)


def task_rows_query(filters: dict[str, Any]) -> sa.Select:
    """``task_query`` as rows of the task table's columns; ``with_parent_ids`` adds depends_on."""
    return _filter_tasks(sa.select(*Task.__table__.columns), filters)


def with_parent_ids(task_rows: Iterable[sa.Row]) -> list[dict[str, Any]]:
    """Each task row as a dict with ``depends_on``: its parents' ids, ascending like
    ``Task.depends_on``; one statement for all of them."""
    rows = list(task_rows)
    parents = _parent_ids([row.id for row in rows])
    return [{**row._mapping, "depends_on": parents.get(row.id, [])} for row in rows]


def _parent_ids(task_ids: list[int]) -> dict[int, list[int]]:
    if not task_ids:
        return {}
    edges = db.session.execute(
        sa.select(task_dependencies.c.child_id, task_dependencies.c.parent_id)
        .where(task_dependencies.c.child_id.in_(task_ids))
        .order_by(task_dependencies.c.child_id, task_dependencies.c.parent_id)
    )
    parents: dict[int, list[int]] = defaultdict(list)
    for child_id, parent_id in edges:
        parents[child_id].append(parent_id)
    return parents


def _filter_tasks(query: sa.Select, filters: dict[str, Any]) -> sa.Select:
    if "enabled" in filters:
        query = query.where(Task.enabled == filters["enabled"])
    if "status" in filters:
        query = query.where(Task.status == filters["status"])
    if filters.get("q"):
        query = query.where(Task.name.ilike(f"%{_escape_like(filters['q'])}%", escape="\\"))
    return query


def run_query(filters: dict[str, Any]) -> sa.Select:
    """Runs (with their task) matching ``task_id``, ``status``, ``trigger``; ``since``/``until``
    bound started_at, inclusive."""
    return _filter_runs(sa.select(Run).options(joinedload(Run.task)), filters)


def run_summary_query(filters: dict[str, Any]) -> sa.Select:
    """``run_query`` as rows of RUN_SUMMARY_COLUMNS, for lists that show only those."""
    return _filter_runs(sa.select(*RUN_SUMMARY_COLUMNS).join(Run.task), filters)


def _filter_runs(query: sa.Select, filters: dict[str, Any]) -> sa.Select:
    return filtered(query, Run, filters, equal=("task_id", "status", "trigger"), time_column=Run.started_at)


def filtered(query: sa.Select, model: Any, filters: dict[str, Any], *, equal: Iterable[str] = (),
             time_column: Any = None) -> sa.Select:
    """``query`` narrowed to the ``equal`` filters given (``model.name == value``) and to
    ``since <= time_column <= until`` (both inclusive), as every list of the API filters."""
    for name in equal:
        if name in filters:
            query = query.where(getattr(model, name) == filters[name])
    if time_column is not None and "since" in filters:
        query = query.where(time_column >= filters["since"])
    if time_column is not None and "until" in filters:
        query = query.where(time_column <= filters["until"])
    return query


def task_counts(where: list) -> tuple[int, int, dict[str, int]]:
    """Tasks in all, enabled, and by status (every status, 0 where none): one scan of the task table."""
    rows = db.session.execute(
        sa.select(Task.status, sa.func.count(), sa.func.count().filter(Task.enabled)).where(*where).group_by(Task.status)
    ).all()
    by_status = dict.fromkeys(TASK_STATUSES, 0)
    by_status.update({status: count for status, count, _ in rows if status in by_status})
    return sum(count for _, count, _ in rows), sum(enabled for _, _, enabled in rows), by_status
