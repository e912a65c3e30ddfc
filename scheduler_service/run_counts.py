"""Run counts per task (``TaskRunCounts``), kept in step with the run table, so that
/api/stats/ reads one row per task instead of aggregating every run.

Every write that adds a run, changes a run's status or deletes runs changes the counts
in the same transaction:

* the engine (engine/tick.py) and retention (ops/retention.py) write runs with Core
  statements, in batches: they describe what they wrote as ``RunCount`` changes and
  ``apply`` a batch's changes in one statement;
* runs written through the ORM unit of work (a manual run request, tests) are counted
  by mapper events (``watch_orm_writes``);
* deleting a task deletes its counts with its runs (ON DELETE CASCADE);
* runs loaded straight into the table (a bulk load) are counted by ``recount``.

A change is an upsert that sets ``column = column + delta``, never a value computed in
Python, so processes changing one task's counts at once all count, and a task's first
run needs no row made beforehand. Rows are written in task-id order and after the task
rows a transaction touches, so two transactions never wait for each other's count rows.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .models import RUN_STATUSES, Run, TaskRunCounts

MICROSECONDS = 1_000_000
COUNTED = (*RUN_STATUSES, "timed_runs", "timed_microseconds")

_counts = TaskRunCounts.__table__
_dialect_inserts = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class RunCount(NamedTuple):
    """One run entering (``sign`` 1) or leaving (-1) its task's counts."""

    task_id: int
    status: str
    duration_seconds: float | None = None  # only for a finished run: the average is over those
    sign: int = 1


def counted(task_id: int, status: str, finished_at: datetime | None, duration_seconds: float | None,
            sign: int = 1) -> RunCount:
    """A run as the counts see it: its duration counts once the run has finished."""
    return RunCount(task_id, status, duration_seconds if finished_at is not None else None, sign)


def moved(task_id: int, before: str, after: str, duration_seconds: float | None = None) -> list[RunCount]:
    """A run of ``task_id`` going from unfinished status ``before`` to ``after``."""
    return [RunCount(task_id, before, sign=-1), RunCount(task_id, after, duration_seconds)]


def to_microseconds(seconds: float) -> int:
    # Durations are differences of datetimes, whole microseconds: rounding recovers them exactly.
    return round(seconds * MICROSECONDS)


def net_rows(changes: Iterable[RunCount]) -> list[dict[str, int]]:
    """The net change per task, as upsert parameters in task-id order; tasks whose changes cancel out are left out."""
    rows: dict[int, dict[str, int]] = {}
    for change in changes:
        if change.status not in RUN_STATUSES:
            raise ValueError(f"run status {change.status!r} is not one of {RUN_STATUSES}")
        row = rows.setdefault(change.task_id, dict.fromkeys(COUNTED, 0))
        row[change.status] += change.sign
        if change.duration_seconds is not None:
            row["timed_runs"] += change.sign
            row["timed_microseconds"] += change.sign * to_microseconds(change.duration_seconds)
    return [{"task_id": task_id, **row} for task_id, row in sorted(rows.items()) if any(row.values())]


@functools.cache
def _add_to_counts(dialect_name: str) -> Any:
    """INSERT the change as a task's counts, or add it to the counts already there."""
    try:
        insert = _dialect_inserts[dialect_name](_counts)
    except KeyError:
        raise NotImplementedError(f"run counts are kept on SQLite and PostgreSQL, not {dialect_name}") from None
    return insert.on_conflict_do_update(
        index_elements=[_counts.c.task_id],
        set_={name: _counts.c[name] + insert.excluded[name] for name in COUNTED},
    )


def apply(connection: sa.Connection, changes: Iterable[RunCount]) -> None:
    """Add ``changes`` to the counts, in ``connection``'s transaction (one statement)."""
    rows = net_rows(changes)
    if rows:
        connection.execute(_add_to_counts(connection.dialect.name), rows)


def recount(connection: sa.Connection) -> None:
    """Count every run again from the run table, for runs loaded behind the application's back
    (a bulk load, a benchmark). One INSERT ... SELECT ... GROUP BY: nothing may write runs meanwhile.
    """
    run = Run.__table__
    finished = run.c.finished_at.is_not(None)
    microseconds = sa.cast(sa.func.round(run.c.duration_seconds * MICROSECONDS), sa.BigInteger)
    per_task = sa.select(
        run.c.task_id,
        *[sa.func.count(sa.case((run.c.status == status, 1))) for status in RUN_STATUSES],
        sa.func.count(sa.case((finished, run.c.duration_seconds))),
        sa.func.coalesce(sa.func.sum(sa.case((finished, microseconds))), 0),
    ).group_by(run.c.task_id)
    connection.execute(sa.delete(_counts))
    connection.execute(sa.insert(_counts).from_select(["task_id", *COUNTED], per_task))


# --- runs written through the ORM ------------------------------------------------------------


def watch_orm_writes() -> None:
    """Count the runs the ORM unit of work inserts, updates and deletes (idempotent).

    Core statements (the engine's batches, retention) bypass these events and apply
    their changes themselves.
    """
    for event_name, listener in (
        ("after_insert", _count_inserted), ("after_update", _count_updated), ("before_delete", _count_deleted),
    ):
        if not sa.event.contains(Run, event_name, listener):
            sa.event.listen(Run, event_name, listener)


def _as_flushed(run: Run, sign: int = 1) -> RunCount:
    return counted(run.task_id, run.status, run.finished_at, run.duration_seconds, sign)


def _as_stored(run: Run, sign: int) -> RunCount:
    """The run as the database holds it before this flush writes it."""
    values = [_stored_value(run, name) for name in ("task_id", "status", "finished_at", "duration_seconds")]
    return counted(*values, sign=sign)


def _stored_value(run: Run, name: str) -> Any:
    history = sa.inspect(run).attrs[name].history
    if history.deleted:
        return history.deleted[0]
    if history.unchanged:
        return history.unchanged[0]
    return getattr(run, name)  # not loaded and not changed: loading it reads the stored value


def _count_inserted(mapper: Any, connection: sa.Connection, run: Run) -> None:
    apply(connection, [_as_flushed(run)])


def _count_updated(mapper: Any, connection: sa.Connection, run: Run) -> None:
    apply(connection, [_as_stored(run, sign=-1), _as_flushed(run)])


def _count_deleted(mapper: Any, connection: sa.Connection, run: Run) -> None:
    # Before the DELETE, while a value that was never loaded can still be read.
    apply(connection, [_as_stored(run, sign=-1)])
