"""/metrics: the bearer token, the values after known runs, the exposition format (promtool), several workers."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from tests.api.api_helpers import add_run, make_task
from tests.appfactory import make_app, reset_database
from tests.ops.ops_helpers import free_port
from scheduler_service.auth import issue_token
from scheduler_service.config import ConfigError, load_settings
from scheduler_service.engine.tick import TickReport
from scheduler_service.extensions import db
from scheduler_service.models import Pool
from scheduler_service.ops.metrics import DatabaseCollector, metrics_of

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")


def scrape(client, **headers) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def test_metrics_need_the_token_unless_metrics_public(app, client, anonymous):
    response = anonymous.get("/metrics")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["code"] == 401
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert value(response.get_data(as_text=True), "scheduler_database_up") == 1

    app.config["METRICS_PUBLIC"] = True
    assert anonymous.get("/metrics").status_code == 200


def test_metrics_public_setting():
    assert load_settings({})["METRICS_PUBLIC"] is False
    assert load_settings({"METRICS_PUBLIC": "yes"})["METRICS_PUBLIC"] is True
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        load_settings({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/dir"})


def test_values_after_known_runs(app, client, engine, make_task, wait_until, runs_of, set_task):
    good = make_task(name="good", action={"type": "shell", "command": "sleep 0.2"})
    bad = make_task(name="bad", action={"type": "shell", "command": "exit 1"}, max_retries=0)
    skipper = make_task(name="skipper", misfire_grace_seconds=60)
    for _ in range(2):
        client.post(f"/api/tasks/{good['id']}/run/")
        wait_until(lambda: runs_of(good["id"])[-1].status == "success")
    client.post(f"/api/tasks/{bad['id']}/run/")
    wait_until(lambda: runs_of(bad["id"]) and runs_of(bad["id"])[-1].status == "failed")
    set_task(skipper["id"], next_run_at=datetime.now(timezone.utc) - timedelta(hours=1))
    engine.wake()
    wait_until(lambda: runs_of(skipper["id"]))
    g, b, s = str(good["id"]), str(bad["id"]), str(skipper["id"])
    # Start lags are read back from the runs by the ops thread: wait for them. The skipped slot's
    # row is committed a moment before the tick announces it, and so is the last recorded run
    # (bad's) before the recorder does: wait for their counts too. The recorder is one thread,
    # so good's runs, recorded before bad's, were announced before it.
    text = wait_until(lambda: (lambda t: value(t, "scheduler_run_start_lag_seconds_count", trigger="manual") == 3
                               and value(t, "scheduler_slots_skipped_total", task_id=s) == 1
                               and value(t, "scheduler_runs_finished_total", task_id=b, outcome="failed") == 1
                               and t)(scrape(client)))

    assert value(text, "scheduler_runs_started_total", task_id=g) == 2
    assert value(text, "scheduler_runs_started_total", task_id=b) == 1
    assert value(text, "scheduler_runs_finished_total", task_id=g, outcome="success") == 2
    assert value(text, "scheduler_runs_finished_total", task_id=b, outcome="failed") == 1
    assert value(text, "scheduler_runs_finished_total", task_id=g, outcome="failed") is None
    assert value(text, "scheduler_run_duration_seconds_count", task_id=g) == 2
    assert 0.4 <= value(text, "scheduler_run_duration_seconds_sum", task_id=g) < 5
    assert value(text, "scheduler_run_duration_seconds_bucket", task_id=g, le="+Inf") is None  # no buckets per task
    # Buckets over all tasks: good's two runs of 0.2 s and bad's quick one.
    assert value(text, "scheduler_run_duration_all_tasks_seconds_bucket", le="0.1") == 1
    assert value(text, "scheduler_run_duration_all_tasks_seconds_bucket", le="+Inf") == 3
    assert value(text, "scheduler_run_start_lag_seconds_bucket", trigger="manual", le="+Inf") == 3

    assert value(text, "scheduler_tasks", status="success") == 1
    assert value(text, "scheduler_tasks", status="failed") == 1
    assert value(text, "scheduler_tasks", status="pending") == 1
    assert value(text, "scheduler_tasks", status="running") == 0
    assert value(text, "scheduler_tasks_enabled") == 3
    assert value(text, "scheduler_task_info", task_id=g, task="good") == 1
    assert value(text, "scheduler_alerts", status="pending") == 0

    ticks = value(text, "scheduler_ticks_total")
    # The engine keeps ticking while we scrape: one tick may be counted in one and not yet in the other.
    assert ticks >= 1 and abs(value(text, "scheduler_tick_duration_seconds_count") - ticks) <= 1
    assert value(text, "scheduler_claims_lost_total") == 0
    last_tick = value(text, "scheduler_last_tick_timestamp_seconds")
    assert abs(last_tick - time.time()) < 10


def test_claims_lost_and_tick_errors_are_counted(app, client):
    metrics = metrics_of(app)
    metrics.on_tick_finished(app, report=TickReport(lost_claims=2, errors=1), duration_seconds=0.01)
    metrics.on_tick_finished(app, report=TickReport(lost_claims=1), duration_seconds=0.02)
    text = scrape(client)
    assert value(text, "scheduler_claims_lost_total") == 3
    assert value(text, "scheduler_tick_errors_total") == 1
    assert value(text, "scheduler_ticks_total") == 2
    assert value(text, "scheduler_tick_duration_seconds_sum") == pytest.approx(0.03)
    assert value(text, "scheduler_last_tick_timestamp_seconds") is None  # no tick in the database yet


def test_a_database_outage_is_a_metric_not_an_error(app, client, monkeypatch):
    def unreachable(self):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(DatabaseCollector, "_read", unreachable)
    text = scrape(client)
    assert value(text, "scheduler_database_up") == 0
    assert value(text, "scheduler_ticks_total") == 0


def test_openmetrics_when_asked_for(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_the_exposition_passes_promtool(app, client, engine, make_task, wait_until, runs_of):
    task = make_task(name='quote " backslash \\ newline \n and ünïcode')
    client.post(f"/api/tasks/{task['id']}/run/")
    wait_until(lambda: runs_of(task["id"])[-1].status == "success")
    text = wait_until(lambda: (lambda t: value(t, "scheduler_run_start_lag_seconds_count", trigger="manual")
                               and t)(scrape(client)))
    assert value(text, "scheduler_task_info", task_id=str(task["id"]), task=task["name"]) == 1
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_several_gunicorn_workers_answer_the_same_counts(tmp_path, wait_until):
    """PROMETHEUS_MULTIPROC_DIR: whichever worker answers a scrape, it counts every worker's runs."""
    database = f"sqlite:///{tmp_path / 'workers.db'}"
    app = make_app(database)
    reset_database(app)
    with app.app_context():
        token = issue_token("metrics")
        db.session.remove()
        db.engine.dispose()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    port = free_port()
    env = {key: val for key, val in os.environ.items() if key != "TEST_DATABASE_URL"}
    env.update(PYTHONPATH=str(REPO), DATABASE_URL=database, PROMETHEUS_MULTIPROC_DIR=str(multiproc),
               SCHEDULER_TICK_SECONDS="1", SCHEDULER_SHUTDOWN_GRACE_SECONDS="0")
    log = open(tmp_path / "gunicorn.log", "wb")
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still starting
                pass
            assert time.monotonic() < deadline and gunicorn.poll() is None, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.1)
        created = requests.post(f"{base}/api/tasks/", headers=auth, timeout=10, json={
            "name": "every-second", "cron_expression": "* * * * * *", "concurrency_policy": "allow",
            "action": {"type": "shell", "command": "true"},
        })
        assert created.status_code == 201, created.text
        # Until two slots have run (a fixed sleep of 2.5 s left a busy machine half a second for the second).
        wait_until(lambda: requests.get(f"{base}/api/stats/", headers=auth, timeout=10).json()
                   ["runs"]["by_status"]["success"] >= 2)
        requests.post(f"{base}/api/tasks/{created.json()['id']}/toggle/", headers=auth, timeout=10)
        deadline = time.monotonic() + 10
        while True:  # until the last runs have recorded their outcome
            stats = requests.get(f"{base}/api/stats/", headers=auth, timeout=10).json()
            # Runs, not the task's status: under `allow` one run's outcome can set it while another runs.
            if stats["runs"]["by_status"]["running"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        succeeded = stats["runs"]["by_status"]["success"]
        assert succeeded >= 2 and stats["runs"]["total"] == succeeded
        task_id = str(created.json()["id"])

        def finished_count() -> float | None:
            text = requests.get(f"{base}/metrics", headers={**auth, "Connection": "close"}, timeout=10).text
            return value(text, "scheduler_runs_finished_total", task_id=task_id, outcome="success")

        # A worker counts a run just after it committed the outcome that the stats read: wait for the last count.
        wait_until(lambda: finished_count() == succeeded)
        for _ in range(8):  # a new connection each time: either worker may answer
            text = requests.get(f"{base}/metrics", headers={**auth, "Connection": "close"}, timeout=10).text
            assert value(text, "scheduler_runs_finished_total", task_id=task_id, outcome="success") == succeeded
            assert value(text, "scheduler_runs_started_total", task_id=task_id) == succeeded
            assert value(text, "scheduler_tasks", status="success") == 1
    finally:
        gunicorn.send_signal(signal.SIGINT)  # quick shutdown
        try:
            gunicorn.wait(timeout=30)
        finally:
            if gunicorn.poll() is None:
                gunicorn.kill()
            log.close()
    assert list(multiproc.glob("counter_*.db")), "no per-process metric files were written"


def test_per_task_counts_expose_exactly_what_the_client_instruments_would():
    """PerTaskRuns replaces prometheus-client children (2.2 KB per task) outside multiprocess mode:
    a scrape must not be able to tell the difference, in either exposition format."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, Counter, Summary, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from scheduler_service.ops.metrics import PerTaskRuns

    finished = [SimpleNamespace(task_id=task_id, status=status, duration_seconds=duration)
                for task_id, status, duration in [(7, "success", 0.25), (7, "failed", 1.5), (3, "success", None),
                                                  (7, "success", 0.5), (12, "failed", 2.0)]]
    started, skipped = [7, 3, 7, 12, 7], [3, 3, 12]

    ours = CollectorRegistry()
    per_task = PerTaskRuns()
    ours.register(per_task)
    per_task.add_started(started)
    per_task.add_finished(finished)
    per_task.add_skipped(skipped)

    client = CollectorRegistry()
    runs_started = Counter("scheduler_runs_started", "Runs this scheduler started, by task.", ["task_id"],
                           registry=client)
    slots_skipped = Counter("scheduler_slots_skipped",
                            "Slots logged as skipped (missed, concurrency, dependency gate), by task.", ["task_id"],
                            registry=client)
    runs_finished = Counter("scheduler_runs_finished",
                            "Runs whose outcome was recorded, by task and outcome (success or failed).",
                            ["task_id", "outcome"], registry=client)
    run_duration = Summary("scheduler_run_duration_seconds", "How long finished runs took, by task (sum and count).",
                           ["task_id"], registry=client)
    for task_id in sorted(started):
        runs_started.labels(str(task_id)).inc()
    for task_id in sorted(skipped):
        slots_skipped.labels(str(task_id)).inc()
    for run in sorted(finished, key=lambda run: (run.task_id, run.status)):
        runs_finished.labels(str(run.task_id), run.status).inc()
    for run in sorted(finished, key=lambda run: run.task_id):
        if run.duration_seconds is not None:
            run_duration.labels(str(run.task_id)).observe(run.duration_seconds)

    assert samples(generate_latest(ours).decode()) == samples(generate_latest(client).decode())
    assert samples(generate_latest(ours).decode())[("scheduler_runs_started_total", frozenset({("task_id", "7")}))] == 3
    assert generate_openmetrics(ours) == generate_openmetrics(client)


def test_pools_have_gauges_of_slots_running_and_waiting(app, client):
    assert client.post("/api/pools/", json={"name": "warehouse", "slots": 3}).status_code == 201
    task = make_task(client, pool="warehouse", cron_expression="0 0 1 1 *")
    add_run(app, task["id"], "pending", trigger="schedule")
    with app.app_context():
        db.session.execute(sa.update(Pool).where(Pool.name == "warehouse").values(running=2))
        db.session.commit()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scheduler_pool_slots{pool="warehouse"} 3.0' in text
    assert 'scheduler_pool_running{pool="warehouse"} 2.0' in text
    assert 'scheduler_pool_waiting{pool="warehouse"} 1.0' in text
