"""Settings from the environment (contract: "Configuration") and what create_app makes of them."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import flask
import pytest
import sqlalchemy as sa

import scheduler_service
from scheduler_service import create_app
from scheduler_service.config import DEFAULT_FROM_SHELL, SETTINGS, ConfigError, load_settings
from scheduler_service.extensions import db
from scheduler_service.models import Run

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "SQLALCHEMY_DATABASE_URI": None,  # create_app turns this into a SQLite file in the instance folder
    "SCHEDULER_ENABLED": True,
    "SCHEDULER_TICK_SECONDS": 60,
    "SCHEDULER_MAX_WORKERS": 8,
    "SHELL_ACTIONS_ENABLED": True,
    "SHELL_CONTAINMENT": "auto",
    "SHELL_MAX_PROCESSES": 1024,
    "RUN_OUTPUT_LIMIT_BYTES": 65536,
    "RUN_LEASE_SECONDS": 30,
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS": 30,
    "MAX_CONTENT_LENGTH": 1048576,
    "METRICS_PUBLIC": False,
    "PROMETHEUS_MULTIPROC_DIR": None,
    "ALERT_WEBHOOK_URL": None,
    "ALERT_WEBHOOK_SECRET": None,
    "ALERT_RETRY_BASE_SECONDS": 15,
    "RUN_RETENTION_DAYS": 90,
    "RUN_RETENTION_PER_TASK": 10000,
    "RETENTION_FIRST_PASS_DELAY_SECONDS": 60,
    "RETENTION_INTERVAL_SECONDS": 300,
    "LOG_FORMAT": "text",
    "SECRET_KEY": None,
    "SESSION_COOKIE_SECURE": False,
    # Settled by create_app once SHELL_ACTIONS_ENABLED is known (test_python_modules_default_follows_shell).
    "PYTHON_ACTIONS_MODULES": DEFAULT_FROM_SHELL,
    "HTTP_ACTIONS_DENY_NETWORKS": tuple(
        ipaddress.ip_network(cidr) for cidr in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
    ),
    "SHELL_INHERIT_ENV": False,
}

# environment variable -> the Flask config key it sets
KEY = {
    "DATABASE_URL": "SQLALCHEMY_DATABASE_URI",
    "SCHEDULER_ENABLED": "SCHEDULER_ENABLED",
    "SCHEDULER_TICK_SECONDS": "SCHEDULER_TICK_SECONDS",
    "SCHEDULER_MAX_WORKERS": "SCHEDULER_MAX_WORKERS",
    "SHELL_ACTIONS_ENABLED": "SHELL_ACTIONS_ENABLED",
    "SHELL_CONTAINMENT": "SHELL_CONTAINMENT",
    "SHELL_MAX_PROCESSES": "SHELL_MAX_PROCESSES",
    "RUN_OUTPUT_LIMIT_BYTES": "RUN_OUTPUT_LIMIT_BYTES",
    "RUN_LEASE_SECONDS": "RUN_LEASE_SECONDS",
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS": "SCHEDULER_SHUTDOWN_GRACE_SECONDS",
    "MAX_REQUEST_BYTES": "MAX_CONTENT_LENGTH",
    "METRICS_PUBLIC": "METRICS_PUBLIC",
    "PROMETHEUS_MULTIPROC_DIR": "PROMETHEUS_MULTIPROC_DIR",
    "ALERT_WEBHOOK_URL": "ALERT_WEBHOOK_URL",
    "ALERT_WEBHOOK_SECRET": "ALERT_WEBHOOK_SECRET",
    "ALERT_RETRY_BASE_SECONDS": "ALERT_RETRY_BASE_SECONDS",
    "RUN_RETENTION_DAYS": "RUN_RETENTION_DAYS",
    "RUN_RETENTION_PER_TASK": "RUN_RETENTION_PER_TASK",
    "RETENTION_FIRST_PASS_DELAY_SECONDS": "RETENTION_FIRST_PASS_DELAY_SECONDS",
    "RETENTION_INTERVAL_SECONDS": "RETENTION_INTERVAL_SECONDS",
    "LOG_FORMAT": "LOG_FORMAT",
    "SECRET_KEY": "SECRET_KEY",
    "SESSION_COOKIE_SECURE": "SESSION_COOKIE_SECURE",
    "PYTHON_ACTIONS_MODULES": "PYTHON_ACTIONS_MODULES",
    "HTTP_ACTIONS_DENY_NETWORKS": "HTTP_ACTIONS_DENY_NETWORKS",
    "SHELL_INHERIT_ENV": "SHELL_INHERIT_ENV",
}
BOOLEANS = ["SCHEDULER_ENABLED", "SHELL_ACTIONS_ENABLED", "SESSION_COOKIE_SECURE", "SHELL_INHERIT_ENV"]


def clean_environ(**values: str) -> dict[str, str]:
    """os.environ without any of the service's settings, plus ``values``."""
    env = {name: value for name, value in os.environ.items() if name not in KEY}
    env.update(values)
    return env


