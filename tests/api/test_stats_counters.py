"""/api/stats/ reads run counts (task_run_counts) that every write of runs keeps: after a mixed
workload through the engine, the API, retention and task deletion, the counts equal a full scan
of the run table, and the document equals the one the old aggregate queries computed."""
from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tests.api.api_helpers import add_run, describe, make_task, set_task
from scheduler_service import run_counts
from scheduler_service.engine.records import Outcome, RunResult
from scheduler_service.engine.leases import recover_lost_runs
from scheduler_service.engine.recording import finish_runs
from scheduler_service.engine.tick import tick
from scheduler_service.extensions import db
from scheduler_service.models import RUN_STATUSES, TASK_STATUSES, Run, SchedulerState, Task, TaskRunCounts
from scheduler_service.ops import retention
from scheduler_service.schemas import StatsSchema

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE_SECONDS = 30


# --- the slow way: a full scan of the run table -------------------------------------------------


def _count_by_status(column, statuses, where) -> dict[str, int]:
    rows = db.session.execute(sa.select(column, sa.func.count()).where(*where).group_by(column)).all()
    counts = dict.fromkeys(statuses, 0)
    counts.update({status: count for status, count in rows if status in counts})
    return counts


def stats_by_scan(task_id: int | None = None) -> dict:
    """The stats document as the aggregate queries over every run computed it before the counts."""
    task_filter = [Task.id == task_id] if task_id is not None else []
    run_filter = [Run.task_id == task_id] if task_id is not None else []
    tasks_total, tasks_enabled = db.session.execute(
        sa.select(sa.func.count(), sa.func.count().filter(Task.enabled)).where(*task_filter)
    ).one()
    runs_by_status = _count_by_status(Run.status, RUN_STATUSES, run_filter)
    avg_duration = db.session.execute(
        sa.select(sa.func.avg(Run.duration_seconds)).where(Run.finished_at.is_not(None), *run_filter)
    ).scalar()
    decided = runs_by_status["success"] + runs_by_status["failed"]
    next_runs = db.session.execute(
        sa.select(Task.id, Task.name, Task.next_run_at)
        .where(Task.enabled, Task.next_run_at.is_not(None), *task_filter)
        .order_by(Task.next_run_at, Task.id).limit(10)
    ).all()
    state = db.session.get(SchedulerState, 1)
    return {
        "tasks": {"total": tasks_total, "enabled": tasks_enabled,
                  "by_status": _count_by_status(Task.status, TASK_STATUSES, task_filter)},
        "runs": {"total": sum(runs_by_status.values()), "by_status": runs_by_status,
                 "success_rate": runs_by_status["success"] / decided if decided else None,
                 "avg_duration_seconds": float(avg_duration) if avg_duration is not None else None},
        "next_runs": [{"task_id": id_, "name": name, "next_run_at": at} for id_, name, at in next_runs],
        "scheduler": {"last_tick_at": state.last_tick_at if state else None},
    }


