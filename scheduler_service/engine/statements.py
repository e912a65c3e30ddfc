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
from ..models import Pool, Run, Task, UTCDateTime, task_dependencies
from .active_runs import active_run_clause

task, run, deps, pool = Task.__table__, Run.__table__, task_dependencies, Pool.__table__
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
    .values(status="running", started_at=_p("b_now"), owner=_p("b_owner"), heartbeat_at=_p("b_now"),
            pool=_p("b_pool"))
)
# A pool's slot is taken in the claim's transaction, only while one is free: the pool's
# row lock orders concurrent claims, so no two processes can take its last slot.
ACQUIRE_POOL_SLOT = (
    sa.update(pool).where(pool.c.name == _p("b_pool"), pool.c.running < pool.c.slots)
    .values(running=pool.c.running + 1)
)
RELEASE_POOL_SLOTS = (
    sa.update(pool).where(pool.c.name == _p("b_pool"))
    .values(running=sa.case((pool.c.running > _p("b_count"), pool.c.running - _p("b_count")), else_=0))
)


# Queued runs (backfill, catch-up, buffered slots) start one at a time: only while nothing of the task
# is active; those of an `allow` task in a pool start beside its active runs, as the pool has room.
def _may_start_beside(columns: Any) -> sa.ColumnElement[bool]:
    return sa.or_(sa.not_(active_run_clause(columns)),
                  sa.and_(columns.c.concurrency_policy == "allow", columns.c.pool.is_not(None)))


CLAIM_IDLE_TASK = (
    sa.update(task)
    .where(task.c.id == _p("b_id"), _may_start_beside(task))
    .values(active_runs=task.c.active_runs + 1, **STARTED)
)
QUEUED_TRIGGERS = ("schedule", "backfill", "dependency")
# A literal, not a bound parameter: SQLite uses the partial indexes on pending runs
# (ix_run_pending_*) only for a condition it can read in the statement itself.
PENDING = sa.literal_column("'pending'")
_queued = run.alias("queued")
# The oldest queued run of each task that may start one, oldest first: those waiting for no pool
# (NEXT_QUEUED_RUNS), and those waiting for pool :b_pool (NEXT_POOL_RUNS, read for a pool with room
# only). A queued run carries its pool, so that a full pool's backlog is never read.
_NEXT_QUEUED = (
    sa.select(run.c.id, run.c.task_id, run.c.attempt, run.c.trigger, run.c.scheduled_for,
              task.c.action, task.c.timeout_seconds, run.c.pool)
    .join(task, task.c.id == run.c.task_id)
    .where(
        run.c.status == PENDING, run.c.trigger.in_(QUEUED_TRIGGERS), _may_start_beside(task),
        # A paused task's waiting slots wait with it (a pause by the API skips them; an automatic one
        # leaves them to the resume, which skips them); backfill runs were asked for by a person.
        sa.or_(task.c.enabled, run.c.trigger == "backfill"),
        run.c.scheduled_for == sa.select(sa.func.min(_queued.c.scheduled_for)).where(
            _queued.c.task_id == run.c.task_id, _queued.c.status == PENDING,
            _queued.c.trigger.in_(QUEUED_TRIGGERS),
        ).scalar_subquery(),
    )
    .order_by(run.c.scheduled_for, run.c.id)
    .limit(_p("b_limit"))
    # In slot order from the index, stopping at the limit (without statistics SQLite would sort them all).
    .with_hint(run, "INDEXED BY ix_run_pending_slot", "sqlite")
)
NEXT_QUEUED_RUNS = _NEXT_QUEUED.where(run.c.pool.is_(None))
NEXT_POOL_RUNS = _NEXT_QUEUED.where(run.c.pool == _p("b_pool"))
POOL_ROOM = sa.select(pool.c.name, pool.c.slots - pool.c.running).where(pool.c.running < pool.c.slots)
# Runs of the task waiting to start (queued): read only where the policy looks at them.
_waiting = (
    sa.select(sa.func.count()).select_from(_queued)
    .where(_queued.c.task_id == task.c.id, _queued.c.status == PENDING,
           _queued.c.trigger.in_(QUEUED_TRIGGERS))
    .scalar_subquery()
)
WAITING_POLICIES = ("buffer_one", "buffer_all", "replace")
DUE_SLOTS = (
    sa.select(
        task.c.id, task.c.cron_expression, task.c.interval_seconds, task.c.schedule_anchor, task.c.run_at,
        task.c.timezone, task.c.calendar, task.c.jitter_seconds, task.c.catchup, task.c.next_run_at,
        task.c.due_at, task.c.misfire_grace_seconds, task.c.concurrency_policy, task.c.active_runs,
        task.c.status, task.c.action, task.c.timeout_seconds, task.c.pool,
        sa.case((sa.or_(task.c.concurrency_policy.in_(WAITING_POLICIES), task.c.pool.is_not(None)), _waiting),
                else_=0).label("waiting"),
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
# One round trip, each part answered from an index (ix_run_status_started, ix_task_retry_due, ix_task_due,
# ix_task_paused_until).
DUE_WORK = sa.select(
    sa.select(run.c.id).where(run.c.status == "pending").limit(1).scalar_subquery(),
    sa.select(sa.func.min(task.c.next_retry_at)).where(task.c.status == "retrying").scalar_subquery(),
    sa.select(sa.func.min(task.c.due_at)).where(task.c.enabled).scalar_subquery(),
    sa.select(deps.c.child_id).limit(1).scalar_subquery(),
    sa.select(sa.func.min(task.c.paused_until)).scalar_subquery(),
)

# --- recording (the recorder thread; the heartbeat thread for lost runs) -----------------

RUN_FACTS = (
    sa.select(
        run.c.id, run.c.task_id, run.c.attempt, run.c.trigger, run.c.scheduled_for, run.c.started_at,
        run.c.pool, task.c.name, task.c.max_retries, task.c.retry_delay_seconds, task.c.retry_max_delay_seconds,
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
        # b_failures: 1 after a final failure, 0 after a success, None after neither (a retry, a cancel).
        consecutive_failures=sa.case(
            (_p("b_failures", type_=sa.Integer) == 1, task.c.consecutive_failures + 1),
            (_p("b_failures", type_=sa.Integer) == 0, 0),
            else_=task.c.consecutive_failures,
        ),
    )
)
# pause_after_failures: the tasks of a batch's final failures that have now failed often enough.
AUTO_PAUSE = (
    sa.update(task)
    .where(task.c.id.in_(_p("b_ids", expanding=True)), task.c.enabled, task.c.pause_after_failures > 0,
           task.c.consecutive_failures >= task.c.pause_after_failures)
    .values(enabled=False, next_run_at=None, due_at=None, paused_until=None,
            pause_note=sa.literal("paused after ") + sa.cast(task.c.consecutive_failures, sa.String)
            + sa.literal(" consecutive failures"),
            paused_by=_p("b_actor"), updated_at=task.c.updated_at)
    .returning(task.c.id, task.c.consecutive_failures)
)


def execute(statement: Any, params: Any = None) -> sa.CursorResult:
    """Execute a Core statement on the session's connection (its transaction)."""
    return db.session.connection().execute(statement, params)
