"""The rule "the task has an active run", in its two forms: for Python and inside SQL.

A task is active while a run of it is pending or running (``active_runs`` counts them,
kept in the same transactions as the runs) or while a retry waits (status ``retrying``).
`forbid` is decided by this rule: by ``has_active_run`` in the slot planner, and by
``active_run_clause`` inside the conditional UPDATEs that claim a slot or a manual run,
which is what makes it hold when several processes claim at once. The two forms are
tested on the same rows (tests/engine/test_active_runs.py).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

# Policies under which a task's runs never overlap: a slot due while one is active skips or waits.
EXCLUSIVE_POLICIES = ("forbid", "buffer_one", "buffer_all")


def has_active_run(active_runs: int, status: str) -> bool:
    """Whether a run of the task is pending or running, or a retry of it waits."""
    return active_runs > 0 or status == "retrying"


def active_run_clause(task: Any) -> sa.ColumnElement[bool]:
    """``has_active_run`` over the columns of ``task`` (the task table, or the ``Task`` model)."""
    columns = getattr(task, "c", task)
    return sa.or_(columns.active_runs > 0, columns.status == "retrying")
