"""Retention: both rules on 100,000 runs, in small batches, the stats after, the CLI and the engine's job."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from scheduler_service.config import ConfigError, load_settings
from scheduler_service import ops, run_counts
from scheduler_service.extensions import db, scheduler
from scheduler_service.models import Run, SchedulerState, Task
from scheduler_service.ops import retention
from scheduler_service.ops.models import Alert

FINISHED = {"success", "failed", "skipped"}


def add_tasks(app, count: int) -> list[int]:
    with app.app_context():
        tasks = [Task(name=f"t{n}", cron_expression="@daily", action={"type": "shell", "command": "true"})
                 for n in range(count)]
        db.session.add_all(tasks)
        db.session.commit()
        return [task.id for task in tasks]


COLUMNS = ("task_id", "attempt", "trigger", "status", "scheduled_for", "started_at", "finished_at",
           "duration_seconds", "created_at", "output", "message")


def insert_runs(app, rows: list[dict]) -> None:
    """Bulk insert through the driver: COPY on PostgreSQL, executemany on SQLite (naive UTC, as stored)."""
    with app.app_context():
        connection = db.session.connection()
        postgres = connection.dialect.name == "postgresql"

        def native(value):
            if isinstance(value, datetime):
                naive = value.astimezone(timezone.utc).replace(tzinfo=None)
                return naive if postgres else naive.strftime("%Y-%m-%d %H:%M:%S.%f")
            return value

        tuples = [tuple(native(row[column]) for column in COLUMNS) for row in rows]
        if postgres:
            with connection.connection.driver_connection.cursor() as cursor:
                with cursor.copy(f"COPY run ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for values in tuples:
                        copy.write_row(values)
        else:
            connection.exec_driver_sql(
                f"INSERT INTO run ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})", tuples
            )
        run_counts.recount(connection)  # loaded behind the models' back: count them as the stats read them
        db.session.commit()


def run_row(task_id: int, at: datetime, status: str) -> dict:
    finished = at + timedelta(seconds=5) if status in FINISHED else None
    return {
        "task_id": task_id, "attempt": 1, "trigger": "schedule", "status": status, "scheduled_for": at,
        "started_at": at if status != "pending" else None, "finished_at": finished,
        "duration_seconds": 5.0 if finished else None, "created_at": at, "output": "", "message": "",
    }


def remaining(app) -> list[tuple[int, int, str]]:
    with app.app_context():
        rows = db.session.execute(sa.select(Run.id, Run.task_id, Run.status).order_by(Run.id)).all()
        db.session.commit()
        return [tuple(row) for row in rows]


def expected_after(rows: list[dict], ids: list[int], now: datetime, days: int, keep: int) -> set[int]:
    """The rules, applied in Python to what was inserted."""
    by_id = dict(zip(ids, rows))
    protected = set()
    for statuses in ({"success"}, {"success", "failed"}):
        latest: dict[int, int] = {}
        for run_id, row in by_id.items():
            if row["status"] in statuses:
                latest[row["task_id"]] = max(latest.get(row["task_id"], 0), run_id)
        protected |= set(latest.values())
    cutoff = now - timedelta(days=days)
    kept = {
        run_id for run_id, row in by_id.items()
        if run_id in protected or row["status"] not in FINISHED or row["finished_at"] >= cutoff
    }
    per_task: dict[int, list[int]] = defaultdict(list)
    for run_id in kept:
        per_task[by_id[run_id]["task_id"]].append(run_id)
    for task_ids in per_task.values():
        if len(task_ids) > keep:
            boundary = sorted(task_ids, reverse=True)[keep - 1]
            for run_id in task_ids:
                if run_id < boundary and run_id not in protected and by_id[run_id]["status"] in FINISHED:
                    kept.discard(run_id)
    return kept


def test_both_rules_on_100000_runs_in_small_batches_and_the_stats_after(app, client):
    now = datetime.now(timezone.utc)
    big, medium, small = add_tasks(app, 3)
    rows = []
    for task_id, count in ((big, 60000), (medium, 30000), (small, 10000)):
        step = timedelta(days=200) / count
        for n in range(count):
            at = now - timedelta(days=200) + step * n
            status = "failed" if n % 7 == 0 else "skipped" if n % 13 == 0 else "success"
            if task_id == small:  # only one success, long ago: it must survive as the task's latest success
                status = "success" if n == 5 else "failed"
            rows.append(run_row(task_id, at, status))
    for n in range(3):  # old runs still running or pending: never deleted
        rows.append(run_row(big, now - timedelta(days=300, minutes=n), "running"))
        rows.append(run_row(medium, now - timedelta(days=300, minutes=n), "pending"))
    started = time.monotonic()
    insert_runs(app, rows)
    insert_seconds = time.monotonic() - started
    ids = [run_id for run_id, _, _ in remaining(app)]
    assert len(ids) == 100006
    expected = expected_after(rows, ids, now, days=90, keep=10000)

    # A writer keeps writing meanwhile: no batch may hold it up for long.
    stop = threading.Event()
    waits: list[float] = []

    def writer() -> None:
        with app.app_context():
            while not stop.is_set():
                began = time.monotonic()
                db.session.execute(sa.update(Task).where(Task.id == big).values(description=str(began)))
                db.session.commit()
                waits.append(time.monotonic() - began)
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with app.app_context():
            report = retention.prune_runs(now, older_than_days=90, keep_per_task=10000)
    finally:
        stop.set()
        thread.join()

    left = remaining(app)
    assert {run_id for run_id, _, _ in left} == expected
    assert report.runs == 100006 - len(left) and report.by_age > 0 and report.by_count > 0
    assert report.batches >= report.runs / retention.BATCH_ROWS
    assert len(waits) > 10 and max(waits) < 1.0, (max(waits), insert_seconds)

    counts: dict[int, int] = defaultdict(int)
    for _, task_id, _ in left:
        counts[task_id] += 1
    assert counts[big] == 10000  # its newest 10,000 by id (the 3 old running ones among them: inserted last)
    assert [status for _, task_id, status in left if task_id == small].count("success") == 1

    # The stats are aggregates over what remains.
    stats = client.get("/api/stats/").get_json()["runs"]
    by_status = defaultdict(int)
    for _, _, status in left:
        by_status[status] += 1
    assert stats["total"] == len(left)
    assert stats["by_status"] == {status: by_status[status] for status in ("pending", "running", "success",
                                                                           "failed", "skipped")}
    assert stats["success_rate"] == pytest.approx(by_status["success"] / (by_status["success"] + by_status["failed"]))
    one = client.get("/api/stats/", query_string={"task_id": small}).get_json()["runs"]
    assert one["total"] == counts[small]

    with app.app_context():  # a second pass finds nothing more to do
        again = retention.prune_runs(now, older_than_days=90, keep_per_task=10000)
    assert again.runs == 0


def test_the_cli_prunes_by_age_and_by_count(app, runner):
    now = datetime.now(timezone.utc)
    [task_id] = add_tasks(app, 1)
    insert_runs(app, [run_row(task_id, now - timedelta(days=d), "success") for d in range(40, 0, -1)])
    assert len(remaining(app)) == 40

    result = runner.invoke(args=["prune-runs", "--older-than", "30"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Deleted 10 runs (10 by age, 0 beyond the per-task limit) and 0 old alerts")
    assert len(remaining(app)) == 30

    result = runner.invoke(args=["prune-runs", "--keep-per-task", "5"])
    assert result.exit_code == 0, result.output
    assert "Deleted 25 runs (0 by age, 25 beyond the per-task limit)" in result.output
    assert len(remaining(app)) == 5

    assert runner.invoke(args=["prune-runs", "--older-than", "-1"]).exit_code == 2


def test_the_settings_apply_and_zero_switches_a_rule_off(app, runner):
    now = datetime.now(timezone.utc)
    [task_id] = add_tasks(app, 1)
    insert_runs(app, [run_row(task_id, now - timedelta(days=d), "failed") for d in range(397, 0, -4)])
    app.config.update(RUN_RETENTION_DAYS=0, RUN_RETENTION_PER_TASK=0)
    assert runner.invoke(args=["prune-runs"]).output.startswith("Deleted 0 runs")
    app.config.update(RUN_RETENTION_DAYS=90)  # the default: days 1, 5, ... 89 stay
    assert runner.invoke(args=["prune-runs"]).output.startswith("Deleted 77 runs")
    assert len(remaining(app)) == 23


def test_old_sent_alerts_go_too_but_never_pending_ones(app):
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=100)
    with app.app_context():
        for status in ("delivered", "failed", "pending"):
            db.session.add(Alert(event="failure", payload={}, url="http://x.test/", status=status,
                                 next_attempt_at=old, created_at=old))
        db.session.add(Alert(event="failure", payload={}, url="http://x.test/", status="delivered",
                             next_attempt_at=now, created_at=now))
        db.session.commit()
        report = retention.prune_runs(now, older_than_days=90, keep_per_task=None)
        left = db.session.execute(sa.select(Alert.status, Alert.created_at).order_by(Alert.id)).all()
    assert report.alerts == 2
    assert [status for status, _ in left] == ["pending", "delivered"]


def test_the_scheduler_prunes_by_itself(app, client, wait_until):
    now = datetime.now(timezone.utc)
    [task_id] = add_tasks(app, 1)
    insert_runs(app, [run_row(task_id, now - timedelta(days=200), "failed")]
                + [run_row(task_id, now - timedelta(hours=h), "success") for h in range(10, 0, -1)])
    app.config.update(RUN_RETENTION_PER_TASK=3, RETENTION_FIRST_PASS_DELAY_SECONDS=0.1)
    scheduler.start(app)
    try:
        left = wait_until(lambda: (lambda rows: len(rows) == 3 and rows)(remaining(app)))
        # By age: the failure of 200 days ago; by count: all but the three newest.
        assert [status for _, _, status in left] == ["success"] * 3 and left[0][0] == 9
        wait_until(lambda: "scheduler_runs_pruned_total 8.0" in (
            client.get("/metrics").get_data(as_text=True)))
        with app.app_context():
            assert db.session.get(SchedulerState, 1).last_tick_at is not None  # it ran meanwhile
    finally:
        scheduler.stop(app, 0)
        ops.stop_jobs(app)


@pytest.mark.parametrize("variable, raw", [
    ("RUN_RETENTION_DAYS", "-1"), ("RUN_RETENTION_DAYS", "ninety"), ("RUN_RETENTION_PER_TASK", "1.5"),
])
def test_bad_retention_settings_stop_start_up_naming_the_variable(variable, raw):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: raw})


def test_retention_defaults():
    settings = load_settings({})
    assert settings["RUN_RETENTION_DAYS"] == 90 and settings["RUN_RETENTION_PER_TASK"] == 10000
