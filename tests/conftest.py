"""Fixtures from the app factory: every API test runs on SQLite and, when
TEST_DATABASE_URL is set (CI sets it), on PostgreSQL too."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.appfactory import BASE_POSTGRES_URL, DATABASES, POSTGRES_SCHEMA, database_url, make_app, reset_database
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db

# Engine fixtures (runs_of, task_row, wait_until, gone) for tests/engine and tests/ops.
pytest_plugins = ("tests.engine_fixtures",)


@pytest.fixture(scope="session", autouse=True)
def postgres_schema():
    if not BASE_POSTGRES_URL:
        yield None
        return
    # pre_ping: a test may restart the server (tests/process/test_database_outage.py).
    engine = sa.create_engine(BASE_POSTGRES_URL, pool_pre_ping=True)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}"))
    yield POSTGRES_SCHEMA
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {POSTGRES_SCHEMA} CASCADE"))
    engine.dispose()


@pytest.fixture(params=DATABASES)
def db_kind(request) -> str:
    return request.param


@pytest.fixture
def app_config() -> dict:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def app(db_kind, tmp_path, app_config):
    app = make_app(database_url(db_kind, tmp_path), **app_config)
    reset_database(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def token(app) -> str:
    with app.app_context():
        return issue_token("tests")


@pytest.fixture
def client(app, token):
    """A test client that sends a valid bearer token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def anonymous(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()
