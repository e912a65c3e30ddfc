"""Run control through the tick against a real database with a frozen clock.

Each test drives ``tick(now, owner=..., capacity=...)`` with an injected ``now`` and records
outcomes with ``recording.finish_runs``, as the engine's threads would: overlap policies
(buffer_all, buffer_one, replace), pools, automatic resume, pause after failures, cancelled
outcomes and the lease recovery of a cancelled run. The last tests run the real engine of this
process: a cancel interrupts a python call and abandons an http call within seconds.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_service.engine import cancels
from scheduler_service.engine.leases import WORKER_LOST, recover_lost_runs
from scheduler_service.engine.records import FinishedRun, Outcome, RunResult
from scheduler_service.engine.recording import finish_runs
from scheduler_service.engine.tick import TickReport, tick
from scheduler_service.extensions import db
from scheduler_service.models import AuditEntry, Pool, Run, RunCancel, Task, TaskRunCounts
from scheduler_service.pausing import pause_task, resume_task
from scheduler_service.refusals import Conflict
from scheduler_service.run_control import cancel_run
from scheduler_service.task_schedules import reschedule

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
EVERY_MINUTE = "* * * * *"
YEARLY = "0 0 1 1 *"  # a task whose slot is set by the test (next_run_at) and then not again for a year
SHELL = {"type": "shell", "command": "true"}
REPLACED = "cancelled: replaced by a newer run"
_names = itertools.count()


# --- helpers ------------------------------------------------------------------------------------


def add_task(app, *, next_run_at: datetime | None = None, **values) -> int:
    """A task row as of T0; ``next_run_at`` (else the schedule's first slot after T0) is its slot."""
    row = dict(name=f"task-{next(_names)}", timezone="UTC", action=SHELL, enabled=True, schedule_anchor=T0,
               cron_expression=EVERY_MINUTE, max_retries=0)
    row.update(values)
    with app.app_context():
        task = Task(**row)
        db.session.add(task)
        db.session.flush()
        if next_run_at is None:
            reschedule(task, T0)
        else:
            task.next_run_at = next_run_at
        db.session.commit()
        return task.id


def add_pool(app, name: str = "db", slots: int = 2) -> None:
    with app.app_context():
        db.session.add(Pool(name=name, slots=slots, running=0))
        db.session.commit()


def run_tick(app, now: datetime, owner: str = "a", capacity: int = 8) -> TickReport:
    with app.app_context():
        report = tick(now, owner=owner, capacity=capacity)
    assert report.errors == 0, report
    return report


def finish(app, run_id: int, now: datetime, *, succeeded: bool = True, owner: str | None = None,
           cancelled: bool = False, message: str | None = None) -> FinishedRun | None:
    """Record one outcome as the engine's recorder would (by ``owner``, if given)."""
    if message is None:
        message = "" if succeeded else ("cancelled by token:ops" if cancelled else "boom")
    outcome = Outcome(succeeded=succeeded, message=message, cancelled=cancelled)
    with app.app_context():
        finished = finish_runs([RunResult(run_id, outcome, None, now)], owner=owner)
    return finished[0] if finished else None


def runs_of_task(app, task_id: int) -> list[Run]:
    """The task's runs in slot order (then attempt), detached."""
    with app.app_context():
        rows = db.session.scalars(
            sa.select(Run).where(Run.task_id == task_id).order_by(Run.scheduled_for, Run.attempt, Run.id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def task_of(app, task_id: int) -> Task:
    with app.app_context():
        task = db.session.get(Task, task_id)
        db.session.expunge_all()
        return task


def pool_of(app, name: str = "db") -> Pool:
    with app.app_context():
        pool = db.session.get(Pool, name)
        db.session.expunge_all()
        return pool


def running_in_pool(app, name: str = "db") -> int:
    """Runs running now that hold a slot of the pool (``run.pool``) or belong to one of its tasks."""
    with app.app_context():
        return db.session.scalar(
            sa.select(sa.func.count()).select_from(Run).join(Task, Task.id == Run.task_id)
            .where(Run.status == "running", sa.or_(Run.pool == name, Task.pool == name))
        )


def cancel_rows(app) -> dict[int, tuple[str | None, str]]:
    with app.app_context():
        return {row.run_id: (row.owner, row.message) for row in db.session.scalars(sa.select(RunCancel))}


def audit_entries(app, task_id: int, action: str) -> list[AuditEntry]:
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.task_id == task_id,
                                                              AuditEntry.action == action)).all()
        db.session.expunge_all()
        return list(rows)


def assert_pool_consistent(app, name: str = "db") -> int:
    """The pool's counter is the number of runs that hold its slots, never above its slots."""
    pool = pool_of(app, name)
    with app.app_context():
        holding = db.session.scalar(sa.select(sa.func.count()).select_from(Run)
                                    .where(Run.status == "running", Run.pool == name))
    assert pool.running == holding == running_in_pool(app, name), (pool.running, holding)
    assert pool.running <= pool.slots
    return pool.running


def assert_counts_match(app) -> None:
    """The per-task run counts (what /api/stats reads) agree with the run table."""
    with app.app_context():
        real = Counter({(task_id, status): count for task_id, status, count in db.session.execute(
            sa.select(Run.task_id, Run.status, sa.func.count()).group_by(Run.task_id, Run.status))})
        kept = Counter()
        for row in db.session.scalars(sa.select(TaskRunCounts)):
            for status in ("pending", "running", "success", "failed", "skipped"):
                if getattr(row, status):
                    kept[(row.task_id, status)] = getattr(row, status)
    assert kept == real


def statuses(runs: list[Run]) -> list[tuple[datetime, str]]:
    return [(run.scheduled_for, run.status) for run in runs]


def assert_one_at_a_time(runs: list[Run]) -> None:
    done = sorted((run for run in runs if run.status in ("success", "failed") and run.started_at is not None
                   and run.finished_at > run.started_at), key=lambda run: run.started_at)
    for first, second in zip(done, done[1:]):
        assert second.started_at >= first.finished_at, f"runs {first.id} and {second.id} overlapped"


# --- buffer_all, buffer_one ---------------------------------------------------------------------------


def test_buffer_all_queues_slots_while_active_and_starts_them_oldest_first_one_at_a_time(app):
    task_id = add_task(app, concurrency_policy="buffer_all", next_run_at=T0)
    [current] = run_tick(app, T0 + SECOND).claimed
    assert current.scheduled_for == T0
    for minutes in (1, 2, 3):
        report = run_tick(app, T0 + minutes * MINUTE + SECOND, owner="b")
        assert report.claimed == [] and report.skips == [] and report.queued == 1
    assert statuses(runs_of_task(app, task_id)) == [
        (T0, "running"), (T0 + MINUTE, "pending"), (T0 + 2 * MINUTE, "pending"), (T0 + 3 * MINUTE, "pending"),
    ]
    # While the first one runs, nothing else starts, whoever ticks.
    assert run_tick(app, T0 + 3 * MINUTE + 5 * SECOND, owner="b").claimed == []

    now = T0 + 3 * MINUTE + 10 * SECOND
    started = [current.scheduled_for]
    for turn in range(3):
        finish(app, current.run_id, now, owner="a" if turn == 0 else "b")
        now += SECOND
        [current] = run_tick(app, now, owner="b").claimed
        assert (current.trigger, current.attempt) == ("schedule", 1)
        started.append(current.scheduled_for)
        assert run_tick(app, now, owner="a").claimed == []  # one at a time
        runs = runs_of_task(app, task_id)
        assert [run.status for run in runs].count("running") == 1
        now += 2 * SECOND
    finish(app, current.run_id, now, owner="b")

    assert started == [T0 + n * MINUTE for n in range(4)]  # oldest first
    runs = runs_of_task(app, task_id)
    assert statuses(runs) == [(T0 + n * MINUTE, "success") for n in range(4)]
    assert_one_at_a_time(runs)
    task = task_of(app, task_id)
    assert (task.status, task.active_runs) == ("success", 0)
    assert_counts_match(app)


def test_buffer_one_keeps_at_most_one_waiting_slot(app):
    task_id = add_task(app, concurrency_policy="buffer_one", next_run_at=T0)
    [first] = run_tick(app, T0 + SECOND).claimed
    assert run_tick(app, T0 + MINUTE + SECOND).queued == 1
    for minutes in (2, 3):
        report = run_tick(app, T0 + minutes * MINUTE + SECOND)
        assert report.claimed == [] and report.queued == 0
        [skip] = report.skips
        assert skip.slot == T0 + minutes * MINUTE
        assert skip.message == "a slot already waits (concurrency_policy buffer_one)"
    runs = runs_of_task(app, task_id)
    assert [run.status for run in runs].count("pending") == 1
    assert statuses(runs) == [(T0, "running"), (T0 + MINUTE, "pending"), (T0 + 2 * MINUTE, "skipped"),
                              (T0 + 3 * MINUTE, "skipped")]

    finish(app, first.run_id, T0 + 3 * MINUTE + 10 * SECOND, owner="a")
    [second] = run_tick(app, T0 + 3 * MINUTE + 11 * SECOND).claimed
    assert second.scheduled_for == T0 + MINUTE  # the waiting slot runs as soon as the active run ends
    # While it runs, one new slot may wait again; the one after is skipped.
    assert run_tick(app, T0 + 4 * MINUTE + SECOND).queued == 1
    assert [skip.slot for skip in run_tick(app, T0 + 5 * MINUTE + SECOND).skips] == [T0 + 5 * MINUTE]
    finish(app, second.run_id, T0 + 5 * MINUTE + 10 * SECOND, owner="a")
    [third] = run_tick(app, T0 + 5 * MINUTE + 11 * SECOND).claimed
    assert third.scheduled_for == T0 + 4 * MINUTE
    finish(app, third.run_id, T0 + 5 * MINUTE + 20 * SECOND, owner="a")

    runs = runs_of_task(app, task_id)
    assert [run.scheduled_for for run in runs if run.status == "success"] == [T0, T0 + MINUTE, T0 + 4 * MINUTE]
    assert [run.status for run in runs].count("pending") == 0
    assert_one_at_a_time(runs)
    assert task_of(app, task_id).active_runs == 0
    assert_counts_match(app)


# --- replace ---------------------------------------------------------------------------------------------


def test_replace_asks_the_running_run_to_stop_finishes_waiting_runs_and_runs_the_new_slot_after(app):
    task_id = add_task(app, concurrency_policy="replace", next_run_at=T0, max_retries=3, retry_delay_seconds=5)
    [first] = run_tick(app, T0 + SECOND, owner="a").claimed

    report = run_tick(app, T0 + MINUTE + SECOND, owner="b")
    assert report.claimed == [] and report.queued == 1
    # The running run is asked to stop, through its owner: nothing else touches it.
    assert cancel_rows(app) == {first.run_id: ("a", REPLACED)}
    assert statuses(runs_of_task(app, task_id)) == [(T0, "running"), (T0 + MINUTE, "pending")]

    # The next slot comes before the first run has stopped: the waiting one is replaced in turn.
    at = T0 + 2 * MINUTE + SECOND
    report = run_tick(app, at, owner="b")
    assert report.claimed == [] and report.queued == 1
    runs = runs_of_task(app, task_id)
    assert statuses(runs) == [(T0, "running"), (T0 + MINUTE, "failed"), (T0 + 2 * MINUTE, "pending")]
    replaced = runs[1]
    assert replaced.message == REPLACED and replaced.finished_at == at and replaced.duration_seconds == 0
    assert cancel_rows(app) == {first.run_id: ("a", REPLACED)}  # asked once, with its first message
    assert run_tick(app, at + SECOND, owner="b").claimed == []  # nothing starts while the old run runs

    # Its owner stops it and records it cancelled (what engine/scheduler.py records).
    recorded = finish(app, first.run_id, at + 2 * SECOND, succeeded=False, owner="a", cancelled=True,
                      message=REPLACED)
    assert recorded.cancelled and recorded.retry_at is None and not recorded.gave_up
    assert cancel_rows(app) == {}
    [new] = run_tick(app, at + 3 * SECOND, owner="b").claimed
    assert (new.scheduled_for, new.trigger, new.attempt) == (T0 + 2 * MINUTE, "schedule", 1)
    finish(app, new.run_id, at + 4 * SECOND, owner="b")

    runs = runs_of_task(app, task_id)
    assert [(run.scheduled_for, run.attempt, run.status, run.message) for run in runs] == [
        (T0, 1, "failed", REPLACED), (T0 + MINUTE, 1, "failed", REPLACED), (T0 + 2 * MINUTE, 1, "success", ""),
    ]
    task = task_of(app, task_id)
    assert (task.status, task.retry_count, task.next_retry_at, task.active_runs) == ("success", 0, None, 0)
    assert_one_at_a_time(runs)
    assert_counts_match(app)


def test_replace_drops_a_waiting_retry_and_runs_the_new_slot_at_once(app):
    task_id = add_task(app, concurrency_policy="replace", next_run_at=T0, max_retries=2, retry_delay_seconds=300)
    [first] = run_tick(app, T0 + SECOND).claimed
    finish(app, first.run_id, T0 + 2 * SECOND, succeeded=False, owner="a")
    assert task_of(app, task_id).status == "retrying"

    report = run_tick(app, T0 + MINUTE + SECOND)
    # The retry is dropped; nothing of the task is active any more, so the queued slot starts in the same tick.
    [new] = report.claimed
    assert (new.scheduled_for, new.trigger) == (T0 + MINUTE, "schedule")
    assert cancel_rows(app) == {}
    task = task_of(app, task_id)
    assert (task.status, task.next_retry_at) == ("running", None)
    finish(app, new.run_id, T0 + MINUTE + 2 * SECOND, owner="a")
    # Past the time of the dropped retry: only slots of the schedule run.
    report = run_tick(app, T0 + 5 * MINUTE + 10 * SECOND)
    assert [c.trigger for c in report.claimed] == ["schedule"]
    ran = [run for run in runs_of_task(app, task_id) if run.status != "skipped"]
    assert [(run.trigger, run.attempt) for run in ran] == [("schedule", 1)] * 3
    assert_counts_match(app)


# --- pools ----------------------------------------------------------------------------------------------


def test_a_pool_of_two_runs_two_of_five_due_tasks_and_the_rest_oldest_slot_first(app):
    add_pool(app, slots=2)
    # Created in the reverse order of their slots: the order of start is the slots', not the ids'.
    slots = [T0 + (4 - n) * SECOND for n in range(5)]
    task_ids = [add_task(app, cron_expression=YEARLY, pool="db", concurrency_policy="allow", next_run_at=slot)
                for slot in slots]
    slot_of = dict(zip(task_ids, slots))
    now = T0 + 10 * SECOND

    report = run_tick(app, now, capacity=8)
    assert sorted(c.scheduled_for for c in report.claimed) == [T0, T0 + SECOND]
    assert pool_of(app).running == 2 and assert_pool_consistent(app) == 2
    pending = sorted(slot_of[task_id] for task_id in task_ids
                     if [run.status for run in runs_of_task(app, task_id)] == ["pending"])
    assert pending == [T0 + 2 * SECOND, T0 + 3 * SECOND, T0 + 4 * SECOND]
    assert run_tick(app, now + SECOND, owner="b").claimed == []  # the pool is full, whoever ticks

    running = list(report.claimed)
    started = sorted(c.scheduled_for for c in running)
    while running:
        done = running.pop(0)
        now += SECOND
        finish(app, done.run_id, now)
        assert assert_pool_consistent(app) == len(running)
        now += SECOND
        claimed = run_tick(app, now, owner="b").claimed
        assert len(claimed) <= 1
        running += claimed
        started += [c.scheduled_for for c in claimed]
        assert assert_pool_consistent(app) == len(running) <= 2

    assert started == sorted(slots)  # the waiting ones started oldest slot first, as slots freed up
    assert pool_of(app).running == 0
    for task_id in task_ids:
        assert [(run.status, run.pool) for run in runs_of_task(app, task_id)] == [("success", "db")]
    assert_counts_match(app)


def test_allow_with_a_pool_runs_beside_the_active_run_while_the_pool_has_room(app):
    add_pool(app, slots=2)
    task_id = add_task(app, pool="db", concurrency_policy="allow", next_run_at=T0)
    [first] = run_tick(app, T0 + SECOND).claimed
    [second] = run_tick(app, T0 + MINUTE + SECOND).claimed  # beside the first: the pool has room
    assert (first.scheduled_for, second.scheduled_for) == (T0, T0 + MINUTE)
    assert assert_pool_consistent(app) == 2
    # The pool is full: the next slot waits, and starts as soon as a run ends.
    report = run_tick(app, T0 + 2 * MINUTE + SECOND)
    assert report.claimed == [] and report.queued == 1
    assert [run.status for run in runs_of_task(app, task_id)] == ["running", "running", "pending"]
    finish(app, first.run_id, T0 + 2 * MINUTE + 5 * SECOND, owner="a")
    [third] = run_tick(app, T0 + 2 * MINUTE + 6 * SECOND).claimed
    assert third.scheduled_for == T0 + 2 * MINUTE and assert_pool_consistent(app) == 2
    for done, at in ((second, 7), (third, 8)):
        finish(app, done.run_id, T0 + 2 * MINUTE + at * SECOND, owner="a")
    assert pool_of(app).running == 0 and task_of(app, task_id).active_runs == 0
    assert_counts_match(app)


def test_a_forbid_task_whose_pool_is_full_keeps_one_slot_waiting_and_skips_the_rest(app):
    add_pool(app, slots=1)
    holder = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0)
    task_id = add_task(app, pool="db", concurrency_policy="forbid", next_run_at=T0 + MINUTE)
    [held] = run_tick(app, T0 + SECOND).claimed
    assert held.task_id == holder
    report = run_tick(app, T0 + MINUTE + SECOND)
    assert report.claimed == [] and report.queued == 1  # waits for the pool, not skipped
    [skip] = run_tick(app, T0 + 2 * MINUTE + SECOND).skips
    assert skip.message == "a run of the task already waits for pool db (concurrency_policy forbid)"
    finish(app, held.run_id, T0 + 2 * MINUTE + 5 * SECOND, owner="a")
    [claimed] = run_tick(app, T0 + 2 * MINUTE + 6 * SECOND).claimed
    assert (claimed.task_id, claimed.scheduled_for) == (task_id, T0 + MINUTE)
    assert statuses(runs_of_task(app, task_id)) == [(T0 + MINUTE, "running"), (T0 + 2 * MINUTE, "skipped")]
    assert assert_pool_consistent(app) == 1


