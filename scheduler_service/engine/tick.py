"""One tick: find due work -> gate -> claim -> hand back to run; and recording outcomes.

This is the only module that turns the engine's decisions into database writes.
Every claim is a conditional UPDATE on the row the process saw, so any number of
processes can tick against one database and each piece of work is taken once;
each task change (and its run counts, see run_counts.py) is written in the same
transaction as its run. Claims and outcomes are written in batches (one commit
for many rows: commits, not rows, are what a database does few of per second). Errors are isolated: a batch that
fails is retried row by row, one broken task is logged and retried next tick.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .. import run_counts
from ..database import db
from ..models import Run, SchedulerState, Task, UTCDateTime, task_dependencies
from .dependencies import ParentState
from .executors import Outcome
from .retry import RetryPolicy
from .slots import DueTask, SlotPlan, plan_slot

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 500
# Due rows looked at beyond what can be claimed: slots to skip cost no worker.
DUE_LOOKAHEAD = 64
# Rows per further read when whole reads only wait (on a parent, or on a previous run).
DUE_PAGE = 500
RECOVERY_BATCH = 500
WORKER_LOST = "worker lost"

# --- statements ------------------------------------------------------------------------
# The hot path's writes, built once on the tables (not the ORM classes) and executed on
# the session's connection: SQLAlchemy then compiles each once and caches it, where
# building a statement per row cost more than the database did.
_task, _run = Task.__table__, Run.__table__
_p = sa.bindparam

# Never below zero, even if a count was ever lost.
_one_less_active = sa.case((_task.c.active_runs > 0, _task.c.active_runs - 1), else_=0)
_started = {"status": "running", "last_run_at": _p("b_now"), "updated_at": _task.c.updated_at}

# Slot claims take a list of tasks that make the same change (a burst on one cron is one
# statement) and answer with the ids they won.
_ADVANCE_SLOT = (
    sa.update(_task)
    .where(_task.c.id.in_(_p("b_ids", expanding=True)), _task.c.next_run_at == _p("b_seen"), _task.c.enabled)
    .values(next_run_at=_p("b_next"), updated_at=_task.c.updated_at)
    .returning(_task.c.id)
)
_CLAIM_SLOT = _ADVANCE_SLOT.values(active_runs=_task.c.active_runs + 1, **_started)
# Under `forbid` the UPDATE itself re-checks: a manual run may have started since the tick looked.
_CLAIM_SLOT_FORBID = _CLAIM_SLOT.where(_task.c.active_runs == 0, _task.c.status != "retrying")
_CLAIM_RETRY = (
    sa.update(_task)
    .where(_task.c.id == _p("b_id"), _task.c.status == "retrying", _task.c.next_retry_at == _p("b_seen"))
    .values(next_retry_at=None, active_runs=_task.c.active_runs + 1, **_started)
)
_CLAIM_MANUAL = (
    sa.update(_run)
    .where(_run.c.id == _p("b_id"), _run.c.status == "pending")
    .values(status="running", started_at=_p("b_now"), owner=_p("b_owner"), heartbeat_at=_p("b_now"))
)
_DUE_SLOTS = (
    sa.select(
        _task.c.id, _task.c.cron_expression, _task.c.timezone, _task.c.next_run_at, _task.c.misfire_grace_seconds,
        _task.c.concurrency_policy, _task.c.active_runs, _task.c.status, _task.c.action, _task.c.timeout_seconds,
    )
    .where(_task.c.enabled, _task.c.next_run_at <= _p("b_now"))
    .order_by(_task.c.next_run_at, _task.c.id)
    .limit(_p("b_limit"))
)
# The next page in the same order, after the last row read (its due time and id).
_DUE_SLOTS_AFTER = _DUE_SLOTS.where(
    sa.tuple_(_task.c.next_run_at, _task.c.id) > sa.tuple_(_p("b_after_at", type_=UTCDateTime()), _p("b_after_id"))
)
_deps = task_dependencies
_PARENTS_OF = (
    sa.select(_deps.c.child_id, _task.c.name, _task.c.status)
    .join(_task, _task.c.id == _deps.c.parent_id)
    .where(_deps.c.child_id.in_(_p("b_ids", expanding=True)))
    .order_by(_deps.c.child_id, _task.c.id)
)
_RUN_FACTS = (
    sa.select(
        _run.c.id, _run.c.task_id, _run.c.attempt, _run.c.trigger, _run.c.scheduled_for, _run.c.started_at,
        _task.c.name, _task.c.max_retries, _task.c.retry_delay_seconds, _task.c.retry_max_delay_seconds,
        _task.c.last_outcome,
        # Only a parent's success can make a child due: most tasks have none, and then
        # recording needs no look for waiting children.
        sa.exists().where(_deps.c.parent_id == _run.c.task_id).label("has_children"),
    )
    .join(_task, _task.c.id == _run.c.task_id)
    .where(_run.c.id.in_(_p("b_ids", expanding=True)))
)
_WAITING_CHILDREN = (
    sa.select(_task.c.id, _task.c.last_run_at)
    .join(_deps, _deps.c.child_id == _task.c.id)
    .where(_deps.c.parent_id.in_(_p("b_ids", expanding=True)), _task.c.cron_expression.is_(None), _task.c.enabled)
    .distinct()
)
_INSERT_RUNS = sa.insert(_run).returning(_run.c.id, sort_by_parameter_order=True)
# The runs of tasks that start the same slot in one statement, their values bound once: a burst
# on one cron no longer pays SQLAlchemy's per-row parameter processing.
_INSERT_SLOT_RUNS = (
    sa.insert(_run)
    .from_select(
        ["task_id", "attempt", "trigger", "status", "scheduled_for", "started_at", "owner", "heartbeat_at",
         "created_at"],
        sa.select(
            _task.c.id, sa.literal(1), _p("b_trigger", type_=sa.String), sa.literal("running"),
            _p("b_slot", type_=UTCDateTime), _p("b_now", type_=UTCDateTime), _p("b_owner", type_=sa.String),
            _p("b_now", type_=UTCDateTime), _p("b_now", type_=UTCDateTime),
        ).where(_task.c.id.in_(_p("b_ids", expanding=True))),
    )
    .returning(_run.c.id, _run.c.task_id)
)
_RECORD_RUN = (
    sa.update(_run)
    .where(_run.c.id == _p("b_id"), _run.c.status == "running")
    .values(
        status=_p("b_status"), started_at=_p("b_started"), finished_at=_p("b_finished"),
        duration_seconds=_p("b_duration"), exit_code=_p("b_exit_code"), http_status=_p("b_http_status"),
        output=_p("b_output"), message=_p("b_message"),
    )
)
_RECORD_OWN_RUN = _RECORD_RUN.where(_run.c.owner == _p("b_owner"))
_RECORD_STALE_RUN = _RECORD_RUN.where(_run.c.heartbeat_at == _p("b_heartbeat"))
_MOVE_TASK_ON = (
    sa.update(_task)
    .where(_task.c.id == _p("b_id"))
    .values(
        status=_p("b_status"), retry_count=_p("b_retry_count"), next_retry_at=_p("b_retry_at"),
        last_outcome=_p("b_outcome"), active_runs=_one_less_active, updated_at=_task.c.updated_at,
    )
)


def _execute(statement: Any, params: Any = None) -> sa.CursorResult:
    """Execute a Core statement on the session's connection (its transaction)."""
    return db.session.connection().execute(statement, params)


