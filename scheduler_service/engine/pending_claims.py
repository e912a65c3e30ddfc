"""The tick's claims of runs that already exist as ``pending`` rows: manual runs, and queued
runs (catch-up, buffered slots, runs waiting for their pool, backfill).

A step of tick.py, on the timer thread. Each claim is a conditional UPDATE of the run
(``status = 'pending'``); a queued run's also of its idle task, and a pooled run's of its
pool (pool_seats.take), all in one transaction, so any number of processes can claim.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .. import run_counts
from ..database import db
from ..models import Run, Task
from . import pool_seats
from . import statements as sql
from .records import ClaimedRun

if TYPE_CHECKING:
    from .tick import TickReport


def claim_manual_runs(now: datetime, owner: str, free: int, report: TickReport) -> None:
    """Start pending manual runs, oldest first; one of a pool's task only with a free slot (else it waits)."""
    pending = db.session.execute(
        sa.select(Run.id, Run.task_id, Run.attempt, Run.scheduled_for, Task.pool)
        .join(Task, Task.id == Run.task_id)
        .where(Run.status == "pending", Run.trigger == "manual").order_by(Run.id).limit(free)
    ).all()
    if not pending:
        db.session.commit()
        return
    taken = []
    # Pools taken in name order, the order recording gives them back in: no two transactions
    # can each hold a pool the other waits for.
    for run_id, task_id, attempt, slot, pool in sorted(pending, key=lambda row: (row.pool or "", row.id)):
        if pool is not None and not pool_seats.take(pool):
            continue  # its pool is full: it waits, pending
        claimed = sql.execute(sql.CLAIM_MANUAL, {"b_id": run_id, "b_now": now, "b_owner": owner,
                                                 "b_pool": pool}).rowcount
        if claimed:
            taken.append((run_id, task_id, attempt, slot))
        else:
            if pool is not None:
                pool_seats.give_back({pool: 1})
            report.lost_claims += 1
    task_ids = {task_id for _, task_id, _, _ in taken}
    actions = {}
    if task_ids:
        sql.execute(sa.update(sql.task).where(sql.task.c.id.in_(task_ids)).values(**sql.STARTED), {"b_now": now})
        run_counts.apply(db.session.connection(), (
            change for _, task_id, _, _ in taken for change in run_counts.moved(task_id, "pending", "running")
        ))
        actions = {row.id: row for row in db.session.execute(
            sa.select(Task.id, Task.action, Task.timeout_seconds).where(Task.id.in_(task_ids)))}
    db.session.commit()
    for run_id, task_id, attempt, slot in taken:
        task = actions[task_id]
        report.claimed.append(ClaimedRun(run_id, task_id, attempt, task.action, task.timeout_seconds, "manual", slot))


def claim_queued_runs(now: datetime, owner: str, free: int, report: TickReport) -> None:
    """Start the oldest queued run (backfill, catch-up, a buffered slot, a run waiting for its
    pool) of each task that may start one, oldest slot first.

    Each claim is its task's conditional UPDATE (nothing of the task active, unless an `allow`
    task in a pool), the run's, and its pool's (pool_seats.take): that is what makes a task's
    queued runs start one at a time and keeps a pool's limit, whichever process claims them. A
    claim that fails rolls back to its own savepoint; the claims of one tick commit together.
    """
    # Pools first, in name order, then the rest: the lock order of every claim (pool_seats).
    # A pool's waiting runs are read only as far as it has room; a full pool's not at all.
    room = dict(sql.execute(sql.POOL_ROOM).all())
    rows = []
    for name in sorted(room):
        if len(rows) < free:
            rows += sql.execute(sql.NEXT_POOL_RUNS, {"b_pool": name, "b_limit": min(room[name], free - len(rows))})
    if len(rows) < free:
        rows += sql.execute(sql.NEXT_QUEUED_RUNS, {"b_limit": free - len(rows)})
    taken = []
    for row in rows:
        if row.pool is not None and room[row.pool] <= 0:
            continue
        savepoint = db.session.begin_nested()
        if row.pool is not None and not pool_seats.take(row.pool):
            savepoint.rollback()
            room[row.pool] = 0  # filled up since it was read (another process): the rest wait
            continue
        if not (sql.execute(sql.CLAIM_IDLE_TASK, {"b_id": row.task_id, "b_now": now}).rowcount
                and sql.execute(sql.CLAIM_MANUAL, {"b_id": row.id, "b_now": now, "b_owner": owner,
                                                   "b_pool": row.pool}).rowcount):
            savepoint.rollback()  # the pool's slot too
            report.lost_claims += 1
            continue
        savepoint.commit()
        if row.pool is not None:
            room[row.pool] -= 1
        taken.append(row)
    run_counts.apply(db.session.connection(),
                     (change for row in taken for change in run_counts.moved(row.task_id, "pending", "running")))
    db.session.commit()
    for row in taken:
        # A backfill run was asked for long after its slot: its start lag counts from now, when it could start.
        due_at = now if row.trigger == "backfill" else None
        report.claimed.append(ClaimedRun(
            row.id, row.task_id, row.attempt, row.action, row.timeout_seconds, row.trigger, row.scheduled_for, due_at,
        ))