def test_a_manual_run_of_a_pool_task_waits_pending_while_the_pool_is_full(app, client):
    add_pool(app, slots=1)
    busy = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0)
    waiting = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=None)
    [holder] = run_tick(app, T0 + SECOND).claimed
    assert holder.task_id == busy and pool_of(app).running == 1

    response = client.post(f"/api/tasks/{waiting}/run/")
    assert response.status_code == 202, response.get_json()
    manual_id = response.get_json()["id"]
    for owner in ("a", "b"):
        report = run_tick(app, T0 + 2 * SECOND, owner=owner)
        assert report.claimed == [] and report.waiting >= 1
    [run] = runs_of_task(app, waiting)
    assert (run.id, run.status, run.trigger, run.pool) == (manual_id, "pending", "manual", None)
    assert assert_pool_consistent(app) == 1

    finish(app, holder.run_id, T0 + 3 * SECOND, owner="a")
    assert pool_of(app).running == 0
    [claimed] = run_tick(app, T0 + 4 * SECOND, owner="b").claimed
    assert (claimed.run_id, claimed.trigger) == (manual_id, "manual")
    [run] = runs_of_task(app, waiting)
    assert (run.status, run.pool, run.owner) == ("running", "db", "b")
    assert assert_pool_consistent(app) == 1
    finish(app, manual_id, T0 + 5 * SECOND, owner="b")
    assert pool_of(app).running == 0
    assert task_of(app, waiting).active_runs == 0
    assert_counts_match(app)