def _count(changes: Iterable[run_counts.RunCount]) -> None:
    """Apply run-count changes in the session's transaction; call it last, after the task rows."""
    run_counts.apply(db.session.connection(), changes)


def _inserted_counts(rows: Iterable[dict]) -> Iterator[run_counts.RunCount]:
    return (run_counts.counted(row["task_id"], row["status"], row.get("finished_at"), row.get("duration_seconds"))
            for row in rows)


def _count_finished(finished: Iterable[FinishedRun]) -> None:
    _count(change for run in finished
           for change in run_counts.moved(run.task_id, "running", run.status, run.duration_seconds))


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process now owns and must execute."""

    run_id: int
    task_id: int
    attempt: int
    action: dict[str, Any]
    timeout_seconds: int | None
    trigger: str  # schedule, retry or manual
    scheduled_for: datetime


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


@dataclass(frozen=True)
class RunResult:
    """An action's outcome, waiting to be recorded."""

    run_id: int
    outcome: Outcome
    started_at: datetime | None  # when the action really began; None keeps the claim time
    finished_at: datetime


@dataclass
class TickReport:
    claimed: list[ClaimedRun] = field(default_factory=list)
    skips: list[SkippedSlot] = field(default_factory=list)
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
            (_claim_manual_runs, (), due is None or due.manual_pending),
            (_claim_retries, (), due is None or due.due(due.next_retry_at, now)),
            (_claim_due_slots, (gated,), due is None or due.due(due.next_slot_at, now)),
        ]
        for claim_step, extra, needed in steps:
            if not needed:
                continue
            free = capacity - len(report.claimed)
            if free <= 0:
                report.saturated = True
                break
            _guarded(report, claim_step, now, owner, free, report, *extra)
        if on_committed is not None and (report.claimed or report.skips):
            on_committed(report)
        if not report.saturated:
            # When saturated, the next tick comes as soon as runs are recorded: no need to look ahead.
            report.next_due_at = _guarded(report, earliest_due, now)
    return report


