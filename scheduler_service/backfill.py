"""Backfill: runs for a task's past slots, queued to run one at a time in slot order.

The slots are the task's own (``Schedule.between``, the rules the engine and the
schedule endpoint use). Each kept slot gets one pending run with trigger ``backfill``;
the engine starts a task's queued runs oldest slot first, one at a time (tick.py).

Slots the engine has not reached yet (from the task's ``next_run_at`` on, after downtime) are
left to its catch-up policy.

Numbering: (task, slot, attempt) is unique. A slot's backfill run takes the next attempt
number after the slot's existing runs (1 for a slot that never ran), so a re-processed
slot's history reads in order; its retries start a fresh chain all the same (recording.py).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from . import audit
from .clock import utcnow
from .engine.schedules import ONE_MICROSECOND
from .extensions import db, scheduler
from .models import Run, Task
from .refusals import Conflict, Invalid
from .run_rows import NewRuns
from .task_schedules import schedule_of

MAX_BACKFILL_SLOTS = 1000
# reprocess "failed" runs a slot again when its latest run ended so.
RERUN_STATUSES = ("failed", "skipped")


def backfill_slots(task: Task, start: datetime, end: datetime, reprocess: str, now: datetime) -> list[datetime]:
    """The slots a backfill of ``task`` from ``start`` to ``end`` (both inclusive) would run."""
    if not task.has_schedule:
        raise Invalid("_schema", "A dependency-only task has no slots of its own to backfill.")
    if end > now:
        raise Invalid("end", "May not be in the future.")
    if start > end:
        raise Invalid("start", "May not be after end.")
    if task.enabled and task.next_run_at is not None:
        # Slots from the task's next one on are the engine's still (its catch-up policy decides
        # them after downtime): a backfill run there would take the attempt the engine writes.
        end = min(end, task.next_run_at - ONE_MICROSECOND)
    slots = schedule_of(task).between(start, end, MAX_BACKFILL_SLOTS) if start <= end else []
    if len(slots) > MAX_BACKFILL_SLOTS:
        raise Invalid("end", f"The range holds more than {MAX_BACKFILL_SLOTS} slots: backfill it in parts.")
    if reprocess == "all" or not slots:
        return slots
    latest = _latest_runs(task.id, slots[0], slots[-1])
    if reprocess == "missing":
        return [slot for slot in slots if slot not in latest]
    return [slot for slot in slots if slot not in latest or latest[slot][1] in RERUN_STATUSES]


def _latest_runs(task_id: int, first: datetime, last: datetime) -> dict[datetime, tuple[int, str]]:
    """(attempt, status) of the latest run of each slot from ``first`` to ``last``."""
    rows = db.session.execute(
        sa.select(Run.scheduled_for, Run.attempt, Run.status)
        .where(Run.task_id == task_id, Run.scheduled_for.between(first, last))
        .order_by(Run.scheduled_for, Run.attempt)
    )
    return {slot: (attempt, status) for slot, attempt, status in rows}


def backfill(task: Task, args: dict[str, Any]) -> dict[str, Any]:
    """Plan (and unless ``dry_run``, queue) a backfill; ``{"slots": [...], "runs": [...]}``."""
    now = utcnow()
    slots = backfill_slots(task, args["start"], args["end"], args["reprocess"], now)
    if args["dry_run"] or not slots:
        return {"slots": slots, "runs": []}
    attempts = _latest_runs(task.id, slots[0], slots[-1])
    rows = [{
        "task_id": task.id, "trigger": "backfill", "status": "pending", "scheduled_for": slot, "pool": task.pool,
        "attempt": attempts[slot][0] + 1 if slot in attempts else 1, "created_at": now,
    } for slot in slots]
    try:
        with NewRuns(db.session.connection()) as runs:
            run_ids = runs.add(rows)
        audit.record("backfill", task.id, {
            "start": [None, args["start"].isoformat()], "end": [None, args["end"].isoformat()],
            "reprocess": [None, args["reprocess"]], "slots": [None, len(slots)],
        })
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"another backfill of task {task.name!r} was written at the same moment; try again") from None
    scheduler.wake()
    runs = db.session.scalars(sa.select(Run).where(Run.id.in_(run_ids)).order_by(Run.scheduled_for)).all()
    return {"slots": slots, "runs": runs}
