"""The reads the API and the admin share: one task or run by id, and the statistics.

A missing id raises ``refusals.NotFound``: the API answers it with a JSON 404, the admin
with its own 404 page. (The filtered lists both show are in listing.py.)
"""
from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa

from . import listing
from .database import db
from .models import RUN_STATUSES, Run, SchedulerState, Task, TaskRunCounts
from .refusals import NotFound
from .run_counts import COUNTED, MICROSECONDS
from .schemas import INT_MAX

Row = TypeVar("Row", Task, Run)

NEXT_RUNS_SHOWN = 10


# --- one by id -----------------------------------------------------------------------------------


def get_task(task_id: int) -> Task:
    return _get(Task, "task", task_id)


def get_run(run_id: int) -> Run:
    return _get(Run, "run", run_id)


def _get(model: type[Row], kind: str, key: int) -> Row:
    # An id past the column's range cannot exist (and PostgreSQL would refuse to compare it).
    found = db.session.get(model, key) if 0 < key <= INT_MAX else None
    if found is None:
        raise NotFound(kind, key)
    return found


# --- statistics ----------------------------------------------------------------------------------


def collect_stats(task_id: int | None = None) -> dict[str, Any]:
    """The stats (StatsSchema) of all tasks, or of one: run counts as kept per task, never a scan of the runs."""
    task_filter = [Task.id == task_id] if task_id is not None else []

    tasks_total, tasks_enabled, tasks_by_status = listing.task_counts(task_filter)
    next_runs = db.session.execute(
        sa.select(Task.id, Task.name, Task.next_run_at)
        .where(Task.enabled, Task.next_run_at.is_not(None), *task_filter)
        .order_by(Task.next_run_at, Task.id)
        .limit(NEXT_RUNS_SHOWN)
    ).all()
    state = db.session.get(SchedulerState, 1)
    return {
        "tasks": {
            "total": tasks_total,
            "enabled": tasks_enabled,
            "by_status": tasks_by_status,
        },
        "runs": runs_document(_run_counts(task_id)),
        "next_runs": [{"task_id": id_, "name": name, "next_run_at": at} for id_, name, at in next_runs],
        "scheduler": {"last_tick_at": state.last_tick_at if state else None},
    }


def runs_document(counts: dict[str, int]) -> dict[str, Any]:
    """The "runs" part of the stats from run counts: success rate over decided runs, mean over timed ones."""
    by_status = {status: counts[status] for status in RUN_STATUSES}
    decided = by_status["success"] + by_status["failed"]
    timed = counts["timed_runs"]
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "success_rate": by_status["success"] / decided if decided else None,
        # One division of two exact integers: the correctly rounded mean.
        "avg_duration_seconds": counts["timed_microseconds"] / (timed * MICROSECONDS) if timed else None,
    }


def _run_counts(task_id: int | None) -> dict[str, int]:
    """The task's run counts, or every task's added up."""
    counts = TaskRunCounts.__table__
    query = sa.select(*[sa.func.coalesce(sa.func.sum(counts.c[name]), 0) for name in COUNTED])
    if task_id is not None:
        query = query.where(counts.c.task_id == task_id)
    # int(): PostgreSQL sums a BIGINT column as NUMERIC.
    return {name: int(value) for name, value in zip(COUNTED, db.session.execute(query).one())}
