"""Cancelling runs: a pending run is finished at once; a running one is asked to stop.

A running run may run in any process. Asking is a row in ``run_cancel`` naming the run's
owner; each engine reads the rows of its own owner name once a second while it runs
anything (one indexed query per process, not one per run) and sets that run's stop
event (engine/scheduler.py). The run then records ``cancelled ...`` and is not retried.
A run whose process died meanwhile is finished by lease recovery, which reads the same
rows (leases.py), so a cancelled run is never retried whoever finishes it.

Core statements on the session's connection: the API (run_control.py) and the tick
(``replace``) call these inside their own transactions.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import run_counts
from ..database import db
from ..models import Run, RunCancel, Task
from . import statements as sql

CANCELLED = "cancelled"
REPLACED = "cancelled: replaced by a newer run"
MESSAGE_LIMIT = 500

_run, _task, _cancel = Run.__table__, Task.__table__, RunCancel.__table__
# Pending runs counted in the task's active_runs: a manual run is counted when asked for;
# queued runs (catch-up, buffered, backfill, pool waits) only once claimed.
COUNTED_PENDING = ("manual",)


def cancel_message(actor: str | None) -> str:
    return f"{CANCELLED} by {actor}" if actor else CANCELLED


def finish_pending(rows: Sequence[Any], message: str, now: datetime) -> list[int]:
    """Finish the pending runs ``rows`` (id, task_id, trigger) as cancelled; the ids finished
    (a run claimed meanwhile is not pending any more and is left out)."""
    finished = []
    for row in rows:
        done = sql.execute(
            sa.update(_run).where(_run.c.id == row.id, _run.c.status == "pending")
            .values(status="failed", started_at=now, finished_at=now, duration_seconds=0.0,
                    message=message[:MESSAGE_LIMIT])
        ).rowcount
        if not done:
            continue
        finished.append(row.id)
        if row.trigger in COUNTED_PENDING:
            sql.execute(sa.update(_task).where(_task.c.id == row.task_id).values(
                active_runs=sa.case((_task.c.active_runs > 0, _task.c.active_runs - 1), else_=0),
                updated_at=_task.c.updated_at))
    run_counts.apply(db.session.connection(), (
        change for row in rows if row.id in finished for change in run_counts.moved(row.task_id, "pending", "failed", 0.0)
    ))
    return finished


def ask_to_stop(run_ids: Iterable[int], message: str, now: datetime) -> int:
    """Ask the owners of these running runs to stop them; a run already asked keeps its first message."""
    ids = list(run_ids)
    if not ids:
        return 0
    asked = sa.select(_cancel.c.run_id).where(_cancel.c.run_id == _run.c.id)
    # RETURNING, not rowcount: PostgreSQL's driver reports -1 for an INSERT ... SELECT.
    return len(sql.execute(sa.insert(_cancel).from_select(
        ["run_id", "owner", "message", "requested_at"],
        sa.select(_run.c.id, _run.c.owner, sa.literal(message[:MESSAGE_LIMIT]), sa.literal(now, _cancel.c.requested_at.type))
        .where(_run.c.id.in_(ids), _run.c.status == "running", ~sa.exists(asked)),
    ).returning(_cancel.c.run_id)).all())


def replace_active(task_id: int, now: datetime) -> None:
    """``replace``: cancel whatever of the task is active (running runs, waiting runs, a retry
    that waits), so that the slot queued in the same transaction is the one that runs."""
    running = sql.execute(sa.select(_run.c.id).where(_run.c.task_id == task_id, _run.c.status == "running")).scalars()
    ask_to_stop(list(running), REPLACED, now)
    waiting = sql.execute(sa.select(_run.c.id, _run.c.task_id, _run.c.trigger).where(
        _run.c.task_id == task_id, _run.c.status == "pending")).all()
    finish_pending(waiting, REPLACED, now)
    sql.execute(sa.update(_task).where(_task.c.id == task_id, _task.c.status == "retrying").values(
        status="failed", next_retry_at=None, updated_at=_task.c.updated_at))


def requested(owner: str) -> dict[int, str]:
    """The cancels asked of ``owner``'s runs: run id -> message."""
    return dict(sql.execute(sa.select(_cancel.c.run_id, _cancel.c.message).where(_cancel.c.owner == owner)).all())


def messages_for(run_ids: Iterable[int]) -> dict[int, str]:
    ids = list(run_ids)
    if not ids:
        return {}
    return dict(sql.execute(sa.select(_cancel.c.run_id, _cancel.c.message).where(_cancel.c.run_id.in_(ids))).all())


def forget(run_ids: Iterable[int]) -> None:
    ids = list(run_ids)
    if ids:
        sql.execute(sa.delete(_cancel).where(_cancel.c.run_id.in_(ids)))