def test_a_retry_of_a_pool_task_waits_with_its_task_retrying_while_the_pool_is_full(app):
    add_pool(app, slots=1)
    flaky = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0, max_retries=1, retry_delay_seconds=5)
    other = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0 + 3 * SECOND)
    [first] = run_tick(app, T0 + SECOND).claimed
    assert first.task_id == flaky
    finish(app, first.run_id, T0 + 2 * SECOND, succeeded=False, owner="a")
    retry_at = T0 + 7 * SECOND
    assert (task_of(app, flaky).status, task_of(app, flaky).next_retry_at) == ("retrying", retry_at)
    [holder] = run_tick(app, T0 + 4 * SECOND).claimed
    assert holder.task_id == other and pool_of(app).running == 1

    for owner in ("a", "b"):
        assert run_tick(app, T0 + 8 * SECOND, owner=owner).claimed == []  # the retry is due, the pool full
    task = task_of(app, flaky)
    assert (task.status, task.next_retry_at, task.retry_count) == ("retrying", retry_at, 1)
    assert [run.attempt for run in runs_of_task(app, flaky)] == [1]

    finish(app, holder.run_id, T0 + 9 * SECOND, owner="a")
    [retry] = run_tick(app, T0 + 10 * SECOND, owner="b").claimed
    assert (retry.task_id, retry.trigger, retry.attempt, retry.scheduled_for) == (flaky, "retry", 2, retry_at)
    assert [(run.attempt, run.status, run.pool) for run in runs_of_task(app, flaky)] == [
        (1, "failed", "db"), (2, "running", "db")]
    assert assert_pool_consistent(app) == 1
    finish(app, retry.run_id, T0 + 11 * SECOND, owner="b")
    assert pool_of(app).running == 0 and task_of(app, flaky).status == "success"
    assert_counts_match(app)