@dataclass(frozen=True)
class DueWork:
    """What one read of the tables says is waiting: manual runs, and the earliest retry and slot."""

    manual_pending: bool
    next_retry_at: datetime | None
    next_slot_at: datetime | None
    any_dependencies: bool = True  # False: no task has parents, so no gate needs reading

    @staticmethod
    def due(moment: datetime | None, now: datetime) -> bool:
        return moment is not None and moment <= now

    def anything_due(self, now: datetime) -> bool:
        return self.manual_pending or self.due(self.next_retry_at, now) or self.due(self.next_slot_at, now)

    @property
    def next_due_at(self) -> datetime | None:
        moments = [moment for moment in (self.next_retry_at, self.next_slot_at) if moment is not None]
        return min(moments) if moments else None


_DUE_WORK = sa.select(
    sa.select(_run.c.id).where(_run.c.status == "pending").limit(1).scalar_subquery(),
    sa.select(sa.func.min(_task.c.next_retry_at)).where(_task.c.status == "retrying").scalar_subquery(),
    sa.select(sa.func.min(_task.c.next_run_at)).where(_task.c.enabled).scalar_subquery(),
    sa.select(task_dependencies.c.child_id).limit(1).scalar_subquery(),
)


def due_work(now: datetime) -> DueWork:
    """One round trip, each part answered from an index (ix_run_status_started, ix_task_retry_due, ix_task_due)."""
    pending, retry_at, slot_at, some_child = _execute(_DUE_WORK).one()
    db.session.commit()
    return DueWork(pending is not None, retry_at, slot_at, some_child is not None)


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
    """The soonest future slot or retry: when the tick should wake next (one round trip)."""
    next_slot = sa.select(sa.func.min(Task.next_run_at)).where(Task.enabled, Task.next_run_at > now)
    next_retry = sa.select(sa.func.min(Task.next_retry_at)).where(Task.status == "retrying")
    slot, retry = db.session.execute(sa.select(next_slot.scalar_subquery(), next_retry.scalar_subquery())).one()
    db.session.commit()
    candidates = [moment for moment in (slot, retry) if moment is not None]
    return min(candidates) if candidates else None


def _run_row(task_id: int, *, attempt: int, trigger: str, slot: datetime, now: datetime, owner: str) -> dict:
    return {
        "task_id": task_id, "attempt": attempt, "trigger": trigger, "status": "running", "scheduled_for": slot,
        "started_at": now, "owner": owner, "heartbeat_at": now, "created_at": now,
    }


def _insert_runs(rows: list[dict]) -> list[int]:
    """Insert running runs in one statement; their ids, in the order given."""
    if not rows:
        return []
    return list(_execute(_INSERT_RUNS, rows).scalars())


def _claim_manual_runs(now: datetime, owner: str, free: int, report: TickReport) -> None:
    pending = db.session.execute(
        sa.select(Run.id, Run.task_id, Run.attempt, Run.scheduled_for)
        .where(Run.status == "pending").order_by(Run.id).limit(free)
    ).all()
    if not pending:
        db.session.commit()
        return
    taken = []
    for run_id, task_id, attempt, slot in pending:
        claimed = _execute(_CLAIM_MANUAL, {"b_id": run_id, "b_now": now, "b_owner": owner}).rowcount
        if claimed:
            taken.append((run_id, task_id, attempt, slot))
        else:
            report.lost_claims += 1
    task_ids = {task_id for _, task_id, _, _ in taken}
    actions = {}
    if task_ids:
        _execute(sa.update(_task).where(_task.c.id.in_(task_ids)).values(**_started), {"b_now": now})
        _count(change for _, task_id, _, _ in taken for change in run_counts.moved(task_id, "pending", "running"))
        actions = {row.id: row for row in db.session.execute(
            sa.select(Task.id, Task.action, Task.timeout_seconds).where(Task.id.in_(task_ids)))}
    db.session.commit()
    for run_id, task_id, attempt, slot in taken:
        task = actions[task_id]
        report.claimed.append(ClaimedRun(run_id, task_id, attempt, task.action, task.timeout_seconds, "manual", slot))


