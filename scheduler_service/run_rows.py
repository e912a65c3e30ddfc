"""New runs: the one way the service adds Run rows, each counted in its task's run counts.

The engine (a tick's claims and skipped slots) and the API (a manual run) add runs
through ``NewRuns``: rows inserted in the caller's transaction, their counts added by
one statement when the caller is done (``run_counts.apply``, after the task rows the
transaction changed, the lock order run_counts.py asks for). Runs the ORM writes (tests,
a Python shell) are counted by run_counts' mapper events instead.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import TracebackType

import sqlalchemy as sa

from . import run_counts
from .models import Run, Task, UTCDateTime

_run, _task = Run.__table__, Task.__table__
_p = sa.bindparam

_INSERT = sa.insert(_run)
_INSERT_RETURNING = _INSERT.returning(_run.c.id, sort_by_parameter_order=True)
# The runs of tasks that start the same slot in one statement, their values bound once: a
# burst on one cron does not pay SQLAlchemy's per-row parameter processing.
_INSERT_SLOT_STARTS = (
    sa.insert(_run)
    .from_select(
        ["task_id", "attempt", "trigger", "status", "scheduled_for", "started_at", "owner", "heartbeat_at",
         "created_at", "pool"],
        sa.select(
            _task.c.id, sa.literal(1), _p("b_trigger", type_=sa.String), sa.literal("running"),
            _p("b_slot", type_=UTCDateTime), _p("b_now", type_=UTCDateTime), _p("b_owner", type_=sa.String),
            _p("b_now", type_=UTCDateTime), _p("b_now", type_=UTCDateTime),
            _task.c.pool,  # the tick took a slot of it for each of these runs (tick._seat_pool_runs)
        ).where(_task.c.id.in_(_p("b_ids", expanding=True))),
    )
    .returning(_run.c.id, _run.c.task_id)
)


def running_row(task_id: int, *, attempt: int, trigger: str, slot: datetime, now: datetime, owner: str,
                pool: str | None = None) -> dict:
    """A run that ``owner`` starts ``now``, holding its lease (and a slot of ``pool``)."""
    return {
        "task_id": task_id, "attempt": attempt, "trigger": trigger, "status": "running", "scheduled_for": slot,
        "started_at": now, "owner": owner, "heartbeat_at": now, "created_at": now, "pool": pool,
    }


class NewRuns:
    """Runs added in one transaction of ``connection``; used as ``with NewRuns(connection) as runs:``,
    which counts them all on leaving the block (nothing is counted if the block raises)."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self._counts: list[run_counts.RunCount] = []

    def __enter__(self) -> NewRuns:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.count()

    def add(self, rows: list[dict]) -> list[int]:
        """Insert ``rows`` (Run columns) in one statement; their ids, in the order given."""
        if not rows:
            return []
        self._note(rows)
        return list(self.connection.execute(_INSERT_RETURNING, rows).scalars())

    def add_unreturned(self, rows: list[dict]) -> None:
        """``add`` for rows whose ids nobody needs (skipped slots): one executemany, no RETURNING."""
        if rows:
            self._note(rows)
            self.connection.execute(_INSERT, rows)

    def add_slot_starts(self, task_ids: Iterable[int], *, trigger: str, slot: datetime, now: datetime,
                        owner: str) -> dict[int, int]:
        """A running run of ``slot`` for each task, in one statement; the run id of each task id."""
        params = {"b_ids": list(task_ids), "b_trigger": trigger, "b_slot": slot, "b_now": now, "b_owner": owner}
        run_ids = {task_id: run_id for run_id, task_id in self.connection.execute(_INSERT_SLOT_STARTS, params)}
        self._counts.extend(run_counts.counted(task_id, "running", None, None) for task_id in run_ids)
        return run_ids

    def _note(self, rows: list[dict]) -> None:
        self._counts.extend(
            run_counts.counted(row["task_id"], row["status"], row.get("finished_at"), row.get("duration_seconds"))
            for row in rows
        )

    def count(self) -> None:
        """Add the runs written so far to their tasks' counts (one statement), once."""
        counts, self._counts = self._counts, []
        run_counts.apply(self.connection, counts)