def _drive_pool(app, task_ids: list[int], owners: list[str], until: datetime, tick_step: timedelta,
                run_ticks: int) -> tuple[int, list]:
    """Tick with the owners in turn every ``tick_step`` until ``until`` and then until nothing waits;
    each claimed run is recorded by its owner ``run_ticks`` ticks later. The most runs of the pool seen
    running at once, and every claim."""
    now, turn, most, claims, stopped = T0, 0, 0, [], False
    in_flight: list[tuple[int, object, str]] = []  # (tick number to finish at, claim, owner)
    for number in range(200):
        if now >= until and not stopped:  # no more slots for a year: what waits drains
            with app.app_context():
                later = now + timedelta(days=365)
                db.session.execute(sa.update(Task).where(Task.id.in_(task_ids))
                                   .values(next_run_at=later, due_at=later))
                db.session.commit()
            stopped = True
        for entry in [entry for entry in in_flight if entry[0] <= number]:
            in_flight.remove(entry)
            assert finish(app, entry[1].run_id, now, owner=entry[2]) is not None
        owner = owners[turn % len(owners)]
        turn += 1
        claimed = run_tick(app, now, owner=owner).claimed
        claims += claimed
        in_flight += [(number + run_ticks, claim, owner) for claim in claimed]
        most = max(most, assert_pool_consistent(app))
        if now >= until and not in_flight and not any(
                run.status == "pending" for task_id in task_ids for run in runs_of_task(app, task_id)):
            break
        now += tick_step
    else:
        raise AssertionError("runs still wait after 200 ticks")
    return most, claims