def assert_one_line_naming(message: str, variable: str) -> None:
    assert message.strip(), "empty error message"
    assert "\n" not in message.strip(), f"error is not one line: {message!r}"
    assert variable in message, f"error does not name {variable}: {message!r}"


# --- load_settings ---------------------------------------------------------------------------


def test_every_documented_variable_is_a_setting():
    assert set(SETTINGS) == set(KEY)


def test_defaults_with_an_empty_environment():
    assert load_settings({}) == DEFAULTS


def test_unrelated_variables_are_ignored():
    assert load_settings({"PATH": "/bin", "FLASK_APP": "x", "SCHEDULER_TICKS": "abc"}) == DEFAULTS


@pytest.mark.parametrize("variable", BOOLEANS)
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("true", True), ("TRUE", True), ("True", True), ("1", True), ("yes", True), ("YES", True), ("Yes", True),
        ("false", False), ("FALSE", False), ("False", False), ("0", False), ("no", False), ("NO", False),
        ("nO", False),
    ],
)
def test_booleans_accept_true_false_1_0_yes_no_any_case(variable, raw, expected):
    settings = load_settings({variable: raw})
    assert settings[KEY[variable]] is expected
    # the other settings keep their defaults
    assert {k: v for k, v in settings.items() if k != KEY[variable]} == {
        k: v for k, v in DEFAULTS.items() if k != KEY[variable]
    }


@pytest.mark.parametrize(
    "variable, raw, expected",
    [
        ("SCHEDULER_MAX_WORKERS", "1", 1),
        ("SCHEDULER_MAX_WORKERS", "32", 32),
        ("RUN_OUTPUT_LIMIT_BYTES", "1", 1),
        ("RUN_OUTPUT_LIMIT_BYTES", "1000000", 1000000),
        ("SCHEDULER_SHUTDOWN_GRACE_SECONDS", "0", 0),
        ("SCHEDULER_SHUTDOWN_GRACE_SECONDS", "120", 120),
        ("MAX_REQUEST_BYTES", "1", 1),
        ("MAX_REQUEST_BYTES", "2048", 2048),
        ("MAX_REQUEST_BYTES", " 4096 ", 4096),
    ],
)
def test_integers(variable, raw, expected):
    value = load_settings({variable: raw})[KEY[variable]]
    assert value == expected
    assert isinstance(value, int) and not isinstance(value, bool)


