"""Count the SQL statements an app sends: for tests that pin how many round trips something costs."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from scheduler_service.extensions import db


@contextmanager
def counted_statements(app) -> Iterator[list[str]]:
    """Yields the list that collects every statement sent to the app's database meanwhile."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
