"""Recording outcomes: a run's result written, its task moved on (retry, success, failure),
dependency-only children made due; all in one transaction per batch.

Runs on the recorder thread (the engine's ``Recorder``), and on the heartbeat thread for
runs whose process died (``finish_lost``, from leases.py). Only a run still ``running``
(and still this owner's) is finished: a process that lost its lease cannot overwrite the
recovery.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import audit, run_counts
from ..database import db
from ..models import Run, Task, task_dependencies
from ..pausing import SCHEDULER_ACTOR
from . import cancels, pool_seats
from . import statements as sql
from .dependencies import ParentOutcome, due_after_parents
from .records import FinishedRun, Outcome, RunResult
from .retry import RetryPolicy

MESSAGE_LIMIT = 500


def finish_runs(results: Sequence[RunResult], *, owner: str | None = None) -> list[FinishedRun]:
    """Record outcomes and move their tasks on, all in one transaction.

    The answer lists what was recorded; a result that was not is simply absent.
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
    finished = _after_finishing(finished)
    db.session.commit()
    return finished


def finish_run(run_id: int, outcome: Outcome, now: datetime, *, owner: str | None = None) -> FinishedRun | None:
    """Record one outcome (finished at ``now``); None when it was not recorded."""
    finished = finish_runs([RunResult(run_id, outcome, None, now)], owner=owner)
    return finished[0] if finished else None


def finish_lost(result: RunResult, heartbeat_at: datetime) -> FinishedRun | None:
    """Record the failure of a run whose lease went stale at ``heartbeat_at`` (leases.py); None if
    it was renewed or finished meanwhile. A failure makes no child due."""
    facts = _run_facts([result.run_id]).get(result.run_id)
    finished = facts and _finish_one(result, facts, owner=None, expect_heartbeat=heartbeat_at)
    if finished is not None:
        [finished] = _after_finishing([finished])
    db.session.commit()
    return finished


def _after_finishing(finished: list[FinishedRun]) -> list[FinishedRun]:
    """What finishing runs sets off, in their transaction: counts, cancel requests done with,
    tasks paused after failing too often."""
    _count_finished(finished)
    cancels.forget(run.run_id for run in finished if run.cancelled)
    final_failures = sorted({run.task_id for run in finished if run.gave_up})
    if not final_failures:
        return finished
    paused = {task_id: count for task_id, count in sql.execute(
        sql.AUTO_PAUSE, {"b_ids": final_failures, "b_actor": SCHEDULER_ACTOR})}
    for task_id, count in paused.items():
        audit.record("pause", task_id, {"enabled": [True, False],
                                        "pause_note": [None, f"paused after {count} consecutive failures"],
                                        "paused_by": [None, SCHEDULER_ACTOR]}, actor=SCHEDULER_ACTOR)
    # The failure that paused a task says so (once, if a batch holds several of its runs).
    last_of = {run.task_id: run.run_id for run in finished if run.gave_up and run.task_id in paused}
    return [replace(run, paused=True) if last_of.get(run.task_id) == run.run_id else run for run in finished]


def _count_finished(finished: Iterable[FinishedRun]) -> None:
    """Apply run-count changes in the session's transaction; last, after the task rows."""
    run_counts.apply(db.session.connection(), (
        change for run in finished for change in run_counts.moved(run.task_id, "running", run.status,
                                                                  run.duration_seconds)
    ))


def _run_facts(run_ids: list[int]) -> dict[int, Any]:
    """What recording needs to know of each run and its task, in one query.
    A run that is gone was deleted with its task meanwhile."""
    if not run_ids:
        return {}
    return {row.id: row for row in sql.execute(sql.RUN_FACTS, {"b_ids": run_ids})}


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
    if sql.execute(statement, records).rowcount != len(records):
        return None
    _give_back_pool_slots(facts[result.run_id] for result in results)
    sql.execute(sql.MOVE_TASK_ON, moves)
    return finished


def _finish_one(result: RunResult, facts: Any, *, owner: str | None,
                expect_heartbeat: datetime | None = None) -> FinishedRun | None:
    statement, record, move, run = _finish_plan(result, facts, owner=owner, expect_heartbeat=expect_heartbeat)
    if not sql.execute(statement, record).rowcount:
        return None
    _give_back_pool_slots([facts])
    sql.execute(sql.MOVE_TASK_ON, move)
    return run


def _give_back_pool_slots(facts: Iterable[Any]) -> None:
    """The pool slots of runs just recorded. Before their tasks' rows: every claim takes its
    pool's row before its task's, so this order cannot deadlock with one."""
    pool_seats.give_back(pool_seats.held_by(fact.pool for fact in facts))


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
        statement, record["b_heartbeat"] = sql.RECORD_STALE_RUN, expect_heartbeat
    elif owner is not None:
        statement, record["b_owner"] = sql.RECORD_OWN_RUN, owner
    else:
        statement = sql.RECORD_RUN
    retry_at = None
    last_outcome, failures = status, None  # failures: 1 a final failure, 0 a success (MOVE_TASK_ON)
    if outcome.cancelled:
        # Not retried, and not the task's outcome: a person (or `replace`) stopped it.
        task_status, retry_count, last_outcome = "failed", 0, facts.last_outcome
    elif outcome.succeeded:
        task_status, retry_count, failures = "success", 0, 0
    else:
        # A backfill run starts a retry chain afresh, whatever its attempt number for the slot.
        tries = 1 if facts.trigger == "backfill" else facts.attempt
        policy = RetryPolicy(facts.max_retries, facts.retry_delay_seconds, facts.retry_max_delay_seconds)
        retry_at = policy.after_failure(tries, now)
        task_status, retry_count = ("retrying", tries) if retry_at else ("failed", facts.max_retries)
        failures = None if retry_at else 1
    move = {
        "b_id": facts.task_id, "b_status": task_status, "b_retry_count": retry_count, "b_retry_at": retry_at,
        "b_outcome": last_outcome, "b_failures": failures,
    }
    run = FinishedRun(
        result.run_id, facts.task_id, facts.name, facts.attempt, facts.trigger, status, facts.scheduled_for,
        started_at, now, duration, message, retry_at, facts.last_outcome, cancelled=outcome.cancelled,
    )
    return statement, record, move, run


def _trigger_dependents(parent_ids: list[int], now: datetime | None) -> None:
    """Make due each dependency-only child of these parents that ``due_after_parents`` says is due."""
    if not parent_ids:
        return
    children = sql.execute(sql.WAITING_CHILDREN, {"b_ids": sorted(set(parent_ids))}).all()
    for child_id, child_last_run in children:
        if due_after_parents(_parent_outcomes(child_id), child_last_run):
            sql.execute(
                sa.update(sql.task).where(sql.task.c.id == child_id, sql.task.c.next_run_at.is_(None))
                .values(next_run_at=now, due_at=now, updated_at=sql.task.c.updated_at)
            )


def _parent_outcomes(child_id: int) -> list[ParentOutcome]:
    """Each parent's status and the end of its latest successful run."""
    parents_of_child = sa.select(task_dependencies.c.parent_id).where(task_dependencies.c.child_id == child_id)
    statuses = db.session.execute(sa.select(Task.id, Task.status).where(Task.id.in_(parents_of_child))).all()
    last_successes = dict(db.session.execute(
        sa.select(Run.task_id, sa.func.max(Run.finished_at))
        .where(Run.task_id.in_(parents_of_child), Run.status == "success")
        .group_by(Run.task_id)
    ).all())
    return [ParentOutcome(status, last_successes.get(parent_id)) for parent_id, status in statuses]