def test_two_owners_ticking_in_turn_never_exceed_the_pool(app):
    add_pool(app, slots=2)
    task_ids = [add_task(app, pool="db", concurrency_policy=policy, next_run_at=T0)
                for policy in ("allow", "forbid", "buffer_all", "buffer_one", "replace")]
    most, claims = _drive_pool(app, task_ids, ["a", "b"], T0 + 3 * MINUTE, timedelta(seconds=15), run_ticks=3)
    assert most == 2
    assert len(claims) == len({claim.run_id for claim in claims})  # each run claimed once
    assert pool_of(app).running == 0
    assert_counts_match(app)


def test_two_owners_ticking_at_the_same_moment_never_exceed_the_pool(app):
    add_pool(app, slots=2)
    task_ids = [add_task(app, pool="db", concurrency_policy="allow", cron_expression=YEARLY,
                         next_run_at=T0 + n * SECOND) for n in range(6)]
    now, running, started = T0 + 10 * SECOND, [], []
    for _ in range(20):
        barrier = threading.Barrier(2)
        results: dict[str, TickReport] = {}

        def owner_tick(owner: str, moment: datetime = now) -> None:
            with app.app_context():
                barrier.wait()
                results[owner] = tick(moment, owner=owner, capacity=8)

        threads = [threading.Thread(target=owner_tick, args=(owner,)) for owner in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        claimed = results["a"].claimed + results["b"].claimed
        running += claimed
        started += claimed
        assert len(running) <= 2 and assert_pool_consistent(app) == len(running)
        now += SECOND
        if running:
            finish(app, running.pop(0).run_id, now)
        if not running and len(started) == len(task_ids):
            break
        now += SECOND
    assert sorted(c.task_id for c in started) == task_ids
    assert pool_of(app).running == 0
    assert_counts_match(app)


def test_lowering_a_pool_s_slots_stops_nothing_but_blocks_new_claims(app, client):
    add_pool(app, slots=3)
    holders = [add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0) for _ in range(3)]
    newcomer = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0 + 5 * SECOND)
    claimed = run_tick(app, T0 + SECOND).claimed
    assert sorted(c.task_id for c in claimed) == holders and pool_of(app).running == 3

    response = client.put("/api/pools/db/", json={"slots": 1})
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["slots"], response.get_json()["running"]) == (1, 3)
    now = T0 + 6 * SECOND
    assert run_tick(app, now).claimed == []
    assert all(run.status == "running" for task_id in holders for run in runs_of_task(app, task_id))
    assert cancel_rows(app) == {}  # nothing was asked to stop
    assert [run.status for run in runs_of_task(app, newcomer)] == ["pending"]

    for index, done in enumerate(claimed):
        now += SECOND
        finish(app, done.run_id, now, owner="a")
        now += SECOND
        report = run_tick(app, now)
        if index < 2:  # 2, then 1 still run: not below the one slot
            assert report.claimed == [] and pool_of(app).running == 2 - index
        else:
            assert [c.task_id for c in report.claimed] == [newcomer]
    assert assert_pool_consistent(app) == 1


def test_deleting_a_task_with_a_running_pooled_run_gives_its_slot_back(app, client):
    add_pool(app, slots=1)
    doomed = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0)
    waiting = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0 + SECOND)
    [holder] = run_tick(app, T0 + 2 * SECOND).claimed
    assert holder.task_id == doomed and pool_of(app).running == 1
    assert [run.status for run in runs_of_task(app, waiting)] == ["pending"]

    assert client.delete(f"/api/tasks/{doomed}/").status_code == 204
    assert pool_of(app).running == 0
    [claimed] = run_tick(app, T0 + 3 * SECOND).claimed
    assert claimed.task_id == waiting and pool_of(app).running == 1
    # The deleted task's run, recorded late by its process, gives nothing back a second time.
    assert finish(app, holder.run_id, T0 + 4 * SECOND, owner="a") is None
    assert assert_pool_consistent(app) == 1


def test_lease_recovery_of_a_pooled_run_gives_its_slot_back(app):
    add_pool(app, slots=1)
    lost_task = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0, max_retries=0)
    waiting = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0 + SECOND)
    [claimed] = run_tick(app, T0 + 2 * SECOND, owner="dead").claimed
    assert claimed.task_id == lost_task and pool_of(app).running == 1
    with app.app_context():
        [lost] = recover_lost_runs(T0 + 40 * SECOND, 30)
    assert (lost.run_id, lost.message) == (claimed.run_id, WORKER_LOST)
    assert pool_of(app).running == 0
    [next_run] = run_tick(app, T0 + 41 * SECOND, owner="b").claimed
    assert next_run.task_id == waiting and assert_pool_consistent(app) == 1


def test_cancelling_a_manual_run_that_waits_for_its_pool_finishes_it_and_frees_its_task(app, client):
    add_pool(app, slots=1)
    add_task(app, cron_expression=YEARLY, pool="db", next_run_at=T0)
    waiting = add_task(app, cron_expression=YEARLY, pool="db", next_run_at=None)
    [holder] = run_tick(app, T0 + SECOND).claimed
    run = client.post(f"/api/tasks/{waiting}/run/").get_json()
    assert run_tick(app, T0 + 2 * SECOND).claimed == []
    assert task_of(app, waiting).active_runs == 1  # a manual run counts as active from the moment it is asked for

    response = client.post(f"/api/logs/{run['id']}/cancel/")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "failed" and body["message"].startswith("cancelled"), body
    assert task_of(app, waiting).active_runs == 0
    assert cancel_rows(app) == {}
    finish(app, holder.run_id, T0 + 3 * SECOND, owner="a")
    assert run_tick(app, T0 + 4 * SECOND).claimed == []  # nothing of it is left to start
    assert pool_of(app).running == 0
    assert client.post(f"/api/logs/{run['id']}/cancel/").status_code == 409
    # Its task may run again at once (forbid: nothing of it is active).
    assert client.post(f"/api/tasks/{waiting}/run/").status_code == 202
    assert_counts_match(app)


