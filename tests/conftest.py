"""Fixtures from the app factory: every API test runs on SQLite and, when
TEST_DATABASE_URL is set (CI sets it), on PostgreSQL too."""
from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from scheduler_service import create_app
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db

BASE_POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
DATABASES = ["sqlite"] + (["postgresql"] if BASE_POSTGRES_URL else [])
# Each test session works in a PostgreSQL schema of its own, so that two
# sessions (a developer's and CI's, or parallel runs) never drop each other's tables.
POSTGRES_SCHEMA = f"test_{os.getpid()}"
POSTGRES_URL = (
    f"{BASE_POSTGRES_URL}{'&' if '?' in BASE_POSTGRES_URL else '?'}options=-csearch_path%3D{POSTGRES_SCHEMA}"
    if BASE_POSTGRES_URL
    else None
)


@pytest.fixture(scope="session", autouse=True)
def postgres_schema():
    if not BASE_POSTGRES_URL:
        yield None
        return
    engine = sa.create_engine(BASE_POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}"))
    yield POSTGRES_SCHEMA
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {POSTGRES_SCHEMA} CASCADE"))
    engine.dispose()

_postgres_schema_ready = False


def database_url(kind: str, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}" if kind == "sqlite" else POSTGRES_URL


def reset_database(app) -> None:
    """An empty schema: a new SQLite file, or PostgreSQL tables emptied."""
    global _postgres_schema_ready
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            db.create_all()
            return
        if not _postgres_schema_ready:
            db.create_all()
            _postgres_schema_ready = True
        tables = ", ".join(table.name for table in db.metadata.sorted_tables)
        with db.engine.begin() as connection:
            connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def make_app(url: str, **overrides):
    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False}
    config.update(overrides)
    return create_app(config)


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
