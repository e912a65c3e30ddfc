"""How tests build apps and databases (imported by conftest.py and by test helpers)."""
from __future__ import annotations

import os

import sqlalchemy as sa

from scheduler_service import create_app
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
