"""The SQLite file the service creates, and its -wal and -shm files, are readable by their owner only (0600).

SQLite-only by nature. The umask is set to the common 022 for each test, under which
SQLite alone would make a world-readable file.
"""
from __future__ import annotations

import logging.config
import os
import stat
from pathlib import Path

import flask
import pytest
import sqlalchemy as sa

from scheduler_service import create_app
from scheduler_service.config import SETTINGS
from scheduler_service.extensions import db
from scheduler_service.models import Task


@pytest.fixture
def env(monkeypatch):
    """No setting of the service in the environment, no scheduler, and a permissive umask."""
    for variable in SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SCHEDULER_ENABLED", "false")
    # migrations/env.py's fileConfig would disable pytest's loggers.
    monkeypatch.setattr(logging.config, "fileConfig", lambda *args, **kwargs: None)
    previous = os.umask(0o022)
    yield monkeypatch
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_a_task(app) -> None:
    with app.app_context():
        db.session.add(Task(name="t", cron_expression="* * * * *", action={"type": "shell", "command": "true"}))
        db.session.commit()


def assert_private_while_open(app, database: Path) -> None:
    """The file, and the WAL and shared-memory files that exist while a connection is open, are 0600."""
    with app.app_context():
        with db.engine.connect() as connection:
            connection.execute(sa.text("SELECT count(*) FROM task")).scalar_one()
            wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
            assert wal.exists() and shm.exists()
            assert (mode(database), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        db.session.remove()
        db.engine.dispose()
    assert mode(database) == 0o600


def test_the_default_file_in_the_instance_folder_is_0600_after_db_upgrade(env, tmp_path):
    instance = tmp_path / "instance"
    env.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    app = create_app()
    database = instance / "scheduler.db"
    assert not database.exists()

    upgraded = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert mode(database) == 0o600
    write_a_task(app)
    assert_private_while_open(app, database)


def test_a_database_url_file_is_0600_after_create_all(env, tmp_path):
    database = tmp_path / "data" / "service.db"
    database.parent.mkdir()
    env.setenv("DATABASE_URL", f"sqlite:///{database}")
    app = create_app()
    with app.app_context():
        db.create_all()
    assert mode(database) == 0o600
    write_a_task(app)
    assert_private_while_open(app, database)


def test_a_relative_database_url_is_0600_too(env, tmp_path):
    instance = tmp_path / "instance"  # Flask-SQLAlchemy puts a relative SQLite path there
    instance.mkdir()
    env.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    env.setenv("DATABASE_URL", "sqlite:///relative.db")
    app = create_app()
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    assert mode(instance / "relative.db") == 0o600


def test_an_existing_file_keeps_its_mode(env, tmp_path):
    database = tmp_path / "shared.db"
    database.touch()
    database.chmod(0o640)  # its owner's choice, such as a group that backs it up
    env.setenv("DATABASE_URL", f"sqlite:///{database}")
    app = create_app()
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    assert mode(database) == 0o640


def test_building_the_app_creates_no_file(env, tmp_path):
    """The file appears on first use, not when a command that never connects builds the app."""
    env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    create_app()
    assert not (tmp_path / "unused.db").exists()


def test_a_missing_folder_is_still_sqlites_own_error(env, tmp_path):
    env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    app = create_app()
    with app.app_context(), pytest.raises(sa.exc.OperationalError, match="unable to open database file"):
        db.create_all()
