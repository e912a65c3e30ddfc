"""The tick against a real database with a frozen clock: claims, DST, lost workers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from scheduler_service.engine.records import Outcome, RunResult
from scheduler_service.engine.leases import recover_lost_runs
from scheduler_service.engine.recording import finish_run, finish_runs
from scheduler_service.engine.tick import tick
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task
from tests.statements import counted_statements

UTC = timezone.utc


def add_task(app, **values) -> int:
    defaults = dict(name=f"t{datetime.now().timestamp()}", cron_expression="* * * * *", timezone="UTC",
                    action={"type": "shell", "command": "true"}, enabled=True)
    defaults.update(values)
    with app.app_context():
        task = Task(**defaults)
        db.session.add(task)
        db.session.commit()
        return task.id


def run_tick(app, now, owner="a", capacity=8):
    with app.app_context():
        return tick(now, owner=owner, capacity=capacity)


def recover(app, now, lease_seconds=30):
    with app.app_context():
        return recover_lost_runs(now, lease_seconds)


def finish(app, run_id, now, succeeded=True, owner="a"):
    with app.app_context():
        return finish_run(run_id, Outcome(succeeded=succeeded, message="" if succeeded else "boom"), now, owner=owner)


def test_two_processes_ticking_at_once_claim_a_slot_once(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    task_id = add_task(app, next_run_at=slot)
    first = run_tick(app, slot + timedelta(seconds=1), owner="a")
    second = run_tick(app, slot + timedelta(seconds=1), owner="b")
    assert [c.task_id for c in first.claimed] == [task_id]
    assert second.claimed == []
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1


def test_capacity_limits_what_one_process_claims(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    for _ in range(5):
        add_task(app, next_run_at=slot)
    report = run_tick(app, slot, capacity=2)
    assert len(report.claimed) == 2
    assert len(run_tick(app, slot, owner="b", capacity=8).claimed) == 3


def test_fall_back_runs_the_fixed_hour_once(app):
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    task_id = add_task(app, cron_expression="30 1 * * *", timezone="America/New_York", next_run_at=first)
    report = run_tick(app, first + timedelta(milliseconds=5))
    assert [c.task_id for c in report.claimed] == [task_id]
    finish(app, report.claimed[0].run_id, first + timedelta(seconds=1))
    # 01:30 EST, an hour later, is the same wall time again: it must not run.
    assert run_tick(app, datetime(2026, 11, 1, 6, 30, 1, tzinfo=UTC)).claimed == []
    with app.app_context():
        assert db.session.get(Task, task_id).next_run_at == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


def test_every_half_hour_keeps_real_time_through_fall_back(app):
    start = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT
    task_id = add_task(app, cron_expression="*/30 * * * *", timezone="America/New_York", next_run_at=start)
    ran = []
    now = start
    while now <= datetime(2026, 11, 1, 7, 0, tzinfo=UTC):
        report = run_tick(app, now)
        for claimed in report.claimed:
            finish(app, claimed.run_id, now)
        with app.app_context():
            ran += [r.scheduled_for for r in db.session.scalars(sa.select(Run).where(Run.task_id == task_id))
                    if r.scheduled_for not in ran]
        now += timedelta(minutes=10)
    assert ran == [start + timedelta(minutes=30 * i) for i in range(5)]


def test_a_run_whose_worker_died_is_failed_and_retried(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    task_id = add_task(app, next_run_at=slot, max_retries=1, retry_delay_seconds=60)
    [claimed] = run_tick(app, slot, owner="dead").claimed
    # Nobody renews the lease; another process notices once it is older than the lease.
    assert recover(app, slot + timedelta(seconds=20)) == []
    [lost] = recover(app, slot + timedelta(seconds=31))
    assert (lost.run_id, lost.message, lost.retry_at) == (claimed.run_id, "worker lost", slot + timedelta(seconds=91))
    with app.app_context():
        run = db.session.get(Run, claimed.run_id)
        task = db.session.get(Task, task_id)
        assert (run.status, run.message) == ("failed", "worker lost")
        assert task.status == "retrying" and task.retry_count == 1
        assert task.next_retry_at == slot + timedelta(seconds=31 + 60)
        assert task.active_runs == 0
    # The dead worker's late answer cannot overwrite the recovery.
    assert finish(app, claimed.run_id, slot + timedelta(seconds=40), owner="dead") is None
    retry = run_tick(app, slot + timedelta(seconds=92), owner="b")
    assert [(c.task_id, c.attempt) for c in retry.claimed] == [(task_id, 2)]


def test_success_resets_and_failure_after_last_retry_leaves_failed(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    task_id = add_task(app, next_run_at=slot, max_retries=1, retry_delay_seconds=5)
    [first] = run_tick(app, slot).claimed
    finish(app, first.run_id, slot + timedelta(seconds=1), succeeded=False)
    [retry] = run_tick(app, slot + timedelta(seconds=6)).claimed
    assert retry.attempt == 2
    last = finish(app, retry.run_id, slot + timedelta(seconds=7), succeeded=False)
    assert last.gave_up and last.previous_outcome == "failed" and not last.recovered
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert (task.status, task.retry_count, task.next_retry_at) == ("failed", 1, None)


def test_a_broken_task_does_not_stop_the_others(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    add_task(app, next_run_at=slot, timezone="Not/AZone")  # only possible by writing the row directly
    good = add_task(app, next_run_at=slot)
    report = run_tick(app, slot)
    assert [c.task_id for c in report.claimed] == [good]
    assert report.errors == 1


def test_next_due_time_is_reported_for_the_wake_up(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    add_task(app, next_run_at=slot + timedelta(seconds=42))
    assert run_tick(app, slot).next_due_at == slot + timedelta(seconds=42)


def test_an_idle_tick_is_one_read_and_still_knows_when_to_wake(app):
    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    for minutes in (5, 3, 9):
        add_task(app, next_run_at=now + timedelta(minutes=minutes))
    idle_tick = lambda: run_tick(app, now)  # noqa: E731
    idle_tick()  # warm-up: connections, statement caches
    with counted_statements(app) as statements:
        report = idle_tick()
    assert report.claimed == [] and report.errors == 0
    assert report.next_due_at == now + timedelta(minutes=3)
    # One statement: the claim steps are not even asked.
    assert [s.split()[0].upper() for s in statements] == ["SELECT"]


def test_a_tick_with_due_work_claims_it_and_looks_ahead(app):
    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    due_id = add_task(app, next_run_at=now)
    add_task(app, next_run_at=now + timedelta(minutes=7))
    report = run_tick(app, now)
    assert [(c.task_id, c.trigger, c.scheduled_for) for c in report.claimed] == [
        (due_id, "schedule", now)
    ]
    assert report.next_due_at == now + timedelta(minutes=1)  # the claimed task's next slot, before the other's


def test_claimed_runs_are_handed_over_before_the_tick_looks_ahead(app):
    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    add_task(app, next_run_at=now)
    add_task(app, next_run_at=now + timedelta(minutes=7))
    handed: list = []
    with app.app_context(), counted_statements(app) as statements:
        report = tick(now, owner="a", capacity=8,
                      on_committed=lambda committed: handed.append((list(committed.claimed), len(statements))))
    [(runs, statements_before)] = handed
    assert runs == report.claimed and len(runs) == 1
    # The look-ahead for the next due time comes after: starting a run does not wait for it.
    assert statements_before < len(statements) and report.next_due_at == now + timedelta(minutes=1)


def test_an_idle_tick_hands_nothing_over(app):
    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    add_task(app, next_run_at=now + timedelta(minutes=7))
    handed: list = []
    with app.app_context():
        tick(now, owner="a", capacity=8, on_committed=handed.append)
    assert handed == []


def test_skipped_slots_are_handed_over_with_the_run_that_follows_them(app):
    # Whoever hears of the run (metrics, alerts) must already be able to hear of the skips.
    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    add_task(app, next_run_at=now - timedelta(minutes=5), misfire_grace_seconds=60)
    handed: list = []
    with app.app_context():
        report = tick(now, owner="a", capacity=8,
                      on_committed=lambda committed: handed.append((list(committed.skips), list(committed.claimed))))
    [(skips, runs)] = handed
    assert skips == report.skips and [skip.slot for skip in skips] == [now - timedelta(minutes=5)]
    assert [run.scheduled_for for run in runs] == [now]


def test_a_batch_records_its_runs_but_not_one_whose_lease_was_taken_over(app):
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    task_ids = [add_task(app, next_run_at=slot, max_retries=0) for _ in range(3)]
    claimed = run_tick(app, slot, owner="a").claimed
    assert sorted(c.task_id for c in claimed) == task_ids
    lost = claimed[1]
    with app.app_context():  # another process recovered this one meanwhile
        db.session.execute(sa.update(Run).where(Run.id == lost.run_id).values(status="failed", message="worker lost"))
        db.session.commit()
        results = [RunResult(c.run_id, Outcome(succeeded=True), None, slot + timedelta(seconds=5)) for c in claimed]
        recorded = finish_runs(results, owner="a")
    assert sorted(run.run_id for run in recorded) == sorted(c.run_id for c in claimed if c is not lost)
    with app.app_context():
        statuses = dict(db.session.execute(sa.select(Run.id, Run.status)).all())
        tasks = dict(db.session.execute(sa.select(Task.id, Task.status)).all())
    assert statuses[lost.run_id] == "failed"
    assert [statuses[c.run_id] for c in claimed if c is not lost] == ["success", "success"]
    assert tasks[lost.task_id] == "running"  # the late answer did not move its task on


def test_tasks_waiting_at_the_head_of_the_due_order_do_not_hold_back_later_ones(app):
    now = datetime(2026, 11, 28, 2, 0, 30, tzinfo=UTC)
    head = now - timedelta(seconds=30)
    # Two kinds of wait, more of each than a tick reads at once (capacity + 64):
    # children of a running parent (up to their misfire grace), and dependency-triggered
    # tasks under `forbid` whose previous run still runs (as long as it runs).
    with app.app_context():
        parent = Task(name="parent", cron_expression="0 0 1 1 *", timezone="UTC", action={"type": "shell"},
                      status="running", active_runs=1)
        db.session.add(parent)
        db.session.flush()
        for i in range(80):
            db.session.add(Task(name=f"child-{i}", cron_expression="* * * * *", timezone="UTC", next_run_at=head,
                                misfire_grace_seconds=3600, action={"type": "shell"}, parents=[parent]))
            db.session.add(Task(name=f"follower-{i}", cron_expression=None, timezone="UTC", next_run_at=head,
                                concurrency_policy="forbid", status="running", active_runs=1,
                                action={"type": "shell"}))
        db.session.commit()
    later = add_task(app, next_run_at=now - timedelta(seconds=1))

    report = run_tick(app, now, capacity=8)

    assert [c.task_id for c in report.claimed] == [later]
    assert report.waiting == 160


def test_a_slot_skipped_for_a_failed_parent_names_that_parent_as_a_fact(app):
    """Alerts read the parent from the skipped slot itself, never from its message."""
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    parent = add_task(app, name="extract", status="failed")
    other = add_task(app, name="other", status="success")
    with app.app_context():
        child = Task(name="load", cron_expression="* * * * *", timezone="UTC", enabled=True, next_run_at=now,
                     action={"type": "shell", "command": "true"})
        child.parents = [db.session.get(Task, other), db.session.get(Task, parent)]
        db.session.add(child)
        db.session.commit()
        child_id = child.id
    report = run_tick(app, now)
    [skip] = [skip for skip in report.skips if skip.task_id == child_id]
    assert (skip.parent_id, skip.parent_status, skip.message) == (parent, "failed", "parent 'extract' failed")
