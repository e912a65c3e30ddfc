"""One tick: find due work -> gate -> claim -> hand back to run; and recording outcomes.

This is the only module that turns the engine's decisions into database writes.
Every claim is a conditional UPDATE on the row the process saw, so any number of
processes can tick against one database and each piece of work is taken once;
each task change is written in the same transaction as its run. Errors are
isolated per piece of work: one broken task is logged and retried next tick.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..database import db
from ..models import Run, SchedulerState, Task, task_dependencies
from .dependencies import ParentState
from .executors import Outcome
from .retry import RetryPolicy
from .slots import DueTask, SlotPlan, plan_slot

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 500
DUE_BATCH = 500
WORKER_LOST = "worker lost"

# Never below zero, even if a count was ever lost.
_one_less_active = sa.case((Task.active_runs > 0, Task.active_runs - 1), else_=0)


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process now owns and must execute."""

    run_id: int
    task_id: int
    attempt: int
    action: dict[str, Any]
    timeout_seconds: int | None


@dataclass(frozen=True)
class SkippedSlot:
    task_id: int
    slot: datetime
    message: str


@dataclass(frozen=True)
class FinishedRun:
    """What recording an outcome did: the facts metrics and alerts are made of."""

    run_id: int
    task_id: int
    task_name: str
    attempt: int
    trigger: str
    status: str  # success or failed
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime
    duration_seconds: float | None
    message: str
    retry_at: datetime | None  # when it will be retried; None after a success or the last attempt
    previous_outcome: str | None  # the task's finished run before this one: success, failed or None

    @property
    def gave_up(self) -> bool:
        return self.status == "failed" and self.retry_at is None

    @property
    def recovered(self) -> bool:
        return self.status == "success" and self.previous_outcome == "failed"


@dataclass
class TickReport:
    claimed: list[ClaimedRun] = field(default_factory=list)
    skips: list[SkippedSlot] = field(default_factory=list)
    recovered_runs: list[FinishedRun] = field(default_factory=list)
    waiting: int = 0
    lost_claims: int = 0
    errors: int = 0
    next_due_at: datetime | None = None


# --- the tick -------------------------------------------------------------------------


def tick(now: datetime, *, owner: str, capacity: int, lease_seconds: float, alive: Iterable[int] = ()) -> TickReport:
    """Do one round of work as of ``now``; claim at most ``capacity`` runs for ``owner``."""
    report = TickReport()
    _guarded(report, _mark_tick, now)
    report.recovered_runs = _guarded(report, recover_lost_runs, now, lease_seconds, set(alive)) or []
    for claim_step in (_claim_manual_runs, _claim_retries, _claim_due_slots):
        free = capacity - len(report.claimed)
        if free <= 0:
            break
        _guarded(report, claim_step, now, owner, free, report)
    report.next_due_at = _guarded(report, earliest_due, now)
    return report


def _guarded(report: TickReport, step, *args):
    """Run one step; a database error is logged and counted, never raised."""
    try:
        return step(*args)
    except SQLAlchemyError as exc:
        db.session.rollback()
        report.errors += 1
        log.warning("tick step %s failed: %s", step.__name__, exc.__class__.__name__, exc_info=log.isEnabledFor(logging.DEBUG))
        return None


def _mark_tick(now: datetime) -> None:
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
    """The soonest future slot or retry: when the tick should wake next."""
    next_slot = db.session.execute(
        sa.select(sa.func.min(Task.next_run_at)).where(Task.enabled, Task.next_run_at > now)
    ).scalar()
    next_retry = db.session.execute(
        sa.select(sa.func.min(Task.next_retry_at)).where(Task.status == "retrying")
    ).scalar()
    db.session.commit()
    candidates = [moment for moment in (next_slot, next_retry) if moment is not None]
    return min(candidates) if candidates else None


def _start_values(now: datetime) -> dict[str, Any]:
    """Task columns set when one of its runs starts; updated_at stays the user's edit time."""
    return {"status": "running", "last_run_at": now, "updated_at": Task.updated_at}