# --- pause: automatic resume, pause after failures -----------------------------------------------------------


def pause(app, task_id: int, until: datetime | None, now: datetime, note: str = "maintenance") -> None:
    with app.app_context():
        task = db.session.get(Task, task_id)
        pause_task(task, note, until, now)
        db.session.commit()


@pytest.mark.parametrize("until, first_slot", [
    (T0 + 10 * MINUTE + 30 * SECOND, T0 + 11 * MINUTE),  # between two slots: the next one
    (T0 + 10 * MINUTE, T0 + 10 * MINUTE),  # on a slot: that one ("at or after")
], ids=["between slots", "on a slot"])
def test_a_paused_task_resumes_by_itself_at_paused_until_once(app, until, first_slot):
    task_id = add_task(app, next_run_at=T0)
    [first] = run_tick(app, T0 + SECOND).claimed
    finish(app, first.run_id, T0 + 2 * SECOND)
    pause(app, task_id, until, T0 + 3 * SECOND)
    paused = task_of(app, task_id)
    assert (paused.enabled, paused.next_run_at, paused.paused_until) == (False, None, until)

    for minutes in range(1, 10):  # the slots during the pause are not run
        assert run_tick(app, T0 + minutes * MINUTE + SECOND).claimed == []
    assert task_of(app, task_id).enabled is False

    at = until + SECOND
    claims = run_tick(app, at, owner="a").claimed
    task = task_of(app, task_id)
    assert task.enabled is True
    assert (task.pause_note, task.paused_until, task.paused_by) == (None, None, None)
    assert task.next_run_at == first_slot
    [entry] = audit_entries(app, task_id, "resume")
    assert entry.actor == "scheduler"
    assert entry.changes["enabled"] == [False, True] and entry.changes["pause_note"] == ["maintenance", None]
    claims += run_tick(app, at, owner="b").claimed  # another owner, the same moment: resumed once
    assert len(audit_entries(app, task_id, "resume")) == 1

    claims += run_tick(app, max(at, first_slot) + SECOND).claimed
    [claimed] = claims  # the first slot from paused_until on, once
    assert claimed.scheduled_for == first_slot
    assert [run.scheduled_for for run in runs_of_task(app, task_id)] == [T0, first_slot]


