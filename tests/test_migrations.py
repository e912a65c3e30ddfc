"""`flask --app wsgi db upgrade` (Flask-Migrate) creates and upgrades the schema, on SQLite and PostgreSQL.

PostgreSQL tests use a database of their own, created and dropped here, never the shared test database.
"""
from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.config import Config

from scheduler_service import MIGRATIONS_DIR, create_app
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task  # noqa: F401  (registers every model on db.metadata)

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
SETTINGS_VARIABLES = (
    "DATABASE_URL", "SCHEDULER_ENABLED", "SCHEDULER_TICK_SECONDS", "SCHEDULER_MAX_WORKERS",
    "SHELL_ACTIONS_ENABLED", "SHELL_CONTAINMENT", "SHELL_MAX_PROCESSES", "RUN_OUTPUT_LIMIT_BYTES", "RUN_LEASE_SECONDS",
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS", "MAX_REQUEST_BYTES", "METRICS_PUBLIC", "PROMETHEUS_MULTIPROC_DIR",
    "ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_SECRET", "ALERT_RETRY_BASE_SECONDS", "RUN_RETENTION_DAYS",
    "RUN_RETENTION_PER_TASK", "RETENTION_FIRST_PASS_DELAY_SECONDS", "RETENTION_INTERVAL_SECONDS", "LOG_FORMAT",
    "SECRET_KEY", "SESSION_COOKIE_SECURE", "PYTHON_ACTIONS_MODULES", "HTTP_ACTIONS_DENY_NETWORKS", "SHELL_INHERIT_ENV",
)
APP_TABLES = {
    "task", "run", "task_dependency", "api_token", "scheduler_state", "admin_user", "alert", "task_run_counts",
    "audit_entry", "admin_session", "admin_login_failure", "calendar", "pool", "run_cancel",
}
ALL_TABLES = APP_TABLES | {"alembic_version"}

# migrations/env.py is Flask-Migrate's template, which tries the deprecated db.get_engine() first.
pytestmark = pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    return config


@pytest.fixture(scope="module")
def postgres_database():
    """A PostgreSQL database of this module's own (the shared test database is never touched)."""
    if not POSTGRES_URL:
        yield None
        return
    import psycopg

    base = sa.engine.make_url(POSTGRES_URL)
    name = f"sched_migrations_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite"] + (["postgresql"] if POSTGRES_URL else []))
