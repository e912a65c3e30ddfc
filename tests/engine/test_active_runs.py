"""The rule "the task has an active run" has one definition in two forms; both agree on the same rows."""
from __future__ import annotations

import itertools

import sqlalchemy as sa

from scheduler_service.engine.active_runs import active_run_clause, has_active_run
from scheduler_service.extensions import db
from scheduler_service.models import TASK_STATUSES, Task


def test_the_sql_and_the_python_forms_agree_on_every_row(app):
    cases = list(itertools.product((0, 1, 2), TASK_STATUSES))
    with app.app_context():
        for number, (active_runs, status) in enumerate(cases):
            db.session.add(Task(name=f"t{number}", cron_expression="* * * * *", action={"type": "shell", "command": "true"},
                                active_runs=active_runs, status=status))
        db.session.commit()
        rows = db.session.execute(sa.select(Task.id, Task.active_runs, Task.status)).all()
        in_sql = set(db.session.scalars(sa.select(Task.id).where(active_run_clause(Task))))
        in_sql_on_the_table = set(db.session.scalars(
            sa.select(Task.__table__.c.id).where(active_run_clause(Task.__table__))))
    in_python = {row.id for row in rows if has_active_run(row.active_runs, row.status)}
    assert in_sql == in_python == in_sql_on_the_table
    # and the rule itself: a pending or running run, or a retry waiting
    assert len(in_python) == len([case for case in cases if case[0] > 0 or case[1] == "retrying"])
    assert 0 < len(in_python) < len(cases)