def test_two_owners_resuming_at_the_same_moment_resume_once(app):
    until = T0 + 5 * MINUTE + 30 * SECOND  # between slots: no slot is due in the resuming ticks
    task_ids = [add_task(app, next_run_at=T0) for _ in range(3)]
    for task_id in task_ids:
        pause(app, task_id, until, T0)
    barrier = threading.Barrier(2)

    def owner_tick(owner: str) -> None:
        with app.app_context():
            barrier.wait()
            tick(until + SECOND, owner=owner, capacity=8)

    threads = [threading.Thread(target=owner_tick, args=(owner,)) for owner in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    run_tick(app, until + 2 * SECOND, owner="c")  # a third owner a moment later finds nothing left to resume
    for task_id in task_ids:
        task = task_of(app, task_id)
        assert (task.enabled, task.paused_until, task.next_run_at) == (True, None, T0 + 6 * MINUTE)
        assert [entry.actor for entry in audit_entries(app, task_id, "resume")] == ["scheduler"]


def test_a_task_pauses_itself_after_two_consecutive_final_failures(app):
    task_id = add_task(app, next_run_at=T0, pause_after_failures=2, max_retries=0)
    [first] = run_tick(app, T0 + SECOND).claimed
    recorded = finish(app, first.run_id, T0 + 2 * SECOND, succeeded=False, owner="a")
    assert recorded.gave_up and not recorded.paused
    task = task_of(app, task_id)
    assert (task.enabled, task.consecutive_failures, task.pause_note) == (True, 1, None)

    [second] = run_tick(app, T0 + MINUTE + SECOND).claimed
    recorded = finish(app, second.run_id, T0 + MINUTE + 2 * SECOND, succeeded=False, owner="a")
    assert recorded.gave_up and recorded.paused
    task = task_of(app, task_id)
    assert (task.enabled, task.pause_note, task.paused_by) == (False, "paused after 2 consecutive failures",
                                                               "scheduler")
    assert (task.paused_until, task.next_run_at, task.consecutive_failures, task.status) == (None, None, 2, "failed")
    [entry] = audit_entries(app, task_id, "pause")
    assert entry.actor == "scheduler"
    assert entry.changes["enabled"] == [True, False]
    assert entry.changes["pause_note"] == [None, "paused after 2 consecutive failures"]

    # Paused until someone resumes it: no more slots, however long.
    for minutes in (2, 3, 60):
        assert run_tick(app, T0 + minutes * MINUTE + SECOND).claimed == []
    assert len(runs_of_task(app, task_id)) == 2


def test_a_success_between_failures_resets_the_count(app):
    task_id = add_task(app, next_run_at=T0, pause_after_failures=2, max_retries=0)
    outcomes = [False, True, False, False]
    paused = []
    for minute, succeeded in enumerate(outcomes):
        [claimed] = run_tick(app, T0 + minute * MINUTE + SECOND).claimed
        recorded = finish(app, claimed.run_id, T0 + minute * MINUTE + 2 * SECOND, succeeded=succeeded, owner="a")
        paused.append(recorded.paused)
        task = task_of(app, task_id)
        assert task.consecutive_failures == [1, 0, 1, 2][minute]
    assert paused == [False, False, False, True]
    assert task_of(app, task_id).enabled is False


def test_only_final_failures_count_towards_the_pause(app):
    task_id = add_task(app, next_run_at=T0, pause_after_failures=2, max_retries=1, retry_delay_seconds=5)
    [first] = run_tick(app, T0 + SECOND).claimed
    recorded = finish(app, first.run_id, T0 + 2 * SECOND, succeeded=False, owner="a")
    assert recorded.retry_at is not None and not recorded.paused
    assert task_of(app, task_id).consecutive_failures == 0  # a failure that is retried is not final
    [retry] = run_tick(app, T0 + 8 * SECOND).claimed
    finish(app, retry.run_id, T0 + 9 * SECOND, succeeded=False, owner="a")
    task = task_of(app, task_id)
    assert (task.consecutive_failures, task.enabled) == (1, True)


def test_failures_recorded_in_one_batch_pause_the_task_once(app):
    task_id = add_task(app, concurrency_policy="allow", next_run_at=T0, pause_after_failures=2, max_retries=0)
    [first] = run_tick(app, T0 + SECOND).claimed
    [second] = run_tick(app, T0 + MINUTE + SECOND).claimed  # allow: beside the first
    failed = Outcome(succeeded=False, message="boom")
    with app.app_context():
        recorded = finish_runs([RunResult(first.run_id, failed, None, T0 + MINUTE + 2 * SECOND),
                                RunResult(second.run_id, failed, None, T0 + MINUTE + 2 * SECOND)], owner="a")
    assert sorted((run.run_id, run.paused) for run in recorded) == [(first.run_id, False), (second.run_id, True)]
    task = task_of(app, task_id)
    assert (task.enabled, task.consecutive_failures, task.pause_note) == (
        False, 2, "paused after 2 consecutive failures")
    assert len(audit_entries(app, task_id, "pause")) == 1


def test_a_resumed_task_counts_its_failures_afresh(app):
    task_id = add_task(app, next_run_at=T0, pause_after_failures=2, max_retries=0)
    for minute in (0, 1):
        [claimed] = run_tick(app, T0 + minute * MINUTE + SECOND).claimed
        finish(app, claimed.run_id, T0 + minute * MINUTE + 2 * SECOND, succeeded=False, owner="a")
    assert task_of(app, task_id).enabled is False
    with app.app_context():
        resume_task(db.session.get(Task, task_id), T0 + 5 * MINUTE + 30 * SECOND)
        db.session.commit()
    task = task_of(app, task_id)
    assert (task.enabled, task.consecutive_failures, task.pause_note, task.paused_by) == (True, 0, None, None)
    assert task.next_run_at == T0 + 6 * MINUTE  # from the resume on
    [claimed] = run_tick(app, T0 + 6 * MINUTE + SECOND).claimed
    assert finish(app, claimed.run_id, T0 + 6 * MINUTE + 2 * SECOND, succeeded=False, owner="a").paused is False
    task = task_of(app, task_id)
    assert (task.enabled, task.consecutive_failures) == (True, 1)


def test_a_slot_waiting_behind_the_run_that_paused_its_task_does_not_run(app):
    task_id = add_task(app, concurrency_policy="buffer_all", next_run_at=T0, pause_after_failures=1, max_retries=0)
    [first] = run_tick(app, T0 + SECOND).claimed
    assert run_tick(app, T0 + MINUTE + SECOND).queued == 1
    assert finish(app, first.run_id, T0 + MINUTE + 5 * SECOND, succeeded=False, owner="a").paused
    for owner in ("a", "b"):  # paused: the waiting slot waits with its task
        assert run_tick(app, T0 + MINUTE + 6 * SECOND, owner=owner).claimed == []
    assert statuses(runs_of_task(app, task_id)) == [(T0, "failed"), (T0 + MINUTE, "pending")]

    with app.app_context():  # someone resumes it: the slots from before are not run
        resume_task(db.session.get(Task, task_id), T0 + 3 * MINUTE + 30 * SECOND)
        db.session.commit()
    [run] = [run for run in runs_of_task(app, task_id) if run.scheduled_for == T0 + MINUTE]
    assert run.status == "skipped"
    [claimed] = run_tick(app, T0 + 4 * MINUTE + SECOND).claimed
    assert claimed.scheduled_for == T0 + 4 * MINUTE
    assert_counts_match(app)


def test_a_cancelled_outcome_is_not_retried_not_the_task_s_outcome_and_not_a_failure(app):
    task_id = add_task(app, next_run_at=T0, pause_after_failures=2, max_retries=3, retry_delay_seconds=5)
    # One success, then one final failure (all retries used): the count stands at 1.
    [ok] = run_tick(app, T0 + SECOND).claimed
    finish(app, ok.run_id, T0 + 2 * SECOND)
    with app.app_context():
        db.session.execute(sa.update(Task).where(Task.id == task_id).values(consecutive_failures=1))
        db.session.commit()

    [claimed] = run_tick(app, T0 + MINUTE + SECOND).claimed
    recorded = finish(app, claimed.run_id, T0 + MINUTE + 3 * SECOND, succeeded=False, owner="a", cancelled=True,
                      message="cancelled by token:ops")
    assert recorded.cancelled and recorded.status == "failed"
    assert (recorded.retry_at, recorded.gave_up, recorded.paused) == (None, False, False)
    task = task_of(app, task_id)
    assert (task.status, task.next_retry_at, task.retry_count) == ("failed", None, 0)
    assert task.last_outcome == "success"  # unchanged: a person stopped it
    assert (task.consecutive_failures, task.enabled) == (1, True)
    [run] = [run for run in runs_of_task(app, task_id) if run.id == claimed.run_id]
    assert (run.status, run.message) == ("failed", "cancelled by token:ops")
    # No retry ever comes; the next slot runs as usual.
    report = run_tick(app, T0 + 2 * MINUTE + SECOND)
    assert [(c.trigger, c.attempt) for c in report.claimed] == [("schedule", 1)]
    assert_counts_match(app)


def test_lease_recovery_of_a_cancelled_run_whose_owner_died_records_it_cancelled_without_retry(app):
    task_id = add_task(app, cron_expression=YEARLY, next_run_at=T0, max_retries=2, retry_delay_seconds=5)
    [claimed] = run_tick(app, T0 + SECOND, owner="dead").claimed
    with app.app_context():
        cancels.ask_to_stop([claimed.run_id], "cancelled by token:ops", T0 + 2 * SECOND)
        db.session.commit()
    assert cancel_rows(app) == {claimed.run_id: ("dead", "cancelled by token:ops")}

    # The owner died before it saw the cancel: nobody renews its lease; another process notices.
    with app.app_context():
        assert recover_lost_runs(T0 + 20 * SECOND, 30) == []
        [lost] = recover_lost_runs(T0 + 40 * SECOND, 30)
    assert lost.run_id == claimed.run_id and lost.cancelled
    assert lost.message == f"cancelled by token:ops ({WORKER_LOST})"
    assert (lost.retry_at, lost.gave_up) == (None, False)
    [run] = runs_of_task(app, task_id)
    assert (run.status, run.message) == ("failed", "cancelled by token:ops (worker lost)")
    task = task_of(app, task_id)
    assert (task.status, task.next_retry_at, task.active_runs) == ("failed", None, 0)
    assert cancel_rows(app) == {}
    assert run_tick(app, T0 + 2 * MINUTE).claimed == []  # no retry, ever
    assert len(runs_of_task(app, task_id)) == 1


# --- cancel races ----------------------------------------------------------------------------------------------


def test_cancelling_a_run_that_finished_meanwhile_is_a_conflict(app):
    task_id = add_task(app, cron_expression=YEARLY, next_run_at=T0)
    [claimed] = run_tick(app, T0 + SECOND).claimed
    with app.test_request_context():
        run = db.session.get(Run, claimed.run_id)
        assert run.status == "running"  # what the API read
        finish(app, claimed.run_id, T0 + 2 * SECOND, owner="a")  # its process records it meanwhile
        with pytest.raises(Conflict):
            cancel_run(run)
        db.session.rollback()
    assert [(run.status, run.message) for run in runs_of_task(app, task_id)] == [("success", "")]
    assert cancel_rows(app) == {} and audit_entries(app, task_id, "cancel") == []


def test_asking_a_run_to_stop_counts_the_runs_asked(app):
    # run_control.cancel_run reads 0 as "finished meanwhile" (409): the count must be right on every database.
    add_task(app, cron_expression=YEARLY, next_run_at=T0)
    [claimed] = run_tick(app, T0 + SECOND).claimed
    with app.app_context():
        first = cancels.ask_to_stop([claimed.run_id], "cancelled by token:ops", T0 + 2 * SECOND)
        again = cancels.ask_to_stop([claimed.run_id], "cancelled by token:other", T0 + 3 * SECOND)
        db.session.commit()
    assert (first, again) == (1, 0)
    assert cancel_rows(app) == {claimed.run_id: ("a", "cancelled by token:ops")}


# --- the real engine: cancel stops python and http actions ------------------------------------------------

# A python action of this module: naps in small steps, and says when it starts and when it stops.
napping = threading.Event()
woke = threading.Event()


def nap_in_steps(seconds: float) -> str:
    napping.set()
    try:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(0.02)
        return "slept it out"
    finally:
        woke.set()


def test_a_cancel_interrupts_a_python_call_that_naps_in_small_steps(client, engine, make_task, runs_of, task_row,
                                                                  wait_until):
    napping.clear()
    woke.clear()
    task = make_task(cron_expression=YEARLY, max_retries=2, retry_delay_seconds=1, timeout_seconds=120,
                     action={"type": "python", "callable": f"{__name__}:nap_in_steps", "args": [60]})
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: runs_of(task["id"])[0].status == "running")
    assert napping.wait(10)
    asked = time.monotonic()
    assert client.post(f"/api/logs/{run['id']}/cancel/").status_code == 202
    [done] = wait_until(lambda: [r for r in runs_of(task["id"]) if r.status == "failed"], timeout=10)
    assert time.monotonic() - asked < 5
    assert woke.wait(2), "the python call still runs"
    assert done.message.startswith("cancelled by token:"), done.message
    assert task_row(task["id"]).status == "failed"
    time.sleep(1.5)  # a retry would come after 1 s
    assert len(runs_of(task["id"])) == 1


