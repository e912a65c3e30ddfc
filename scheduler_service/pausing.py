"""Pausing and resuming tasks: disabled with a note, by someone, perhaps until a time.

A pause is ``enabled`` false plus why (``pause_note``), who (``paused_by``) and until
when (``paused_until``). At ``paused_until`` the tick resumes the task (``resume_paused``):
its next slot is the first one from then on, so the slots during the pause are not run.
``pause_after_failures`` pauses a task from the recorder (engine/recording.py).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import audit, run_counts
from .database import db
from .engine.schedules import ONE_MICROSECOND
from .models import Run, Task
from .task_schedules import next_slot, reschedule, set_next_slot

#: The actor of what the scheduler does by itself (an automatic resume or pause).
SCHEDULER_ACTOR = "scheduler"
PAUSE_FIELDS = ("enabled", "pause_note", "paused_until", "paused_by")
# Tasks resumed by one tick at most; the rest the next tick.
RESUME_BATCH = 100


def _pause_state(task: Task) -> dict[str, Any]:
    return {field: audit.json_value(getattr(task, field)) for field in PAUSE_FIELDS}


def drop_queued_slots(task: Task, now: datetime) -> None:
    """Skip the task's queued runs that have not started (missed slots, buffered slots): a
    disabled task is not run by its schedule. Backfill runs, asked for by a person, still run.

    One conditional UPDATE: a run a scheduler claims meanwhile is running, and stays so."""
    run = Run.__table__
    skipped = db.session.connection().execute(
        sa.update(run)
        .where(run.c.task_id == task.id, run.c.status == "pending", run.c.trigger.in_(("schedule", "dependency")))
        .values(status="skipped", started_at=now, finished_at=now,
                message="task disabled before this waiting slot ran")
        .returning(run.c.id)
    ).scalars().all()
    run_counts.apply(db.session.connection(),
                     (change for _ in skipped for change in run_counts.moved(task.id, "pending", "skipped")))


def clear_pause(task: Task) -> None:
    """A task enabled again is not paused, and counts its failures afresh (else one more failure
    would pause a task paused after failures again at once)."""
    task.pause_note = task.paused_until = task.paused_by = None
    task.consecutive_failures = 0


def pause_task(task: Task, note: str | None, until: datetime | None, now: datetime) -> None:
    """Pause ``task`` (in the session; the caller commits). Pausing a paused task changes its note and time."""
    before = _pause_state(task)
    task.enabled = False
    task.pause_note, task.paused_until, task.paused_by = note, until, audit.current_actor()
    drop_queued_slots(task, now)
    reschedule(task, now)  # disabled: no next slot
    audit.record("pause", task.id, audit.diff(before, _pause_state(task)))


def resume_task(task: Task, now: datetime, *, since: datetime | None = None, actor: str | None = None) -> None:
    """Enable ``task`` again, its next slot the first at or after ``since`` (default ``now``)."""
    before = _pause_state(task)
    task.enabled = True
    clear_pause(task)
    drop_queued_slots(task, now)  # slots of the pause (or from before it) are not run
    if since is None:
        reschedule(task, now)
    else:
        set_next_slot(task, next_slot(task, since - ONE_MICROSECOND))
    audit.record("resume", task.id, audit.diff(before, _pause_state(task)), actor=actor)


def resume_paused(now: datetime) -> int:
    """Resume the tasks whose ``paused_until`` has come; how many this process resumed.

    Each is taken by a conditional UPDATE of the ``paused_until`` it was read with, so
    that two processes resume a task once (one audit entry)."""
    due = db.session.execute(
        sa.select(Task.id, Task.paused_until).where(Task.paused_until <= now)
        .order_by(Task.paused_until).limit(RESUME_BATCH)
    ).all()
    resumed = 0
    for task_id, until in due:
        won = db.session.execute(
            sa.update(Task).where(Task.id == task_id, Task.paused_until == until).values(paused_until=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not won:
            db.session.rollback()
            continue
        task = db.session.get(Task, task_id, populate_existing=True)
        task.paused_until = until  # as it was, for the audit entry
        resume_task(task, now, since=until, actor=SCHEDULER_ACTOR)
        db.session.commit()
        resumed += 1
    db.session.commit()
    return resumed
