"""CLI commands (contract: "Running it"): create-token, revoke-token, and no command but run/run-scheduler
ever starts the scheduler."""
from __future__ import annotations

import hashlib
import logging
import logging.config
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest
import sqlalchemy as sa

from scheduler_service import create_app
from scheduler_service.extensions import db, scheduler
from scheduler_service.models import ApiToken, Run, SchedulerState, Task

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_VARIABLES = (
    "DATABASE_URL", "SCHEDULER_ENABLED", "SCHEDULER_TICK_SECONDS", "SCHEDULER_MAX_WORKERS",
    "SHELL_ACTIONS_ENABLED", "SHELL_CONTAINMENT", "SHELL_MAX_PROCESSES", "RUN_OUTPUT_LIMIT_BYTES", "RUN_LEASE_SECONDS",
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS", "MAX_REQUEST_BYTES",
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def create_token(runner, name: str, *extra: str) -> str:
    result = runner.invoke(args=["create-token", name, *extra])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines, "create-token printed nothing"
    token = lines[-1].strip()
    assert token and " " not in token, result.stdout
    return token


def token_rows(app) -> list[dict]:
    with app.app_context():
        rows = db.session.execute(sa.select(ApiToken.__table__)).mappings().all()
        return [dict(row) for row in rows]


def get_tasks(app, token: str):
    return app.test_client().get("/api/tasks/", headers={"Authorization": f"Bearer {token}"})


# --- create-token / revoke-token -----------------------------------------------------------------


def test_create_token_prints_the_token_last_and_stores_only_its_hash(app, runner):
    token = create_token(runner, "ci")
    assert len(token) >= 20
    rows = token_rows(app)
    assert len(rows) == 1
    assert rows[0]["name"] == "ci"
    assert rows[0]["token_hash"] == sha256(token)
    for row in rows:
        for column, value in row.items():
            assert token not in str(value), f"the raw token is stored in api_token.{column}"


def test_tokens_are_distinct(app, runner):
    first = create_token(runner, "one")
    second = create_token(runner, "two")
    assert first != second
    assert {row["token_hash"] for row in token_rows(app)} == {sha256(first), sha256(second)}


def test_created_token_authenticates_until_revoked(app, runner):
    assert get_tasks(app, "not-a-token").status_code == 401
    token = create_token(runner, "ci")
    response = get_tasks(app, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["items"] == []

    result = runner.invoke(args=["revoke-token", "ci"])
    assert result.exit_code == 0, result.output
    assert "ci" in result.output
    assert get_tasks(app, token).status_code == 401
    assert token_rows(app) == []


def test_revoking_one_token_leaves_the_others_working(app, runner):
    keep = create_token(runner, "keep")
    drop = create_token(runner, "drop")
    assert runner.invoke(args=["revoke-token", "drop"]).exit_code == 0
    assert get_tasks(app, drop).status_code == 401
    assert get_tasks(app, keep).status_code == 200


def test_create_token_with_an_existing_name_fails_clearly(app, runner):
    token = create_token(runner, "ci")
    result = runner.invoke(args=["create-token", "ci"])
    assert result.exit_code != 0
    message = result.output.lower()
    assert "ci" in message and "exist" in message, result.output
    assert "Traceback" not in result.output
    # the first token is untouched and still the only one
    rows = token_rows(app)
    assert [(row["name"], row["token_hash"]) for row in rows] == [("ci", sha256(token))]
    assert get_tasks(app, token).status_code == 200


def test_a_name_can_be_reused_after_revoking(app, runner):
    old = create_token(runner, "ci")
    assert runner.invoke(args=["revoke-token", "ci"]).exit_code == 0
    new = create_token(runner, "ci")
    assert new != old
    assert get_tasks(app, old).status_code == 401
    assert get_tasks(app, new).status_code == 200


def test_create_token_if_none_creates_only_when_no_token_exists(app, runner):
    first = create_token(runner, "bootstrap", "--if-none")
    assert [row["name"] for row in token_rows(app)] == ["bootstrap"]
    assert get_tasks(app, first).status_code == 200

    again = runner.invoke(args=["create-token", "other", "--if-none"])
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == "", "no token should be printed when none is created"
    same_name = runner.invoke(args=["create-token", "bootstrap", "--if-none"])
    assert same_name.exit_code == 0, same_name.output
    assert [row["name"] for row in token_rows(app)] == ["bootstrap"]
    assert token_rows(app)[0]["token_hash"] == sha256(first)


def test_create_token_if_none_counts_any_token(app, runner):
    create_token(runner, "someone")
    assert runner.invoke(args=["create-token", "bootstrap", "--if-none"]).exit_code == 0
    assert [row["name"] for row in token_rows(app)] == ["someone"]


def test_revoke_unknown_token_fails(app, runner):
    create_token(runner, "ci")
    result = runner.invoke(args=["revoke-token", "nobody"])
    assert result.exit_code != 0
    assert "nobody" in result.output
    assert "Traceback" not in result.output
    assert [row["name"] for row in token_rows(app)] == ["ci"]


def test_revoke_twice_fails_the_second_time(app, runner):
    create_token(runner, "ci")
    assert runner.invoke(args=["revoke-token", "ci"]).exit_code == 0
    assert runner.invoke(args=["revoke-token", "ci"]).exit_code != 0


def test_create_token_needs_a_name(app, runner):
    result = runner.invoke(args=["create-token"])
    assert result.exit_code != 0
    assert token_rows(app) == []


# --- the scheduler is started by run/run-scheduler only ----------------------------------------


def make_quiet_app(url: str, **overrides):
    config = {"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False, "TESTING": True}
    config.update(overrides)
    return create_app(config)


@pytest.mark.parametrize(
    "command", ["db", "upgrade", "create-token", "revoke-token", "routes", "shell", "run-scheduler"]
)
def test_create_app_in_a_non_run_command_does_not_start_the_scheduler(tmp_path, command):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with click.Context(click.Command(command), info_name=command):
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": True, "TESTING": True})
    try:
        assert app.extensions["scheduler"] is None
    finally:
        scheduler.stop(app)


def test_create_app_in_the_run_command_starts_the_scheduler(tmp_path):
    """The control for the test above: the same app under `flask run` does start it."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    setup = make_quiet_app(url)
    with setup.app_context():
        db.create_all()
        db.engine.dispose()
    command = click.Command("run", params=[click.Option(["--reload/--no-reload"], default=False)])
    with click.Context(command, info_name="run") as ctx:
        ctx.params["reload"] = False
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": True, "TESTING": True})
    try:
        assert app.extensions["scheduler"] is not None
    finally:
        scheduler.stop(app)
        with app.app_context():
            db.engine.dispose()


def clean_environ(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    env.update(values)
    return env


def flask_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_db_upgrade_and_create_token_never_run_due_tasks(tmp_path, monkeypatch):
    database = tmp_path / "sched.db"
    url = f"sqlite:///{database}"
    marker = tmp_path / "task-ran"
    env = clean_environ(
        PYTHONPATH=str(REPO_ROOT),
        DATABASE_URL=url,
        SCHEDULER_ENABLED="true",
        SCHEDULER_TICK_SECONDS="0.1",
        RUN_LEASE_SECONDS="1",
    )

    # Schema first, in this process (migrations/env.py's fileConfig would disable pytest's loggers).
    monkeypatch.setattr(logging.config, "fileConfig", lambda *args, **kwargs: None)
    app = make_quiet_app(url)
    upgraded = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output

    # A task that is due right now and would run at once in a scheduling process.
    due = datetime.now(timezone.utc) - timedelta(seconds=5)
    with app.app_context():
        task = Task(
            name="due", cron_expression="* * * * *", misfire_grace_seconds=3600,
            action={"type": "shell", "command": f"touch {marker}"}, next_run_at=due,
        )
        db.session.add(task)
        db.session.commit()
        task_id = task.id
        db.session.remove()
        db.engine.dispose()

    again = flask_cli(env, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    created = flask_cli(env, "create-token", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]

    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar() == 0
        ticks = db.session.execute(sa.select(SchedulerState.last_tick_at)).scalars().all()
        assert all(tick is None for tick in ticks), ticks
        task = db.session.get(Task, task_id)
        assert task.status == "pending"
        assert task.active_runs == 0
        assert task.last_run_at is None
        assert task.next_run_at == due
        assert db.session.execute(sa.select(ApiToken.token_hash)).scalars().all() == [sha256(token)]
        db.session.remove()
        db.engine.dispose()
    assert not marker.exists(), "a CLI command executed a due task"
