"""One tick: find due work -> gate -> claim -> hand the claimed runs back to be started.

Runs on the tick thread (the engine's APScheduler job). Every claim is a conditional
UPDATE on the row the process saw (statements.py), so any number of processes can tick
against one database and each piece of work is taken once; each task change and the
runs it adds (counted by run_rows.NewRuns) are written in the same transaction. Claims
are written in batches (one commit for many rows: commits, not rows, are what a database
does few of per second). Errors are isolated: a batch that fails is retried row by row,
one broken task is logged and retried next tick.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..database import db
from ..models import SchedulerState, Task
from ..pausing import resume_paused
from ..run_rows import NewRuns, running_row
from ..task_schedules import load_calendars, schedule_for
from . import cancels, pool_seats
from . import statements as sql
from .active_runs import EXCLUSIVE_POLICIES
from .dependencies import ParentState
from .pending_claims import claim_manual_runs, claim_queued_runs
from .records import ClaimedRun, SkippedSlot
from .slots import DueTask, SlotPlan, plan_slot

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 500
# Due rows looked at beyond what can be claimed: slots to skip cost no worker.
DUE_LOOKAHEAD = 64
# Rows per further read when whole reads only wait (on a parent, or on a previous run).
DUE_PAGE = 500


@dataclass
class TickReport:
    claimed: list[ClaimedRun] = field(default_factory=list)
    skips: list[SkippedSlot] = field(default_factory=list)
    queued: int = 0  # pending runs added for missed slots (catchup all)
    waiting: int = 0
    lost_claims: int = 0
    errors: int = 0
    saturated: bool = False  # due work was left because capacity ran out
    next_due_at: datetime | None = None


# --- the tick -------------------------------------------------------------------------


def tick(now: datetime, *, owner: str, capacity: int,
         on_committed: Callable[[TickReport], None] | None = None) -> TickReport:
    """Do one round of work as of ``now``; claim at most ``capacity`` runs for ``owner``.

    One read finds which kinds of work are due; an idle tick (the common case) ends
    there. ``on_committed`` gets the report once its claimed runs and skipped slots are
    committed, before the tick looks for its next due time: starting the runs does not
    wait for that query.
    The tick time shown by /api/stats is written apart (``mark_tick``): the engine
    does it at most once a second, after the claimed runs are on their way.
    """
    report = TickReport()
    due = _guarded(report, due_work, now)
    if due is not None and not due.anything_due(now):
        report.next_due_at = due.next_due_at
    else:
        gated = due is None or due.any_dependencies
        steps = [  # (step, its extra arguments, whether it has anything to do)
            (_resume_paused, (), lambda: due is None or due.due(due.next_resume_at, now)),
            (claim_manual_runs, (), lambda: due is None or due.manual_pending),
            (_claim_retries, (), lambda: due is None or due.due(due.next_retry_at, now)),
            (_claim_due_slots, (gated,), lambda: due is None or due.due(due.next_slot_at, now)),
            # Last: a slot due now may add queued runs (catchup all) that can start at once.
            (claim_queued_runs, (), lambda: due is None or due.manual_pending or report.queued > 0),
        ]
        for claim_step, extra, needed in steps:
            if not needed():
                continue
            free = capacity - len(report.claimed)
            if free <= 0:
                report.saturated = True
                break
            _guarded(report, claim_step, now, owner, free, report, *extra)
        if on_committed is not None and (report.claimed or report.skips):
            on_committed(report)
        if due is None or due.manual_pending:
            # Pending runs may wait on what another process runs (their task, their pool): look again soon.
            report.waiting += 1
        if not report.saturated:
            # When saturated, the next tick comes as soon as runs are recorded: no need to look ahead.
            report.next_due_at = _guarded(report, earliest_due, now)
    return report


@dataclass(frozen=True)
class DueWork:
    """What one read of the tables says is waiting: pending runs (manual or queued), and the
    earliest retry and slot."""

    manual_pending: bool  # any pending run: manual, or queued
    next_retry_at: datetime | None
    next_slot_at: datetime | None
    any_dependencies: bool = True  # False: no task has parents, so no gate needs reading
    next_resume_at: datetime | None = None  # the first paused task's `paused_until`

    @staticmethod
    def due(moment: datetime | None, now: datetime) -> bool:
        return moment is not None and moment <= now

    def anything_due(self, now: datetime) -> bool:
        return (self.manual_pending or self.due(self.next_retry_at, now) or self.due(self.next_slot_at, now)
                or self.due(self.next_resume_at, now))

    @property
    def next_due_at(self) -> datetime | None:
        moments = [moment for moment in (self.next_retry_at, self.next_slot_at, self.next_resume_at)
                   if moment is not None]
        return min(moments) if moments else None


def due_work(now: datetime) -> DueWork:
    """What is due, in one round trip."""
    pending, retry_at, slot_at, some_child, resume_at = sql.execute(sql.DUE_WORK).one()
    db.session.commit()
    return DueWork(pending is not None, retry_at, slot_at, some_child is not None, resume_at)


def _guarded(report: TickReport, step, *args):
    """Run one step; a database error is logged and counted, never raised."""
    try:
        return step(*args)
    except SQLAlchemyError as exc:
        db.session.rollback()
        report.errors += 1
        log.warning("tick step %s failed: %s", step.__name__, exc.__class__.__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return None


def mark_tick(now: datetime) -> None:
    """Record ``now`` as the last tick time, shown by /api/stats."""
    updated = db.session.execute(
        sa.update(SchedulerState).where(SchedulerState.id == 1).values(last_tick_at=now)
    ).rowcount
    if not updated:
        db.session.add(SchedulerState(id=1, last_tick_at=now))
    try:
        db.session.commit()
    except IntegrityError:  # another process inserted the row first
        db.session.rollback()


def earliest_due(now: datetime) -> datetime | None:
    """The soonest future slot, retry or resume: when the tick should wake next (one round trip)."""
    next_slot = sa.select(sa.func.min(Task.due_at)).where(Task.enabled, Task.due_at > now)
    next_retry = sa.select(sa.func.min(Task.next_retry_at)).where(Task.status == "retrying")
    next_resume = sa.select(sa.func.min(Task.paused_until))
    slot, retry, resume = db.session.execute(sa.select(
        next_slot.scalar_subquery(), next_retry.scalar_subquery(), next_resume.scalar_subquery())).one()
    db.session.commit()
    candidates = [moment for moment in (slot, retry, resume) if moment is not None]
    return min(candidates) if candidates else None


def _resume_paused(now: datetime, owner: str, free: int, report: TickReport) -> None:
    resume_paused(now)


def _claim_retries(now: datetime, owner: str, free: int, report: TickReport) -> None:
    due = db.session.execute(
        sa.select(Task.id, Task.next_retry_at, Task.retry_count, Task.action, Task.timeout_seconds, Task.pool)
        .where(Task.status == "retrying", Task.next_retry_at <= now)
        .order_by(Task.next_retry_at)
        .limit(free)
    ).all()
    if not due:
        db.session.commit()
        return
    _in_batch_or_one_by_one(due, lambda rows: _write_retry_claims(rows, now, owner, report), report)


def _write_retry_claims(rows: Sequence[Any], now: datetime, owner: str, report: TickReport) -> None:
    taken, run_rows = [], []
    for row in rows:
        if row.pool is not None and not pool_seats.take(row.pool):
            continue  # the retry waits (the task stays `retrying`) until its pool has room
        claimed = sql.execute(sql.CLAIM_RETRY, {"b_id": row.id, "b_seen": row.next_retry_at, "b_now": now}).rowcount
        if not claimed:
            if row.pool is not None:
                pool_seats.give_back({row.pool: 1})
            report.lost_claims += 1
            continue
        taken.append(row)
        run_rows.append(running_row(row.id, attempt=row.retry_count + 1, trigger="retry", slot=row.next_retry_at,
                                    now=now, owner=owner, pool=row.pool))
    with NewRuns(db.session.connection()) as runs:
        run_ids = runs.add(run_rows)
    db.session.commit()
    for row, run_id in zip(taken, run_ids):
        report.claimed.append(ClaimedRun(
            run_id, row.id, row.retry_count + 1, row.action, row.timeout_seconds, "retry", row.next_retry_at,
        ))


def _in_batch_or_one_by_one(rows: Sequence[Any], write, report: TickReport) -> None:
    """Write all rows in one transaction; if that hits a conflict, write them one by one,
    so that one row another process took does not cost the others."""
    try:
        write(rows)
        return
    except IntegrityError:
        db.session.rollback()
    for row in rows:
        try:
            write([row])
        except IntegrityError:
            db.session.rollback()
            report.lost_claims += 1


def _parents_of(task_ids: list[int]) -> dict[int, list[ParentState]]:
    parents: dict[int, list[ParentState]] = defaultdict(list)
    if not task_ids:
        return parents
    for child_id, parent_id, name, status in sql.execute(sql.PARENTS_OF, {"b_ids": task_ids}):
        parents[child_id].append(ParentState(name, status, parent_id))
    return parents


def _claim_due_slots(now: datetime, owner: str, free: int, report: TickReport, gated: bool = True) -> None:
    plans: list[tuple[Any, SlotPlan]] = []
    statement, params = sql.DUE_SLOTS, {"b_now": now, "b_limit": free + DUE_LOOKAHEAD}
    while True:
        rows = sql.execute(statement, params).all()
        free = _plan_due_slots(rows, now, free, report, plans, gated)
        if free <= 0 or len(rows) < params["b_limit"]:
            break
        # Every row read waits or was planned and there is room left: read on, or tasks
        # waiting at the head of the due order would hold back every task due after them.
        last = rows[-1]
        statement = sql.DUE_SLOTS_AFTER
        params = {"b_now": now, "b_limit": DUE_PAGE, "b_after_at": last.due_at, "b_after_id": last.id}
    if plans:
        _in_batch_or_one_by_one(plans, lambda batch: _write_plans(batch, now, owner, report), report)


def _plan_due_slots(rows: Sequence[Any], now: datetime, free: int, report: TickReport,
                    plans: list[tuple[Any, SlotPlan]], gated: bool) -> int:
    """Add a plan for each due row to ``plans`` while there is room; the room left."""
    scheduled = [row.id for row in rows if _has_schedule(row)]
    parents = _parents_of(scheduled if gated else [])
    calendars = load_calendars(row.calendar for row in rows)
    db.session.commit()
    for row in rows:
        if free <= 0:
            # Planning costs cron arithmetic; what cannot be claimed now waits for the next tick.
            report.saturated = True
            break
        try:
            due = DueTask(
                row.id, schedule_for(row, calendars), row.next_run_at, row.due_at, row.misfire_grace_seconds,
                row.concurrency_policy, row.active_runs, row.status, row.catchup, row.jitter_seconds,
                row.waiting, row.pool,
            )
            plan = plan_slot(due, parents.get(row.id, []), now)
        except Exception:  # a task whose rules cannot be evaluated must not stop the others
            report.errors += 1
            log.exception("planning task %s failed", row.id)
            continue
        if plan.wait:
            report.waiting += 1
            continue
        if plan.run_slot is not None:
            free -= 1
        plans.append((row, plan))
    return free


def _has_schedule(row: Any) -> bool:
    return row.cron_expression is not None or row.interval_seconds is not None or row.run_at is not None


def _write_plans(plans: Sequence[tuple[Any, SlotPlan]], now: datetime, owner: str, report: TickReport) -> None:
    """Write slot plans in one transaction; a plan another process got to first is dropped."""
    plans = _seat_pool_runs(plans)
    won = _claim_slots(plans, now)
    report.lost_claims += len(plans) - len(won)
    pool_seats.give_back(pool_seats.held_by(
        row.pool for row, plan in plans if plan.run_slot is not None and row.id not in won))
    skip_rows, queue_rows, started = [], [], []  # started: (row, plan) of each run
    skipped: list[SkippedSlot] = []
    for row, plan in plans:
        if row.id not in won:
            continue
        for skip in plan.skips:
            skip_rows.append({
                "task_id": row.id, "attempt": 1, "trigger": plan.trigger, "status": "skipped",
                "scheduled_for": skip.slot, "started_at": now, "finished_at": now,
                "message": skip.message[:MESSAGE_LIMIT], "created_at": now,
            })
            parent = skip.parent
            skipped.append(SkippedSlot(row.id, skip.slot, skip.message, parent and parent.id,
                                       parent and parent.status))
        if plan.replace:
            cancels.replace_active(row.id, now)
        queue_rows.extend({
            "task_id": row.id, "attempt": 1, "trigger": plan.trigger, "status": "pending", "scheduled_for": slot,
            "created_at": now, "pool": row.pool,
        } for slot in plan.queue)
        if plan.run_slot is not None:
            started.append((row, plan))
    # The skipped slots' rows, the queued runs and the runs started, counted in one statement.
    with NewRuns(db.session.connection()) as runs:
        runs.add_unreturned(skip_rows)
        runs.add_unreturned(queue_rows)
        run_ids = _add_slot_starts(runs, started, now, owner)
    db.session.commit()
    report.skips.extend(skipped)
    report.queued += len(queue_rows)
    for row, plan in started:
        run_id = run_ids[row.id]
        # Start lag counts from the jitter drawn for the slot, when the slot run is the one that came due.
        due_at = row.due_at if plan.run_slot == row.next_run_at else None
        report.claimed.append(ClaimedRun(
            run_id, row.id, 1, row.action, row.timeout_seconds, plan.trigger, plan.run_slot, due_at,
        ))


def _seat_pool_runs(plans: Sequence[tuple[Any, SlotPlan]]) -> list[tuple[Any, SlotPlan]]:
    """Take a pool slot for each plan that starts a run of a pool's task, before any task row
    (the lock order of every claim); a run its pool has no room for is queued instead."""
    seated, full = {}, set()
    # Pools in name order (the lock order); within a pool, oldest slot first.
    for row, plan in sorted(plans, key=lambda item: (item[0].pool or "", item[1].run_slot or item[0].next_run_at,
                                                     item[0].id)):
        if plan.run_slot is not None and row.pool is not None:
            seated[row.id] = row.pool not in full and pool_seats.take(row.pool)
            if not seated[row.id]:
                full.add(row.pool)
    return [(row, plan) if seated.get(row.id, True)
            else (row, replace(plan, run_slot=None, queue=(*plan.queue, plan.run_slot))) for row, plan in plans]


def _add_slot_starts(runs: NewRuns, started: Sequence[tuple[Any, SlotPlan]], now: datetime,
                     owner: str) -> dict[int, int]:
    """A running run for each (task row, plan), one statement per slot; the run id of each task id."""
    groups: dict[tuple[str, datetime], list[int]] = defaultdict(list)
    for row, plan in started:
        groups[(plan.trigger, plan.run_slot)].append(row.id)
    run_ids: dict[int, int] = {}
    for (trigger, slot), task_ids in groups.items():
        run_ids.update(runs.add_slot_starts(task_ids, trigger=trigger, slot=slot, now=now, owner=owner))
    return run_ids


def _claim_slots(plans: Sequence[tuple[Any, SlotPlan]], now: datetime) -> set[int]:
    """Move each planned task on from the slot it was seen at; the ids of the tasks this process won.

    Plans that make the same change (claim kind, seen slot, next slot) share one UPDATE.
    Its conditions are the claim: a task another process moved on first no longer matches.
    """
    groups: dict[tuple[Any, datetime, datetime | None, datetime | None], list[int]] = defaultdict(list)
    for row, plan in plans:
        if plan.run_slot is None:
            claim = sql.ADVANCE_SLOT
        else:
            claim = sql.CLAIM_SLOT_FORBID if row.concurrency_policy in EXCLUSIVE_POLICIES else sql.CLAIM_SLOT
        groups[(claim, row.next_run_at, plan.next_run_at, plan.next_due_at)].append(row.id)
    won: set[int] = set()
    for (claim, seen, next_at, next_due), task_ids in groups.items():
        params = {"b_ids": task_ids, "b_seen": seen, "b_next": next_at, "b_next_due": next_due, "b_now": now}
        won.update(sql.execute(claim, params).scalars())
    return won