def _new_run(task_id: int, *, attempt: int, trigger: str, slot: datetime, now: datetime, owner: str) -> Run:
    return Run(
        task_id=task_id, attempt=attempt, trigger=trigger, status="running", scheduled_for=slot,
        started_at=now, owner=owner, heartbeat_at=now, created_at=now,
    )


def _claim_manual_runs(now: datetime, owner: str, free: int, report: TickReport) -> None:
    pending = db.session.execute(
        sa.select(Run.id, Run.task_id, Run.attempt).where(Run.status == "pending").order_by(Run.id).limit(free)
    ).all()
    db.session.commit()
    for run_id, task_id, attempt in pending:
        try:
            taken = db.session.execute(
                sa.update(Run).where(Run.id == run_id, Run.status == "pending")
                .values(status="running", started_at=now, owner=owner, heartbeat_at=now)
            ).rowcount
            if not taken:
                db.session.rollback()
                report.lost_claims += 1
                continue
            db.session.execute(sa.update(Task).where(Task.id == task_id).values(**_start_values(now)))
            action, timeout = db.session.execute(
                sa.select(Task.action, Task.timeout_seconds).where(Task.id == task_id)
            ).one()
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()
            report.errors += 1
            log.exception("claiming manual run %s failed", run_id)
            continue
        report.claimed.append(ClaimedRun(run_id, task_id, attempt, action, timeout))


def _claim_retries(now: datetime, owner: str, free: int, report: TickReport) -> None:
    due = db.session.execute(
        sa.select(Task.id, Task.next_retry_at, Task.retry_count, Task.action, Task.timeout_seconds)
        .where(Task.status == "retrying", Task.next_retry_at <= now)
        .order_by(Task.next_retry_at)
        .limit(free)
    ).all()
    db.session.commit()
    for task_id, retry_at, retry_count, action, timeout in due:
        try:
            taken = db.session.execute(
                sa.update(Task)
                .where(Task.id == task_id, Task.status == "retrying", Task.next_retry_at == retry_at)
                .values(next_retry_at=None, active_runs=Task.active_runs + 1, **_start_values(now))
            ).rowcount
            if not taken:
                db.session.rollback()
                report.lost_claims += 1
                continue
            run = _new_run(task_id, attempt=retry_count + 1, trigger="retry", slot=retry_at, now=now, owner=owner)
            db.session.add(run)
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            report.lost_claims += 1
            continue
        except SQLAlchemyError:
            db.session.rollback()
            report.errors += 1
            log.exception("claiming the retry of task %s failed", task_id)
            continue
        report.claimed.append(ClaimedRun(run.id, task_id, run.attempt, action, timeout))


def _parents_of(task_ids: list[int]) -> dict[int, list[ParentState]]:
    parents: dict[int, list[ParentState]] = defaultdict(list)
    if not task_ids:
        return parents
    rows = db.session.execute(
        sa.select(task_dependencies.c.child_id, Task.name, Task.status)
        .join(Task, Task.id == task_dependencies.c.parent_id)
        .where(task_dependencies.c.child_id.in_(task_ids))
        .order_by(task_dependencies.c.child_id, Task.id)
    ).all()
    for child_id, name, status in rows:
        parents[child_id].append(ParentState(name, status))
    return parents


def _claim_due_slots(now: datetime, owner: str, free: int, report: TickReport) -> None:
    rows = db.session.execute(
        sa.select(
            Task.id, Task.cron_expression, Task.timezone, Task.next_run_at, Task.misfire_grace_seconds,
            Task.concurrency_policy, Task.active_runs, Task.status, Task.action, Task.timeout_seconds,
        )
        .where(Task.enabled, Task.next_run_at <= now)
        .order_by(Task.next_run_at, Task.id)
        .limit(DUE_BATCH)
    ).all()
    parents = _parents_of([row.id for row in rows])
    db.session.commit()
    for row in rows:
        due = DueTask(
            row.cron_expression, row.timezone, row.next_run_at, row.misfire_grace_seconds,
            row.concurrency_policy, row.active_runs, row.status,
        )
        try:
            plan = plan_slot(due, parents.get(row.id, []), now)
        except Exception:  # a task whose rules cannot be evaluated must not stop the others
            report.errors += 1
            log.exception("planning task %s failed", row.id)
            continue
        if plan.wait:
            report.waiting += 1
            continue
        if plan.run_slot is not None and free <= 0:
            break
        try:
            run = _apply_plan(row, plan, now, owner, report)
        except IntegrityError:
            db.session.rollback()
            report.lost_claims += 1
            continue
        except SQLAlchemyError:
            db.session.rollback()
            report.errors += 1
            log.exception("claiming a slot of task %s failed", row.id)
            continue
        if run is not None:
            free -= 1
            report.claimed.append(ClaimedRun(run.id, row.id, 1, row.action, row.timeout_seconds))


