"""The engine's SQL: the statements its three threads execute, built once at import.

Built on the tables (not the ORM classes) and executed on the session's connection, so
that SQLAlchemy compiles each once and caches it (building a statement per row cost more
than the database did). The tick thread claims with them (tick.py), the recorder thread
records outcomes (recording.py), the heartbeat thread renews leases (leases.py). Every
claim is a conditional write: its WHERE clause is what makes it exactly-once when several
processes claim at the same moment.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..database import db
from ..models import Run, Task, UTCDateTime, task_dependencies
from .active_runs import active_run_clause

task, run, deps = Task.__table__, Run.__table__, task_dependencies
_p = sa.bindparam

# Never below zero, even if a count was ever lost.
_one_less_active = sa.case((task.c.active_runs > 0, task.c.active_runs - 1), else_=0)
STARTED = {"status": "running", "last_run_at": _p("b_now"), "updated_at": task.c.updated_at}

# --- claiming (the tick thread) ----------------------------------------------------------

# Slot claims take a list of tasks that make the same change (a burst on one cron is one
# statement) and answer with the ids they won.
ADVANCE_SLOT = (
    sa.update(task)
    .where(task.c.id.in_(_p("b_ids", expanding=True)), task.c.next_run_at == _p("b_seen"), task.c.enabled)
    .values(next_run_at=_p("b_next"), due_at=_p("b_next_due"), updated_at=task.c.updated_at)
    .returning(task.c.id)
)
CLAIM_SLOT = ADVANCE_SLOT.values(active_runs=task.c.active_runs + 1, **STARTED)
# Under `forbid` the UPDATE itself re-checks: a manual run may have started since the tick looked.
CLAIM_SLOT_FORBID = CLAIM_SLOT.where(sa.not_(active_run_clause(task)))
CLAIM_RETRY = (
    sa.update(task)
    .where(task.c.id == _p("b_id"), task.c.status == "retrying", task.c.next_retry_at == _p("b_seen"))
    .values(next_retry_at=None, active_runs=task.c.active_runs + 1, **STARTED)
)
CLAIM_MANUAL = (
    sa.update(run)
    .where(run.c.id == _p("b_id"), run.c.status == "pending")
    .values(status="running", started_at=_p("b_now"), owner=_p("b_owner"), heartbeat_at=_p("b_now"))
)
# Queued runs (backfill, catch-up) start one at a time: only while nothing of the task is active.
CLAIM_IDLE_TASK = (
    sa.update(task)
    .where(task.c.id == _p("b_id"), sa.not_(active_run_clause(task)))
    .values(active_runs=task.c.active_runs + 1, **STARTED)
)
QUEUED_TRIGGERS = ("schedule", "backfill")
_queued = run.alias("queued")
# The oldest queued run of each idle task: the one that may start next.
NEXT_QUEUED_RUNS = (
    sa.select(run.c.id, run.c.task_id, run.c.attempt, run.c.trigger, run.c.scheduled_for,
              task.c.action, task.c.timeout_seconds)
    .join(task, task.c.id == run.c.task_id)
    .where(
        run.c.status == "pending", run.c.trigger.in_(QUEUED_TRIGGERS), sa.not_(active_run_clause(task)),
        run.c.scheduled_for == sa.select(sa.func.min(_queued.c.scheduled_for)).where(
            _queued.c.task_id == run.c.task_id, _queued.c.status == "pending",
            _queued.c.trigger.in_(QUEUED_TRIGGERS),
        ).scalar_subquery(),
    )
    .order_by(run.c.scheduled_for, run.c.id)
    .limit(_p("b_limit"))
)
DUE_SLOTS = (
    sa.select(
        task.c.id, task.c.cron_expression, task.c.interval_seconds, task.c.schedule_anchor, task.c.run_at,
        task.c.timezone, task.c.calendar, task.c.jitter_seconds, task.c.catchup, task.c.next_run_at,
        task.c.due_at, task.c.misfire_grace_seconds, task.c.concurrency_policy, task.c.active_runs,
        task.c.status, task.c.action, task.c.timeout_seconds,
    )
    .where(task.c.enabled, task.c.due_at <= _p("b_now"))
    .order_by(task.c.due_at, task.c.id)
    .limit(_p("b_limit"))
)
# The next page in the same order, after the last row read (its due time and id).
DUE_SLOTS_AFTER = DUE_SLOTS.where(
    sa.tuple_(task.c.due_at, task.c.id) > sa.tuple_(_p("b_after_at", type_=UTCDateTime()), _p("b_after_id"))
)
PARENTS_OF = (
    sa.select(deps.c.child_id, task.c.id, task.c.name, task.c.status)
    .join(task, task.c.id == deps.c.parent_id)
    .where(deps.c.child_id.in_(_p("b_ids", expanding=True)))
    .order_by(deps.c.child_id, task.c.id)
)
# One round trip, each part answered from an index (ix_run_status_started, ix_task_retry_due, ix_task_due).
DUE_WORK = sa.select(
    sa.select(run.c.id).where(run.c.status == "pending").limit(1).scalar_subquery(),
    sa.select(sa.func.min(task.c.next_retry_at)).where(task.c.status == "retrying").scalar_subquery(),
    sa.select(sa.func.min(task.c.due_at)).where(task.c.enabled).scalar_subquery(),
    sa.select(deps.c.child_id).limit(1).scalar_subquery(),
)

# --- recording (the recorder thread; the heartbeat thread for lost runs) -----------------

RUN_FACTS = (
    sa.select(
        run.c.id, run.c.task_id, run.c.attempt, run.c.trigger, run.c.scheduled_for, run.c.started_at,
        task.c.name, task.c.max_retries, task.c.retry_delay_seconds, task.c.retry_max_delay_seconds,
        task.c.last_outcome,
        # Only a parent's success can make a child due: most tasks have none, and then
        # recording needs no look for waiting children.
        sa.exists().where(deps.c.parent_id == run.c.task_id).label("has_children"),
    )
    .join(task, task.c.id == run.c.task_id)
    .where(run.c.id.in_(_p("b_ids", expanding=True)))
)
WAITING_CHILDREN = (
    sa.select(task.c.id, task.c.last_run_at)
    .join(deps, deps.c.child_id == task.c.id)
    .where(deps.c.parent_id.in_(_p("b_ids", expanding=True)), task.c.enabled, task.c.cron_expression.is_(None),
           task.c.interval_seconds.is_(None), task.c.run_at.is_(None))
    .distinct()
)
RECORD_RUN = (
    sa.update(run)
    .where(run.c.id == _p("b_id"), run.c.status == "running")
    .values(
        status=_p("b_status"), started_at=_p("b_started"), finished_at=_p("b_finished"),
        duration_seconds=_p("b_duration"), exit_code=_p("b_exit_code"), http_status=_p("b_http_status"),
        output=_p("b_output"), message=_p("b_message"),
    )
)
RECORD_OWN_RUN = RECORD_RUN.where(run.c.owner == _p("b_owner"))
RECORD_STALE_RUN = RECORD_RUN.where(run.c.heartbeat_at == _p("b_heartbeat"))
MOVE_TASK_ON = (
    sa.update(task)
    .where(task.c.id == _p("b_id"))
    .values(
        status=_p("b_status"), retry_count=_p("b_retry_count"), next_retry_at=_p("b_retry_at"),
        last_outcome=_p("b_outcome"), active_runs=_one_less_active, updated_at=task.c.updated_at,
    )
)


def execute(statement: Any, params: Any = None) -> sa.CursorResult:
    """Execute a Core statement on the session's connection (its transaction)."""
    return db.session.connection().execute(statement, params)
