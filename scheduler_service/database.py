"""The SQLAlchemy handle and the per-connection settings of the database.

Kept apart from extensions.py so that models and the engine can import ``db``
without importing the extensions that import them.
"""
from __future__ import annotations

import os

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

# Named constraints keep Alembic's batch mode (SQLite) able to alter them later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))


def watch_sqlite_connections() -> None:
    """Switch on WAL, synchronous=NORMAL and foreign keys for every SQLite connection, and create
    a missing SQLite file readable by its owner only (idempotent)."""
    if not sa.event.contains(sa.engine.Engine, "connect", _sqlite_pragmas):
        sa.event.listen(sa.engine.Engine, "connect", _sqlite_pragmas)
    if not sa.event.contains(sa.engine.Engine, "do_connect", _create_private_sqlite_file):
        sa.event.listen(sa.engine.Engine, "do_connect", _create_private_sqlite_file)


def _create_private_sqlite_file(dialect, connection_record, cargs, cparams) -> None:
    """Create the file before SQLite does, with mode 0600: SQLite would follow the umask (often
    world-readable), and it gives the -wal, -shm and -journal files the mode of the database
    file. A file that exists keeps its mode: its owner chose it."""
    if dialect.name != "sqlite" or cparams.get("uri") or not cargs or cargs[0] in ("", ":memory:"):
        return
    try:
        os.close(os.open(cargs[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass  # there already, or a folder missing: SQLite opens it or says why, as without us


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # SQLite's advice for WAL: no corruption on a crash, and a commit costs no fsync;
        # a power cut may lose the last commits (a run may then start again).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