def _apply_plan(row: Any, plan: SlotPlan, now: datetime, owner: str, report: TickReport) -> Run | None:
    """Write one slot plan in one transaction; None when nothing runs (or another process won)."""
    claim = sa.update(Task).where(Task.id == row.id, Task.next_run_at == row.next_run_at, Task.enabled)
    values: dict[str, Any] = {"next_run_at": plan.next_run_at, "updated_at": Task.updated_at}
    if plan.run_slot is not None:
        values.update(active_runs=Task.active_runs + 1, **_start_values(now))
        if row.concurrency_policy == "forbid":
            # Re-checked in the UPDATE itself: a manual run may have started since we looked.
            claim = claim.where(Task.active_runs == 0, Task.status != "retrying")
    if not db.session.execute(claim.values(**values)).rowcount:
        db.session.rollback()
        report.lost_claims += 1
        return None
    for skip in plan.skips:
        db.session.add(Run(
            task_id=row.id, attempt=1, trigger=plan.trigger, status="skipped", scheduled_for=skip.slot,
            started_at=now, finished_at=now, message=skip.message[:MESSAGE_LIMIT], created_at=now,
        ))
    report.skips.extend(SkippedSlot(row.id, skip.slot, skip.message) for skip in plan.skips)
    run = None
    if plan.run_slot is not None:
        run = _new_run(row.id, attempt=1, trigger=plan.trigger, slot=plan.run_slot, now=now, owner=owner)
        db.session.add(run)
    db.session.commit()
    return run


# --- leases -----------------------------------------------------------------------------


def renew_leases(run_ids: Iterable[int], owner: str, now: datetime) -> int:
    """Say that this process still runs ``run_ids``."""
    ids = list(run_ids)
    if not ids:
        return 0
    renewed = db.session.execute(
        sa.update(Run).where(Run.id.in_(ids), Run.owner == owner, Run.status == "running").values(heartbeat_at=now)
    ).rowcount
    db.session.commit()
    return renewed


def recover_lost_runs(now: datetime, lease_seconds: float, alive: set[int] = frozenset()) -> list[FinishedRun]:
    """Fail runs whose owner stopped renewing its lease, and retry them by the task's policy."""
    stale_before = now - timedelta(seconds=lease_seconds)
    lost = db.session.execute(
        sa.select(Run.id, Run.heartbeat_at)
        .where(Run.status == "running", Run.heartbeat_at < stale_before)
        .order_by(Run.id)
        .limit(DUE_BATCH)
    ).all()
    db.session.commit()
    recovered = []
    for run_id, heartbeat_at in lost:
        if run_id in alive:
            continue
        outcome = Outcome(succeeded=False, message=WORKER_LOST)
        finished = finish_run(run_id, outcome, now, expect_heartbeat=heartbeat_at)
        if finished is not None:
            recovered.append(finished)
            log.warning("run %s: %s (no heartbeat since %s)", run_id, WORKER_LOST, heartbeat_at.isoformat())
    return recovered


# --- recording outcomes ------------------------------------------------------------------


