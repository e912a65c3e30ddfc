"""PostgreSQL stopped and started under a running scheduler (restored afterwards).

It stops the machine's PostgreSQL server, so it runs only where that is allowed:
CI sets ALLOW_POSTGRES_RESTART=1 (nothing else uses the server there).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from scheduler_service.extensions import db
from scheduler_service.models import Run, Task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("ALLOW_POSTGRES_RESTART") != "1",
                       reason="stops the local PostgreSQL server; set ALLOW_POSTGRES_RESTART=1"),
]

OUTAGE_SECONDS = 12


def cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    fast = ["-m", "fast"] if action == "stop" else []
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *fast], check=True, timeout=60)


def postgres_is_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0


@pytest.fixture
def restore_postgres():
    yield
    if not postgres_is_up():
        cluster("start")
    for _ in range(60):
        if postgres_is_up():
            return
        time.sleep(0.5)


def schedule_runs(app, task_id) -> list[Run]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Run).where(Run.task_id == task_id, Run.trigger == "schedule")).all()
        db.session.expunge_all()
        return list(rows)


def test_scheduler_survives_a_database_restart(db_kind, app, processes, wait, restore_postgres):
    if db_kind != "postgresql":
        pytest.skip("a PostgreSQL server restart")
    from scheduler_service.clock import utcnow
    from scheduler_service.task_schedules import next_slot

    with app.app_context():
        task = Task(name="heartbeat", cron_expression="* * * * * *", timezone="UTC", enabled=True,
                    concurrency_policy="allow", action={"type": "shell", "command": "true"})
        task.next_run_at = next_slot(task, utcnow())
        db.session.add(task)
        db.session.commit()
        task_id = task.id
    scheduler = processes.start()
    health = app.test_client()
    wait(lambda: len(schedule_runs(app, task_id)) >= 3, timeout=60)
    assert health.get("/api/health").status_code == 200

    cluster("stop")
    try:
        response = health.get("/api/health")
        assert response.status_code == 503 and response.get_json()["status"] != "ok"
        time.sleep(OUTAGE_SECONDS)
        assert scheduler.poll() is None, "the scheduler died while the database was down"
    finally:
        cluster("start")
    wait(postgres_is_up, timeout=60)
    restarted = utcnow()
    wait(lambda: health.get("/api/health").status_code == 200, timeout=30)
    wait(lambda: [run for run in schedule_runs(app, task_id) if run.scheduled_for > restarted], timeout=60)

    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=60) == 0, processes.log(0)
    runs = schedule_runs(app, task_id)
    duplicates = [slot for slot, count in Counter(run.scheduled_for for run in runs).items() if count > 1]
    assert duplicates == []
    assert all(run.status in ("success", "failed", "skipped") for run in runs), "a run was left running"