@pytest.mark.parametrize("variable", ["SCHEDULER_TICK_SECONDS", "RUN_LEASE_SECONDS"])
@pytest.mark.parametrize("raw, expected", [("5", 5), ("0.5", 0.5), ("90", 90), ("1e1", 10), (" 2 ", 2)])
def test_positive_numbers(variable, raw, expected):
    assert load_settings({variable: raw})[KEY[variable]] == pytest.approx(expected)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite://", "sqlite://"),
        ("postgresql+psycopg://u:p@db.example:5432/sched", "postgresql+psycopg://u:p@db.example:5432/sched"),
        ("postgres://u:p@db.example:5432/sched", "postgresql+psycopg://u:p@db.example:5432/sched"),
        ("postgresql://u:p@db.example/sched", "postgresql+psycopg://u:p@db.example/sched"),
    ],
)
def test_database_url(raw, expected):
    url = load_settings({"DATABASE_URL": raw})["SQLALCHEMY_DATABASE_URI"]
    assert url == expected
    assert sa.engine.make_url(url).drivername == sa.engine.make_url(expected).drivername


def test_postgres_urls_get_the_psycopg_driver_that_sqlalchemy_can_load():
    url = load_settings({"DATABASE_URL": "postgres://u@h/d"})["SQLALCHEMY_DATABASE_URI"]
    parsed = sa.engine.make_url(url)
    assert parsed.get_backend_name() == "postgresql"
    assert parsed.get_driver_name() == "psycopg"
    assert parsed.get_dialect().driver == "psycopg"


@pytest.mark.parametrize(
    "variable, raw",
    [
        ("SCHEDULER_TICK_SECONDS", "abc"),
        ("SCHEDULER_TICK_SECONDS", "0"),
        ("SCHEDULER_TICK_SECONDS", "-1"),
        ("SCHEDULER_TICK_SECONDS", "nan"),
        ("SCHEDULER_TICK_SECONDS", "inf"),
        ("SCHEDULER_TICK_SECONDS", "1,5"),
        ("RUN_LEASE_SECONDS", "0"),
        ("RUN_LEASE_SECONDS", "-30"),
        ("RUN_LEASE_SECONDS", "soon"),
        ("SCHEDULER_MAX_WORKERS", "0"),
        ("SCHEDULER_MAX_WORKERS", "-3"),
        ("SCHEDULER_MAX_WORKERS", "2.5"),
        ("SCHEDULER_MAX_WORKERS", "eight"),
        ("RUN_OUTPUT_LIMIT_BYTES", "0"),
        ("RUN_OUTPUT_LIMIT_BYTES", "64k"),
        ("SCHEDULER_SHUTDOWN_GRACE_SECONDS", "-1"),
        ("SCHEDULER_SHUTDOWN_GRACE_SECONDS", "ten"),
        ("MAX_REQUEST_BYTES", "-1"),
        ("MAX_REQUEST_BYTES", "0"),
        ("MAX_REQUEST_BYTES", "1MB"),
        ("SCHEDULER_ENABLED", "maybe"),
        ("SCHEDULER_ENABLED", "2"),
        ("SCHEDULER_ENABLED", "on"),
        ("SHELL_ACTIONS_ENABLED", "y"),
        ("SHELL_ACTIONS_ENABLED", "truee"),
        ("SHELL_CONTAINMENT", "docker"),
        ("SHELL_MAX_PROCESSES", "0"),
        ("SHELL_MAX_PROCESSES", "lots"),
        ("DATABASE_URL", "nonsense"),
        ("DATABASE_URL", "/var/lib/scheduler.db"),
    ],
)
def test_bad_values_raise_a_one_line_config_error_naming_the_variable(variable, raw):
    with pytest.raises(ConfigError) as excinfo:
        load_settings({variable: raw})
    assert_one_line_naming(str(excinfo.value), variable)


def test_a_bad_value_with_a_newline_still_gives_one_line():
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"SCHEDULER_TICK_SECONDS": "5\nTraceback (most recent call last):"})
    assert_one_line_naming(str(excinfo.value), "SCHEDULER_TICK_SECONDS")


def test_the_first_bad_variable_is_reported_even_among_good_ones():
    environ = {"SCHEDULER_ENABLED": "no", "SCHEDULER_MAX_WORKERS": "0", "MAX_REQUEST_BYTES": "10"}
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ)
    assert_one_line_naming(str(excinfo.value), "SCHEDULER_MAX_WORKERS")