def finish_run(run_id: int, outcome: Outcome, now: datetime, *, owner: str | None = None,
               expect_heartbeat: datetime | None = None) -> FinishedRun | None:
    """Record a run's outcome and move its task on, in one transaction.

    Only a run still ``running`` (and still ours, or still as stale as seen) is
    finished: a process that lost its lease cannot overwrite the recovery.
    Returns None when nothing was recorded.
    """
    run = db.session.execute(
        sa.select(Run.task_id, Run.attempt, Run.trigger, Run.scheduled_for, Run.started_at).where(Run.id == run_id)
    ).one_or_none()
    if run is None:  # the task was deleted meanwhile, and its runs with it
        db.session.rollback()
        return None
    condition = [Run.id == run_id, Run.status == "running"]
    if owner is not None:
        condition.append(Run.owner == owner)
    if expect_heartbeat is not None:
        condition.append(Run.heartbeat_at == expect_heartbeat)
    status = "success" if outcome.succeeded else "failed"
    duration = max((now - run.started_at).total_seconds(), 0.0) if run.started_at else None
    message = outcome.message[:MESSAGE_LIMIT]
    finished = db.session.execute(
        sa.update(Run).where(*condition).values(
            status=status, finished_at=now, duration_seconds=duration, exit_code=outcome.exit_code,
            http_status=outcome.http_status, output=outcome.output, message=message,
        )
    ).rowcount
    if not finished:
        db.session.rollback()
        return None
    previous_outcome = db.session.execute(
        sa.select(Run.status)
        .where(Run.task_id == run.task_id, Run.id < run_id, Run.status.in_(("success", "failed")))
        .order_by(Run.id.desc())
        .limit(1)
    ).scalar()
    task = db.session.get(Task, run.task_id)
    retry_at = None
    if outcome.succeeded:
        _after_success(task, now)
    else:
        retry_at = _after_failure(task, run.attempt, now)
    db.session.commit()
    return FinishedRun(
        run_id, task.id, task.name, run.attempt, run.trigger, status, run.scheduled_for, run.started_at,
        now, duration, message, retry_at, previous_outcome,
    )


def _after_success(task: Task, now: datetime) -> None:
    db.session.execute(
        sa.update(Task).where(Task.id == task.id).values(
            status="success", retry_count=0, next_retry_at=None,
            active_runs=_one_less_active,
            updated_at=Task.updated_at,
        )
    )
    _trigger_dependents(task.id, now)


def _after_failure(task: Task, attempt: int, now: datetime) -> datetime | None:
    policy = RetryPolicy(task.max_retries, task.retry_delay_seconds, task.retry_max_delay_seconds)
    retry_at = policy.after_failure(attempt, now)
    values: dict[str, Any] = (
        {"status": "retrying", "retry_count": attempt, "next_retry_at": retry_at}
        if retry_at is not None
        else {"status": "failed", "retry_count": task.max_retries, "next_retry_at": None}
    )
    db.session.execute(
        sa.update(Task).where(Task.id == task.id).values(
            active_runs=_one_less_active,
            updated_at=Task.updated_at,
            **values,
        )
    )
    return retry_at




def _trigger_dependents(parent_id: int, now: datetime) -> None:
    """Mark due each dependency-only child whose parents have all succeeded since its last run."""
    children = db.session.execute(
        sa.select(Task.id, Task.last_run_at)
        .join(task_dependencies, task_dependencies.c.child_id == Task.id)
        .where(task_dependencies.c.parent_id == parent_id, Task.cron_expression.is_(None), Task.enabled)
    ).all()
    for child_id, child_last_run in children:
        parent_ids = sa.select(task_dependencies.c.parent_id).where(task_dependencies.c.child_id == child_id)
        statuses = db.session.execute(sa.select(Task.id, Task.status).where(Task.id.in_(parent_ids))).all()
        if any(status != "success" for _, status in statuses):
            continue
        last_successes = db.session.execute(
            sa.select(Run.task_id, sa.func.max(Run.finished_at))
            .where(Run.task_id.in_(parent_ids), Run.status == "success")
            .group_by(Run.task_id)
        ).all()
        if len(last_successes) < len(statuses):
            continue
        if child_last_run is None or all(finished > child_last_run for _, finished in last_successes):
            db.session.execute(
                sa.update(Task).where(Task.id == child_id, Task.next_run_at.is_(None))
                .values(next_run_at=now, updated_at=Task.updated_at)
            )