def _claim_retries(now: datetime, owner: str, free: int, report: TickReport) -> None:
    due = db.session.execute(
        sa.select(Task.id, Task.next_retry_at, Task.retry_count, Task.action, Task.timeout_seconds)
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
        claimed = _execute(_CLAIM_RETRY, {"b_id": row.id, "b_seen": row.next_retry_at, "b_now": now}).rowcount
        if not claimed:
            report.lost_claims += 1
            continue
        taken.append(row)
        run_rows.append(_run_row(row.id, attempt=row.retry_count + 1, trigger="retry", slot=row.next_retry_at,
                                 now=now, owner=owner))
    run_ids = _insert_runs(run_rows)
    _count(_inserted_counts(run_rows))
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
    for child_id, name, status in _execute(_PARENTS_OF, {"b_ids": task_ids}):
        parents[child_id].append(ParentState(name, status))
    return parents


def _claim_due_slots(now: datetime, owner: str, free: int, report: TickReport, gated: bool = True) -> None:
    plans: list[tuple[Any, SlotPlan]] = []
    statement, params = _DUE_SLOTS, {"b_now": now, "b_limit": free + DUE_LOOKAHEAD}
    while True:
        rows = _execute(statement, params).all()
        free = _plan_due_slots(rows, now, free, report, plans, gated)
        if free <= 0 or len(rows) < params["b_limit"]:
            break
        # Every row read waits or was planned and there is room left: read on, or tasks
        # waiting at the head of the due order would hold back every task due after them.
        last = rows[-1]
        statement = _DUE_SLOTS_AFTER
        params = {"b_now": now, "b_limit": DUE_PAGE, "b_after_at": last.next_run_at, "b_after_id": last.id}
    if plans:
        _in_batch_or_one_by_one(plans, lambda batch: _write_plans(batch, now, owner, report), report)


def _plan_due_slots(rows: Sequence[Any], now: datetime, free: int, report: TickReport,
                    plans: list[tuple[Any, SlotPlan]], gated: bool) -> int:
    """Add a plan for each due row to ``plans`` while there is room; the room left."""
    parents = _parents_of([row.id for row in rows if row.cron_expression is not None] if gated else [])
    db.session.commit()
    for row in rows:
        if free <= 0:
            # Planning costs cron arithmetic; what cannot be claimed now waits for the next tick.
            report.saturated = True
            break
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
        if plan.run_slot is not None:
            free -= 1
        plans.append((row, plan))
    return free


def _write_plans(plans: Sequence[tuple[Any, SlotPlan]], now: datetime, owner: str, report: TickReport) -> None:
    """Write slot plans in one transaction; a plan another process got to first is dropped."""
    won = _claim_slots(plans, now)
    report.lost_claims += len(plans) - len(won)
    skip_rows, started = [], []  # started: (row, plan) of each run
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
            skipped.append(SkippedSlot(row.id, skip.slot, skip.message))
        if plan.run_slot is not None:
            started.append((row, plan))
    if skip_rows:
        _execute(sa.insert(_run), skip_rows)
    run_ids = _insert_slot_runs(started, now, owner)
    # The skipped slots' rows and the runs started, counted in one statement.
    started_counts = (run_counts.counted(row.id, "running", None, None) for row, _ in started)
    _count([*_inserted_counts(skip_rows), *started_counts])
    db.session.commit()
    report.skips.extend(skipped)
    for row, plan in started:
        run_id = run_ids[row.id]
        report.claimed.append(ClaimedRun(
            run_id, row.id, 1, row.action, row.timeout_seconds, plan.trigger, plan.run_slot,
        ))


def _insert_slot_runs(started: Sequence[tuple[Any, SlotPlan]], now: datetime, owner: str) -> dict[int, int]:
    """Insert a running run for each (task row, plan); the run id of each task id."""
    groups: dict[tuple[str, datetime], list[int]] = defaultdict(list)
    for row, plan in started:
        groups[(plan.trigger, plan.run_slot)].append(row.id)
    run_ids: dict[int, int] = {}
    for (trigger, slot), task_ids in groups.items():
        params = {"b_ids": task_ids, "b_trigger": trigger, "b_slot": slot, "b_now": now, "b_owner": owner}
        run_ids.update((task_id, run_id) for run_id, task_id in _execute(_INSERT_SLOT_RUNS, params))
    return run_ids


def _claim_slots(plans: Sequence[tuple[Any, SlotPlan]], now: datetime) -> set[int]:
    """Move each planned task on from the slot it was seen at; the ids of the tasks this process won.

    Plans that make the same change (claim kind, seen slot, next slot) share one UPDATE.
    Its conditions are the claim: a task another process moved on first no longer matches.
    """
    groups: dict[tuple[Any, datetime, datetime | None], list[int]] = defaultdict(list)
    for row, plan in plans:
        if plan.run_slot is None:
            claim = _ADVANCE_SLOT
        else:
            claim = _CLAIM_SLOT_FORBID if row.concurrency_policy == "forbid" else _CLAIM_SLOT
        groups[(claim, row.next_run_at, plan.next_run_at)].append(row.id)
    won: set[int] = set()
    for (claim, seen, next_at), task_ids in groups.items():
        params = {"b_ids": task_ids, "b_seen": seen, "b_next": next_at, "b_now": now}
        won.update(_execute(claim, params).scalars())
    return won


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


def recover_lost_runs(now: datetime, lease_seconds: float, alive: Iterable[int] = ()) -> list[FinishedRun]:
    """Fail runs whose owner stopped renewing its lease, and retry them by the task's policy."""
    stale_before = now - timedelta(seconds=lease_seconds)
    lost = db.session.execute(
        sa.select(Run.id, Run.heartbeat_at)
        .where(Run.status == "running", Run.heartbeat_at < stale_before)
        .order_by(Run.id)
        .limit(RECOVERY_BATCH)
    ).all()
    db.session.commit()
    alive = set(alive)
    recovered = []
    for run_id, heartbeat_at in lost:
        if run_id in alive:
            continue
        result = RunResult(run_id, Outcome(succeeded=False, message=WORKER_LOST), None, now)
        facts = _run_facts([run_id]).get(run_id)
        finished = facts and _finish_one(result, facts, owner=None, expect_heartbeat=heartbeat_at)
        if finished is not None:  # a failure: it makes no child due
            _count_finished([finished])
        db.session.commit()
        if finished is not None:
            recovered.append(finished)
            log.warning("run %s: %s (no heartbeat since %s)", run_id, WORKER_LOST, heartbeat_at.isoformat())
    return recovered


# --- recording outcomes ------------------------------------------------------------------


def finish_runs(results: Sequence[RunResult], *, owner: str | None = None) -> list[FinishedRun]:
    """Record outcomes and move their tasks on, all in one transaction.

    Only a run still ``running`` (and still ``owner``'s) is finished: a process
    that lost its lease cannot overwrite the recovery. The answer lists what was
    recorded; a result that was not is simply absent.
    """
    facts = _run_facts(sorted(result.run_id for result in results))
    # Task rows in one order for every process (task id, then run id), so that two batches
    # moving the same tasks on cannot wait for each other's locks; a run row has one owner.
    ordered = sorted((result for result in results if result.run_id in facts),
                     key=lambda result: (facts[result.run_id].task_id, result.run_id))
    finished = _finish_all(ordered, facts, owner)
    if finished is None:  # some run was no longer ours: find out which, one by one
        db.session.rollback()
        finished = [recorded for result in ordered
                    if (recorded := _finish_one(result, facts[result.run_id], owner=owner)) is not None]
    parents = [run.task_id for run in finished if run.status == "success" and facts[run.run_id].has_children]
    _trigger_dependents(parents, ordered[-1].finished_at if ordered else None)
    _count_finished(finished)
    db.session.commit()
    return finished


def finish_run(run_id: int, outcome: Outcome, now: datetime, *, owner: str | None = None) -> FinishedRun | None:
    """Record one outcome (finished at ``now``); None when it was not recorded."""
    finished = finish_runs([RunResult(run_id, outcome, None, now)], owner=owner)
    return finished[0] if finished else None


def _run_facts(run_ids: list[int]) -> dict[int, Any]:
    """What recording needs to know of each run and its task, in one query.
    A run that is gone was deleted with its task meanwhile."""
    if not run_ids:
        return {}
    return {row.id: row for row in _execute(_RUN_FACTS, {"b_ids": run_ids})}


def _finish_all(results: Sequence[RunResult], facts: dict[int, Any], owner: str | None) -> list[FinishedRun] | None:
    """Record every result with one executemany per statement (a C loop in the driver).

    None if fewer runs matched than were given (a lease was lost meanwhile); the
    caller then rolls back and records them one by one to learn which.
    """
    if not results or not db.session.get_bind().dialect.supports_sane_multi_rowcount:
        return None if results else []
    records, moves, finished = [], [], []
    for result in results:
        statement, record, move, run = _finish_plan(result, facts[result.run_id], owner=owner)
        records.append(record)
        moves.append(move)
        finished.append(run)
    # One statement for all: it depends only on ``owner``, the same for every result here.
    if _execute(statement, records).rowcount != len(records):
        return None
    _execute(_MOVE_TASK_ON, moves)
    return finished


def _finish_one(result: RunResult, facts: Any, *, owner: str | None,
                expect_heartbeat: datetime | None = None) -> FinishedRun | None:
    statement, record, move, run = _finish_plan(result, facts, owner=owner, expect_heartbeat=expect_heartbeat)
    if not _execute(statement, record).rowcount:
        return None
    _execute(_MOVE_TASK_ON, move)
    return run


def _finish_plan(result: RunResult, facts: Any, *, owner: str | None, expect_heartbeat: datetime | None = None
                 ) -> tuple[Any, dict[str, Any], dict[str, Any], FinishedRun]:
    """How to record one outcome: the run's UPDATE and its parameters, the task's, and what it finishes."""
    outcome, now = result.outcome, result.finished_at
    started_at = result.started_at or facts.started_at
    status = "success" if outcome.succeeded else "failed"
    duration = max((now - started_at).total_seconds(), 0.0) if started_at else None
    message = outcome.message[:MESSAGE_LIMIT]
    record = {
        "b_id": result.run_id, "b_status": status, "b_started": started_at, "b_finished": now,
        "b_duration": duration, "b_exit_code": outcome.exit_code, "b_http_status": outcome.http_status,
        "b_output": outcome.output, "b_message": message,
    }
    if expect_heartbeat is not None:
        statement, record["b_heartbeat"] = _RECORD_STALE_RUN, expect_heartbeat
    elif owner is not None:
        statement, record["b_owner"] = _RECORD_OWN_RUN, owner
    else:
        statement = _RECORD_RUN
    retry_at = None
    if outcome.succeeded:
        task_status, retry_count = "success", 0
    else:
        policy = RetryPolicy(facts.max_retries, facts.retry_delay_seconds, facts.retry_max_delay_seconds)
        retry_at = policy.after_failure(facts.attempt, now)
        task_status, retry_count = ("retrying", facts.attempt) if retry_at else ("failed", facts.max_retries)
    move = {
        "b_id": facts.task_id, "b_status": task_status, "b_retry_count": retry_count, "b_retry_at": retry_at,
        "b_outcome": status,
    }
    run = FinishedRun(
        result.run_id, facts.task_id, facts.name, facts.attempt, facts.trigger, status, facts.scheduled_for,
        started_at, now, duration, message, retry_at, facts.last_outcome,
    )
    return statement, record, move, run


def _trigger_dependents(parent_ids: list[int], now: datetime | None) -> None:
    """Mark due each dependency-only child whose parents have all succeeded since its last run."""
    if not parent_ids:
        return
    children = _execute(_WAITING_CHILDREN, {"b_ids": sorted(set(parent_ids))}).all()
    for child_id, child_last_run in children:
        parents_of_child = sa.select(task_dependencies.c.parent_id).where(task_dependencies.c.child_id == child_id)
        statuses = db.session.execute(sa.select(Task.id, Task.status).where(Task.id.in_(parents_of_child))).all()
        if any(status != "success" for _, status in statuses):
            continue
        last_successes = db.session.execute(
            sa.select(Run.task_id, sa.func.max(Run.finished_at))
            .where(Run.task_id.in_(parents_of_child), Run.status == "success")
            .group_by(Run.task_id)
        ).all()
        if len(last_successes) < len(statuses):
            continue
        if child_last_run is None or all(finished > child_last_run for _, finished in last_successes):
            _execute(
                sa.update(_task).where(_task.c.id == child_id, _task.c.next_run_at.is_(None))
                .values(next_run_at=now, updated_at=_task.c.updated_at)
            )