@pytest.mark.parametrize("variable", ["SCHEDULER_TICK_SECONDS", "RUN_LEASE_SECONDS"])
def test_durations_too_large_to_schedule_are_rejected(variable):
    """1e300 s passes "a number > 0" but cannot be a timedelta: the engine would crash with a traceback."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings({variable: "1e300"})
    assert_one_line_naming(str(excinfo.value), variable)


def test_load_settings_reads_os_environ_by_default(monkeypatch):
    for variable in KEY:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SCHEDULER_MAX_WORKERS", "3")
    monkeypatch.setenv("SCHEDULER_ENABLED", "no")
    settings = load_settings()
    assert settings["SCHEDULER_MAX_WORKERS"] == 3
    assert settings["SCHEDULER_ENABLED"] is False


# --- create_app ------------------------------------------------------------------------------


@pytest.fixture
def quiet_env(monkeypatch):
    """An environment without the service's settings, and no scheduler."""
    for variable in KEY:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SCHEDULER_ENABLED", "false")
    return monkeypatch


def test_create_app_applies_environment_settings(quiet_env, tmp_path):
    quiet_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    quiet_env.setenv("MAX_REQUEST_BYTES", "2048")
    quiet_env.setenv("SCHEDULER_MAX_WORKERS", "2")
    quiet_env.setenv("SHELL_ACTIONS_ENABLED", "No")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'env.db'}"
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert app.config["SCHEDULER_MAX_WORKERS"] == 2
    assert app.config["SHELL_ACTIONS_ENABLED"] is False
    assert app.config["SCHEDULER_ENABLED"] is False
    assert app.extensions["scheduler"] is None


def test_create_app_raises_config_error_for_a_bad_environment(quiet_env):
    quiet_env.setenv("SCHEDULER_TICK_SECONDS", "abc")
    with pytest.raises(ConfigError) as excinfo:
        create_app()
    assert_one_line_naming(str(excinfo.value), "SCHEDULER_TICK_SECONDS")


def test_default_database_is_a_sqlite_file_in_the_instance_folder(quiet_env, tmp_path):
    instance = tmp_path / "instance"  # does not exist yet
    quiet_env.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    app = create_app()
    assert app.instance_path == str(instance)
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    assert uri == f"sqlite:///{instance / 'scheduler.db'}"
    assert uri.endswith("instance/scheduler.db")
    # It is usable: the folder is there and the file appears on first use.
    with app.app_context():
        db.create_all()
        assert db.engine.dialect.name == "sqlite"
        db.session.remove()
        db.engine.dispose()
    assert (instance / "scheduler.db").is_file()


def test_default_instance_folder_is_the_flask_one(quiet_env, tmp_path):
    """Without patching, the file would be <Flask's instance folder>/scheduler.db (nothing is connected)."""
    expected = flask.Flask(scheduler_service.__name__, instance_relative_config=True).instance_path
    quiet_env.setattr(Path, "mkdir", lambda self, *a, **k: None)  # do not create folders in the repo
    app = create_app()
    assert app.instance_path == expected
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{Path(expected) / 'scheduler.db'}"
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/scheduler.db")


def test_overrides_beat_the_environment(quiet_env, tmp_path):
    quiet_env.setenv("DATABASE_URL", "sqlite:////nonexistent/never-used.db")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'o.db'}", "MAX_CONTENT_LENGTH": 7})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'o.db'}"
    assert app.config["MAX_CONTENT_LENGTH"] == 7


@pytest.fixture
def sqlite_app(quiet_env, tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'pragmas.db'}", "TESTING": True})
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_sqlite_connections_have_foreign_keys_and_wal(sqlite_app):
    with sqlite_app.app_context():
        assert db.session.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert db.session.execute(sa.text("PRAGMA journal_mode")).scalar().lower() == "wal"
        db.session.remove()
        # every new connection, not just the first
        db.engine.dispose()
        with db.engine.connect() as connection:
            assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(sa.text("PRAGMA journal_mode")).scalar().lower() == "wal"