class _SlowHandler(BaseHTTPRequestHandler):
    release = threading.Event()  # set at teardown: the handlers still waiting answer and end

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append(time.monotonic())
        self.release.wait(30)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"late")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[_QuietServer]:
    _SlowHandler.release = threading.Event()
    httpd = _QuietServer(("127.0.0.1", 0), _SlowHandler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    _SlowHandler.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_cancel_abandons_an_http_call_to_a_slow_server(client, engine, make_task, runs_of, task_row, wait_until,
                                                         slow_server):
    url = f"http://127.0.0.1:{slow_server.server_address[1]}/slow"
    task = make_task(cron_expression=YEARLY, max_retries=2, retry_delay_seconds=1, timeout_seconds=120,
                     action={"type": "http", "url": url})
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: slow_server.requests)  # the call is in flight, the server holds it
    asked = time.monotonic()
    assert client.post(f"/api/logs/{run['id']}/cancel/").status_code == 202
    [done] = wait_until(lambda: [r for r in runs_of(task["id"]) if r.status == "failed"], timeout=10)
    assert time.monotonic() - asked < 5
    assert done.message.startswith("cancelled by token:"), done.message
    assert done.http_status is None  # abandoned: no answer came
    assert task_row(task["id"]).status == "failed"
    time.sleep(1.5)
    assert len(runs_of(task["id"])) == 1 and len(slow_server.requests) == 1  # not retried