def empty_database(request, tmp_path, postgres_database):
    """The URL of an empty database of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    import psycopg

    with psycopg.connect(
        postgres_database.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    ) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    return postgres_database.render_as_string(hide_password=False)


def flask_db_subprocess(url: str, *args: str) -> subprocess.CompletedProcess:
    """The real thing: `python -m flask --app wsgi db ...` in a new process."""
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    env.update(PYTHONPATH=str(REPO_ROOT), DATABASE_URL=url, SCHEDULER_ENABLED="false")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"flask db {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def flask_db(monkeypatch):
    """The same `db ...` commands in this process (fast), through the app's CLI.

    migrations/env.py calls logging.config.fileConfig, which would disable every logger
    of this pytest process; it is switched off here and only here.
    """
    monkeypatch.setattr(logging.config, "fileConfig", lambda *args, **kwargs: None)

    def run(url: str, *args: str):
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False, "TESTING": True})
        try:
            result = app.test_cli_runner().invoke(args=["db", *args])
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        assert result.exit_code == 0, f"db {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
        return result

    return run


def connect(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


@contextmanager
def connection_to(url: str, *, write: bool = False) -> Iterator[sa.Connection]:
    """A connection of its own (committed at the end when ``write``), closed with its engine."""
    engine = connect(url)
    try:
        with (engine.begin() if write else engine.connect()) as connection:
            yield connection
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = connect(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def schema_differences(url: str) -> list:
    """What `flask db check` compares: the models against the migrated database."""
    with connection_to(url) as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        return compare_metadata(context, db.metadata)


def current_revision(url: str) -> str | None:
    with connection_to(url) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrations_have_one_head():
    heads = ScriptDirectory.from_config(_alembic_config()).get_heads()
    assert len(heads) == 1, heads


def test_flask_db_upgrade_on_an_empty_database_creates_every_table_matching_the_models(
    empty_database, flask_db
):
    assert table_names(empty_database) == set()
    flask_db_subprocess(empty_database, "upgrade")
    assert table_names(empty_database) == ALL_TABLES
    assert {table.name for table in db.metadata.sorted_tables} == APP_TABLES
    assert current_revision(empty_database) == head_revision()
    assert schema_differences(empty_database) == []
    flask_db(empty_database, "check")  # Flask-Migrate's own "no new upgrade operations" check


def test_upgrade_is_idempotent_on_an_up_to_date_database(empty_database, flask_db):
    flask_db(empty_database, "upgrade")
    flask_db(empty_database, "upgrade")
    assert table_names(empty_database) == ALL_TABLES
    assert current_revision(empty_database) == head_revision()


def test_upgrade_again_keeps_existing_data(empty_database, flask_db):
    flask_db(empty_database, "upgrade")
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    with connection_to(empty_database, write=True) as connection:
        task_id = connection.execute(
            sa.insert(Task.__table__).values(
                name="nightly", cron_expression="0 2 * * *",
                action={"type": "shell", "command": "echo hi"}, next_run_at=slot,
            ).returning(Task.__table__.c.id)
        ).scalar_one()
        connection.execute(
            sa.insert(Run.__table__).values(
                task_id=task_id, trigger="schedule", status="success", scheduled_for=slot,
                started_at=slot, finished_at=slot, exit_code=0, output="hi\n",
            )
        )

    flask_db(empty_database, "upgrade")

    with connection_to(empty_database) as connection:
        tasks = connection.execute(sa.select(Task.__table__)).mappings().all()
        runs = connection.execute(sa.select(Run.__table__)).mappings().all()
    assert [(t["id"], t["name"], t["action"], t["next_run_at"]) for t in tasks] == [
        (task_id, "nightly", {"type": "shell", "command": "echo hi"}, slot)
    ]
    assert [(r["task_id"], r["status"], r["output"], r["scheduled_for"]) for r in runs] == [
        (task_id, "success", "hi\n", slot)
    ]
    assert current_revision(empty_database) == head_revision()


def test_downgrade_to_base_then_upgrade(empty_database, flask_db):
    flask_db(empty_database, "upgrade")
    flask_db(empty_database, "downgrade", "base")
    assert table_names(empty_database) & APP_TABLES == set()
    assert current_revision(empty_database) is None

    flask_db(empty_database, "upgrade")
    assert table_names(empty_database) == ALL_TABLES
    assert current_revision(empty_database) == head_revision()
    assert schema_differences(empty_database) == []


SCHEDULE_COLUMNS = {"interval_seconds", "run_at", "schedule_anchor", "calendar", "jitter_seconds", "catchup", "due_at"}
RUN_CONTROL_COLUMNS = {"pool", "pause_note", "paused_until", "paused_by", "pause_after_failures",
                       "consecutive_failures"}


def table_before_run_control() -> sa.Table:
    """The task table as it was before the run control migration (the model's defaults kept)."""
    columns = [column._copy() for column in Task.__table__.columns if column.name not in RUN_CONTROL_COLUMNS]
    return sa.Table("task", sa.MetaData(), *columns)


def table_before_schedules() -> sa.Table:
    """The task table as it was before the schedules migration (the model's defaults kept)."""
    columns = [column._copy() for column in table_before_run_control().columns if column.name not in SCHEDULE_COLUMNS]
    return sa.Table("task", sa.MetaData(), *columns)


def test_the_run_counts_migration_counts_the_runs_already_there(empty_database, flask_db):
    flask_db(empty_database, "upgrade", "f29b84058cde")  # the revision before task_run_counts
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    with connection_to(empty_database, write=True) as connection:
        old_task = table_before_schedules()
        task_ids = connection.execute(
            sa.insert(old_task).returning(old_task.c.id),
            [{"name": name, "cron_expression": "0 2 * * *", "action": {"type": "shell", "command": "true"}}
             for name in ("busy", "idle")],
        ).scalars().all()
        runs = [("success", 1.5), ("failed", 2.25), ("skipped", None), ("running", None), ("pending", None),
                ("success", 0.000001)]
        connection.execute(sa.insert(Run.__table__), [
            {"task_id": task_ids[0], "trigger": "schedule", "status": status, "attempt": 1,
             "scheduled_for": slot + timedelta(minutes=n), "started_at": slot if status != "pending" else None,
             "finished_at": slot if status in ("success", "failed", "skipped") else None,
             "duration_seconds": duration, "output": "", "message": ""}
            for n, (status, duration) in enumerate(runs)
        ])

    flask_db(empty_database, "upgrade")

    with connection_to(empty_database) as connection:
        counts = connection.execute(sa.text("SELECT * FROM task_run_counts")).mappings().all()
    assert [dict(row) for row in counts] == [{
        "task_id": task_ids[0], "pending": 1, "running": 1, "success": 2, "failed": 1, "skipped": 1,
        "timed_runs": 3, "timed_microseconds": 3_750_001,
    }]


def test_the_governance_migration_makes_existing_tokens_admin_and_keeps_them(empty_database, flask_db):
    flask_db(empty_database, "upgrade", "84ccb9b673a8")  # the revision before token scopes
    created = datetime(2026, 11, 28, 2, 0)
    with connection_to(empty_database, write=True) as connection:
        connection.execute(sa.text(
            "INSERT INTO api_token (name, token_hash, created_at) VALUES ('ops', :digest, :created)"
        ), {"digest": "a" * 64, "created": created})

    flask_db(empty_database, "upgrade")

    with connection_to(empty_database) as connection:
        rows = connection.execute(sa.text(
            "SELECT name, token_hash, scope, created_at, last_used_at FROM api_token"
        )).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert str(row.pop("created_at")).startswith("2026-11-28 02:00:00")  # SQLite hands raw text back
    assert row == {"name": "ops", "token_hash": "a" * 64, "scope": "admin", "last_used_at": None}


def test_the_schedules_migration_keeps_every_task_a_cron_task_due_when_it_was(empty_database, flask_db):
    flask_db(empty_database, "upgrade", "43a6f76f4dbf")  # the revision before schedules
    created = datetime(2026, 11, 1, 9, 30, 15, tzinfo=timezone.utc)
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    old_task = table_before_schedules()
    with connection_to(empty_database, write=True) as connection:
        connection.execute(sa.insert(old_task), [
            {"name": "nightly", "cron_expression": "0 2 * * *", "action": {"type": "shell", "command": "true"},
             "next_run_at": slot, "created_at": created, "updated_at": created},
            {"name": "off", "cron_expression": "0 3 * * *", "action": {"type": "shell", "command": "true"},
             "enabled": False, "next_run_at": None, "created_at": created, "updated_at": created},
        ])

    flask_db(empty_database, "upgrade")

    with connection_to(empty_database) as connection:
        tasks = connection.execute(sa.select(Task.__table__).order_by(Task.__table__.c.id)).mappings().all()
    assert [
        (t["name"], t["cron_expression"], t["interval_seconds"], t["run_at"], t["calendar"], t["jitter_seconds"],
         t["catchup"], t["schedule_anchor"], t["next_run_at"], t["due_at"]) for t in tasks
    ] == [
        ("nightly", "0 2 * * *", None, None, None, 0, "latest", created, slot, slot),
        ("off", "0 3 * * *", None, None, None, 0, "latest", created, None, None),
    ]
    assert schema_differences(empty_database) == []


def test_the_run_control_migration_keeps_every_task_and_run_with_no_pool_and_not_paused(empty_database, flask_db):
    flask_db(empty_database, "upgrade", "8b2ddc5ef52a")  # the revision before run control
    created = datetime(2026, 11, 1, 9, 30, 15, tzinfo=timezone.utc)
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    old_task = table_before_run_control()
    old_run = sa.Table("run", old_task.metadata,
                       *[column._copy() for column in Run.__table__.columns if column.name != "pool"])
    with connection_to(empty_database, write=True) as connection:
        for task in [  # one insert each: the rows give different columns
            {"name": "nightly", "cron_expression": "0 2 * * *", "action": {"type": "shell", "command": "true"},
             "concurrency_policy": "allow", "max_retries": 5, "status": "failed", "retry_count": 2,
             "last_outcome": "failed", "last_run_at": slot - timedelta(days=1), "next_run_at": slot, "due_at": slot,
             "created_at": created, "updated_at": created},
            {"name": "off", "cron_expression": "0 3 * * *", "action": {"type": "http", "url": "http://example.com/"},
             "enabled": False, "next_run_at": None, "created_at": created, "updated_at": created},
            {"name": "every", "cron_expression": None, "interval_seconds": 90, "schedule_anchor": created,
             "action": {"type": "python", "callable": "json:dumps", "args": [1]}, "jitter_seconds": 5,
             "catchup": "all", "status": "running", "active_runs": 1, "next_run_at": slot,
             "due_at": slot + timedelta(seconds=3), "created_at": created, "updated_at": created},
        ]:
            connection.execute(sa.insert(old_task).values(**task))
        task_ids = connection.execute(sa.select(old_task.c.id).order_by(old_task.c.id)).scalars().all()
        for run in [
            {"task_id": task_ids[0], "trigger": "schedule", "status": "failed", "attempt": 3,
             "scheduled_for": slot - timedelta(days=1), "started_at": slot - timedelta(days=1),
             "finished_at": slot - timedelta(days=1) + timedelta(seconds=2), "duration_seconds": 2.0,
             "exit_code": 1, "output": "boom\n", "message": "exit code 1", "created_at": created},
            {"task_id": task_ids[2], "trigger": "manual", "status": "running", "attempt": 1, "scheduled_for": slot,
             "started_at": slot, "owner": "host:1:engine", "heartbeat_at": slot, "output": "", "message": "",
             "created_at": created},
            {"task_id": task_ids[2], "trigger": "schedule", "status": "pending", "attempt": 1,
             "scheduled_for": slot + timedelta(seconds=90), "output": "", "message": "", "created_at": created},
        ]:
            connection.execute(sa.insert(old_run).values(**run))
        tasks_before = [dict(row) for row in connection.execute(
            sa.select(old_task).order_by(old_task.c.id)).mappings().all()]
        runs_before = [dict(row) for row in connection.execute(
            sa.select(old_run).order_by(old_run.c.id)).mappings().all()]

    flask_db(empty_database, "upgrade")

    with connection_to(empty_database) as connection:
        tasks = [dict(row) for row in connection.execute(
            sa.select(Task.__table__).order_by(Task.__table__.c.id)).mappings().all()]
        runs = [dict(row) for row in connection.execute(
            sa.select(Run.__table__).order_by(Run.__table__.c.id)).mappings().all()]
    assert [t["name"] for t in tasks] == ["nightly", "off", "every"]
    assert [{name: t[name] for name in tasks_before[0]} for t in tasks] == tasks_before
    assert [{name: t[name] for name in RUN_CONTROL_COLUMNS} for t in tasks] == [
        {"pool": None, "pause_note": None, "paused_until": None, "paused_by": None, "pause_after_failures": 0,
         "consecutive_failures": 0}
    ] * 3
    assert [t["enabled"] for t in tasks] == [True, False, True]  # a disabled task stays disabled, not paused
    assert len(runs) == 3
    assert [{name: r[name] for name in runs_before[0]} for r in runs] == runs_before
    assert [r["pool"] for r in runs] == [None, None, None]
    assert schema_differences(empty_database) == []