def test_sqlite_enforces_foreign_keys(sqlite_app):
    from datetime import datetime, timezone

    with sqlite_app.app_context():
        db.session.add(Run(task_id=12345, trigger="manual", scheduled_for=datetime.now(timezone.utc)))
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()
        db.session.rollback()


@pytest.mark.parametrize(
    "url",
    ["nonsense://x", "postgresql+psycopg://u@h:notaport/db"],
)
def test_unusable_database_url_stops_start_up_with_one_line(quiet_env, capsys, url):
    """A DATABASE_URL that has '://' but that SQLAlchemy cannot use is a bad value too."""
    quiet_env.setenv("DATABASE_URL", url)
    with pytest.raises(SystemExit) as excinfo:
        scheduler_service.create_app_or_exit()
    assert excinfo.value.code not in (0, None)
    assert_one_line_naming(capsys.readouterr().err, "DATABASE_URL")


def test_create_app_or_exit_prints_one_line_and_exits_non_zero(quiet_env, capsys):
    quiet_env.setenv("SCHEDULER_MAX_WORKERS", "0")
    with pytest.raises(SystemExit) as excinfo:
        scheduler_service.create_app_or_exit()
    assert excinfo.value.code not in (0, None)
    captured = capsys.readouterr()
    assert_one_line_naming(captured.err, "SCHEDULER_MAX_WORKERS")
    assert "Traceback" not in captured.err


# --- end to end --------------------------------------------------------------------------------


def test_flask_cli_with_a_bad_setting_prints_one_line_and_fails(tmp_path):
    env = clean_environ(
        PYTHONPATH=str(REPO_ROOT),
        DATABASE_URL=f"sqlite:///{tmp_path / 'bad.db'}",
        SCHEDULER_ENABLED="false",
        SCHEDULER_TICK_SECONDS="abc",
    )
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "SCHEDULER_TICK_SECONDS" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    # nothing was migrated
    assert not (tmp_path / "bad.db").exists() or (tmp_path / "bad.db").stat().st_size == 0


# --- guard rails --------------------------------------------------------------------------------


@pytest.mark.parametrize("shell, modules, expected", [
    ("true", None, None),            # any module while shell actions are allowed
    ("false", None, ()),             # none without shell actions: any callable can start a shell
    ("false", "*", None),            # unless the operator says so
    ("true", "myapp.jobs, reports", ("myapp.jobs", "reports")),
])
def test_python_modules_default_follows_shell(tmp_path, shell, modules, expected):
    environ = {"SHELL_ACTIONS_ENABLED": shell, **({"PYTHON_ACTIONS_MODULES": modules} if modules else {})}
    settings = load_settings(environ)
    app = create_app({**settings, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True,
                      "SCHEDULER_ENABLED": False})
    assert app.config["PYTHON_ACTIONS_MODULES"] == expected


@pytest.mark.parametrize("variable, raw", [
    ("PYTHON_ACTIONS_MODULES", "my-app.jobs"),
    ("PYTHON_ACTIONS_MODULES", "*,reports"),
    ("HTTP_ACTIONS_DENY_NETWORKS", "169.254.0.0/16,not-a-network"),
    ("HTTP_ACTIONS_DENY_NETWORKS", "10.0.0.0/33"),
])
def test_bad_guard_rail_settings_name_their_variable(variable, raw):
    with pytest.raises(ConfigError) as error:
        load_settings({variable: raw})
    assert_one_line_naming(str(error.value), variable)


def test_deny_networks_parse_both_families():
    networks = load_settings({"HTTP_ACTIONS_DENY_NETWORKS": "10.0.0.0/8, fd00::/8"})["HTTP_ACTIONS_DENY_NETWORKS"]
    assert networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