def counts_by_scan() -> dict[int, dict[str, int]]:
    """Each task's counts, computed in Python from every run row."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(run_counts.COUNTED, 0))
    rows = db.session.execute(sa.select(Run.task_id, Run.status, Run.finished_at, Run.duration_seconds)).all()
    for task_id, status, finished_at, duration in rows:
        counts[task_id][status] += 1
        if finished_at is not None and duration is not None:
            counts[task_id]["timed_runs"] += 1
            counts[task_id]["timed_microseconds"] += round(duration * 1_000_000)
    return dict(counts)


def stored_counts() -> dict[int, dict[str, int]]:
    """The counts table, leaving out rows of zeros (a task whose runs were all pruned)."""
    rows = db.session.execute(sa.select(TaskRunCounts.__table__)).mappings().all()
    counts = {row["task_id"]: {name: row[name] for name in run_counts.COUNTED} for row in rows}
    return {task_id: values for task_id, values in counts.items() if any(values.values())}


def assert_stats_match_a_full_scan(app, client) -> None:
    with app.app_context():
        assert stored_counts() == counts_by_scan()
        task_ids = db.session.scalars(sa.select(Task.id).order_by(Task.id)).all()
        expected = {task_id: StatsSchema().dump(stats_by_scan(task_id)) for task_id in [None, *task_ids]}
        db.session.commit()
    for task_id, document in expected.items():
        response = client.get("/api/stats/", query_string={} if task_id is None else {"task_id": task_id})
        assert response.status_code == 200, describe(response)
        answered = response.get_json()
        mean, expected_mean = answered["runs"].pop("avg_duration_seconds"), document["runs"].pop("avg_duration_seconds")
        # The mean of the same durations, added up in another order: equal but for the last bits.
        assert mean == (None if expected_mean is None else pytest.approx(expected_mean, rel=1e-12))
        assert answered == document, f"task_id={task_id}"


# --- driving the engine with a frozen clock -------------------------------------------------------


def claim(app, now: datetime, owner: str = "a") -> list:
    with app.app_context():
        return tick(now, owner=owner, capacity=50).claimed


def finish(app, claimed: list, now: datetime, outcome_of) -> None:
    """Record outcomes for ``claimed`` in one batch; ``outcome_of(claimed_run)`` -> succeeded."""
    results = [
        RunResult(run.run_id, Outcome(succeeded=outcome_of(run), message="", exit_code=0), None,
                  now + timedelta(seconds=1 + index % 7, microseconds=123457 * index))
        for index, run in enumerate(claimed)
    ]
    with app.app_context():
        finish_runs(results, owner="a")


def test_counts_follow_a_mixed_workload_and_the_stats_equal_a_full_scan(app, client):
    ok = make_task(client, name="ok", cron_expression="* * * * *", max_retries=0)
    flaky = make_task(client, name="flaky", cron_expression="* * * * *", max_retries=2, retry_delay_seconds=5)
    doomed = make_task(client, name="doomed", cron_expression="*/2 * * * *", max_retries=1, retry_delay_seconds=5)
    slow = make_task(client, name="slow", cron_expression="* * * * *")  # forbid: its next slots are skipped
    missed = make_task(client, name="missed", cron_expression="* * * * *", misfire_grace_seconds=60)
    child = make_task(client, name="child", cron_expression="* * * * *", depends_on=[doomed["id"]])
    lost = make_task(client, name="lost", cron_expression="0 * * * *", max_retries=1, retry_delay_seconds=5)
    manual = make_task(client, name="manual", cron_expression="0 0 1 1 *", concurrency_policy="allow")
    gone = make_task(client, name="gone", cron_expression="* * * * *")
    for task in (ok, flaky, doomed, slow, child, lost, gone):
        set_task(app, task["id"], next_run_at=NOW)
    set_task(app, missed["id"], next_run_at=NOW - timedelta(minutes=10))  # missed slots are logged as skipped
    assert_stats_match_a_full_scan(app, client)  # tasks but no runs: no counts

    # Manual runs queued through the API: pending.
    for _ in range(3):
        response = client.post(f"/api/tasks/{manual['id']}/run/")
        assert response.status_code == 202, describe(response)
    assert_stats_match_a_full_scan(app, client)

    slow_run = lost_run = None
    for minute in range(6):
        now = NOW + timedelta(minutes=minute)
        claimed = claim(app, now)
        assert claimed or minute > 0
        if minute == 0:
            slow_run = next(run for run in claimed if run.task_id == slow["id"])
            lost_run = next(run for run in claimed if run.task_id == lost["id"])
        assert_stats_match_a_full_scan(app, client)  # claims: pending -> running, new running and skipped runs
        keep_running = {slow_run.run_id, lost_run.run_id}
        finish(app, [run for run in claimed if run.run_id not in keep_running], now,
               lambda run: run.task_id in (ok["id"], manual["id"], gone["id"])
               or (run.task_id == flaky["id"] and run.attempt == 2))
        assert_stats_match_a_full_scan(app, client)  # outcomes: running -> success or failed, with durations
        with app.app_context():  # the slow run's process is alive; the lost run's is not
            recovered = recover_lost_runs(now + timedelta(seconds=LEASE_SECONDS + 1), LEASE_SECONDS,
                                          alive=[slow_run.run_id])
        if minute == 0:
            assert [run.run_id for run in recovered] == [lost_run.run_id]  # failed as lost; its retry follows
        # retry claims happen in the next minutes' ticks (their delay is 5 s)
        assert_stats_match_a_full_scan(app, client)

    response = client.post(f"/api/tasks/{manual['id']}/run/")  # one left pending at the end
    assert response.status_code == 202, describe(response)
    with app.app_context():
        statuses = set(db.session.scalars(sa.select(Run.status)).all())
        triggers = set(db.session.scalars(sa.select(Run.trigger)).all())
    assert statuses == set(RUN_STATUSES), statuses
    assert triggers == {"schedule", "retry", "manual"}, triggers
    assert_stats_match_a_full_scan(app, client)

    # Retention deletes finished runs by age and beyond a per-task limit, in small batches.
    with app.app_context():
        report = retention.prune_runs(NOW + timedelta(minutes=3, days=1), older_than_days=1, keep_per_task=4,
                                      batch_rows=3, pause=0)
    assert report.by_age > 0 and report.by_count > 0, report
    assert_stats_match_a_full_scan(app, client)
    with app.app_context():
        report = retention.prune_runs(NOW + timedelta(days=30), older_than_days=0, keep_per_task=None, pause=0)
    assert report.runs > 0
    assert_stats_match_a_full_scan(app, client)

    # Deleting a task deletes its runs and its counts.
    assert client.delete(f"/api/tasks/{gone['id']}/").status_code == 204
    with app.app_context():
        assert db.session.get(TaskRunCounts, gone["id"]) is None
    assert_stats_match_a_full_scan(app, client)


def test_runs_written_through_the_orm_are_counted(app, client):
    task = make_task(client)
    run_id = add_run(app, task["id"], "running")
    add_run(app, task["id"], "success", duration_seconds=2.5)
    add_run(app, task["id"], "skipped")
    assert_stats_match_a_full_scan(app, client)
    with app.app_context():
        run = db.session.get(Run, run_id)
        db.session.commit()  # expired: the change below must still know what it replaces
        run.status, run.finished_at, run.duration_seconds = "failed", NOW, 7.25
        db.session.commit()
    assert_stats_match_a_full_scan(app, client)
    with app.app_context():
        db.session.delete(db.session.get(Run, run_id))
        db.session.commit()
    assert_stats_match_a_full_scan(app, client)


def test_recount_rebuilds_the_counts_from_the_run_table(app, client):
    task = make_task(client)
    for status, duration in (("success", 1.5), ("failed", 3.0), ("skipped", None), ("running", None)):
        add_run(app, task["id"], status, duration_seconds=duration)
    with app.app_context():
        db.session.execute(sa.delete(TaskRunCounts))
        db.session.execute(sa.insert(TaskRunCounts).values(task_id=task["id"], success=99))  # drifted
        run_counts.recount(db.session.connection())
        db.session.commit()
    assert_stats_match_a_full_scan(app, client)


def test_processes_adding_to_one_task_at_once_all_count(app, client):
    """Concurrent upserts, the first of which creates the row: no lost update, no conflict error."""
    task = make_task(client)
    writers, adds = 4, 50
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def add() -> None:
        try:
            with app.app_context():
                start.wait()
                for _ in range(adds):
                    run_counts.apply(db.session.connection(), [run_counts.RunCount(task["id"], "success", 0.5)])
                    db.session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.app_context():
        counts = db.session.get(TaskRunCounts, task["id"])
        assert (counts.success, counts.timed_runs, counts.timed_microseconds) == (
            writers * adds, writers * adds, writers * adds * 500_000)


# --- the pure part ------------------------------------------------------------------------------


def test_net_rows_add_up_per_task_in_task_order_and_drop_what_cancels_out():
    changes = [
        *run_counts.moved(7, "running", "success", 1.000001),
        run_counts.RunCount(3, "skipped"),
        *run_counts.moved(7, "running", "failed", 2.5),
        run_counts.RunCount(9, "pending"),
        *run_counts.moved(9, "pending", "running"),
        run_counts.RunCount(9, "running", sign=-1),  # queued, claimed, and deleted with nothing left
        run_counts.counted(3, "success", finished_at=None, duration_seconds=4.0),  # not finished: not timed
        run_counts.counted(3, "failed", finished_at=NOW, duration_seconds=4.0, sign=-1),
    ]
    zero = dict.fromkeys(run_counts.COUNTED, 0)
    assert run_counts.net_rows(changes) == [
        {"task_id": 3, **zero, "skipped": 1, "success": 1, "failed": -1, "timed_runs": -1,
         "timed_microseconds": -4_000_000},
        {"task_id": 7, **zero, "running": -2, "success": 1, "failed": 1, "timed_runs": 2,
         "timed_microseconds": 3_500_001},
    ]


def test_a_status_the_counts_do_not_know_is_refused():
    with pytest.raises(ValueError, match="lost"):
        run_counts.net_rows([run_counts.RunCount(1, "lost")])


def test_the_count_columns_are_the_run_statuses():
    columns = {column.name for column in TaskRunCounts.__table__.columns}
    assert columns == {"task_id", *RUN_STATUSES, "timed_runs", "timed_microseconds"}
