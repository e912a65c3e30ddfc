"""Database models: tasks, their dependencies, runs (the execution log), run counts and API tokens.

Every timestamp is stored as naive UTC and handed back as an aware UTC datetime,
so SQLite and PostgreSQL behave the same.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .clock import utcnow
from .database import db


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in Python, naive UTC in the database."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


TASK_STATUSES = ("pending", "running", "success", "failed", "retrying")
RUN_STATUSES = ("pending", "running", "success", "failed", "skipped")
# A run in one of these is over: it is a task's outcome, and retention may delete it.
FINISHED_RUN_STATUSES = ("success", "failed", "skipped")
RUN_TRIGGERS = ("schedule", "retry", "manual", "dependency", "backfill")
CONCURRENCY_POLICIES = ("forbid", "allow", "buffer_one", "buffer_all", "replace")
CATCHUP_POLICIES = ("latest", "all", "none")

task_dependencies = sa.Table(
    "task_dependency",
    db.metadata,
    sa.Column("child_id", sa.ForeignKey("task.id", ondelete="CASCADE"), primary_key=True),
    # RESTRICT: a parent cannot vanish under its children; the API answers 409 first.
    sa.Column("parent_id", sa.ForeignKey("task.id", ondelete="RESTRICT"), primary_key=True, index=True),
)


class Task(db.Model):
    __tablename__ = "task"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # At most one of cron_expression, interval_seconds and run_at (engine/schedules.py).
    cron_expression: Mapped[str | None] = mapped_column(sa.String(200))
    interval_seconds: Mapped[int | None]
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the current schedule was set: interval slots fall at anchor + k * interval.
    # Null only if a row was written without one (tasks made before it existed have their creation time).
    schedule_anchor: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    # A calendar's name. No foreign key: adding one on SQLite rebuilds the table, and dropping the
    # old table would cascade to every run. calendars.py and services.py keep the reference whole.
    calendar: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    jitter_seconds: Mapped[int] = mapped_column(default=0, server_default="0")
    catchup: Mapped[str] = mapped_column(sa.String(8), default="latest", server_default="latest")
    enabled: Mapped[bool] = mapped_column(default=True)
    action: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    timeout_seconds: Mapped[int | None]  # None: no timeout (the API's default is 3600)
    max_retries: Mapped[int] = mapped_column(default=3)
    retry_delay_seconds: Mapped[int] = mapped_column(default=60)
    retry_max_delay_seconds: Mapped[int] = mapped_column(default=3600)
    concurrency_policy: Mapped[str] = mapped_column(sa.String(16), default="forbid")
    misfire_grace_seconds: Mapped[int] = mapped_column(default=60)
    notify: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)  # alert settings (scheduler_service/ops)
    # A pool's name (no foreign key, as for calendar): at most its slots of its tasks' runs run at once.
    pool: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    # Paused: disabled with a reason, by someone, perhaps until a time (run_control.py).
    pause_note: Mapped[str | None] = mapped_column(sa.Text)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    paused_by: Mapped[str | None] = mapped_column(sa.String(200))
    pause_after_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    # Final failures in a row (no retry left), counted by recording; a success resets it.
    consecutive_failures: Mapped[int] = mapped_column(default=0, server_default="0")

    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    retry_count: Mapped[int] = mapped_column(default=0)
    # The outcome of the task's last finished run, kept so that "recovered after
    # a failure" needs no search through the run history.
    last_outcome: Mapped[str | None] = mapped_column(sa.String(16))
    # Runs of this task that are pending or running. Kept in the same
    # transactions as the runs so that `forbid` can be checked by one
    # conditional UPDATE, which is atomic across processes.
    active_runs: Mapped[int] = mapped_column(default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the next slot
    # When the engine starts that slot: next_run_at plus the jitter drawn for it. What the tick's
    # due queries read; equal to next_run_at for a task without jitter.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    parents: Mapped[list[Task]] = relationship(
        secondary=task_dependencies,
        primaryjoin=lambda: Task.id == task_dependencies.c.child_id,
        secondaryjoin=lambda: Task.id == task_dependencies.c.parent_id,
        back_populates="children",
        order_by=lambda: Task.id,
    )
    children: Mapped[list[Task]] = relationship(
        secondary=task_dependencies,
        primaryjoin=lambda: Task.id == task_dependencies.c.parent_id,
        secondaryjoin=lambda: Task.id == task_dependencies.c.child_id,
        back_populates="parents",
        order_by=lambda: Task.id,
    )
    runs: Mapped[list[Run]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        # The tick's due-work queries: scheduled slots and retries. The id makes the order
        # (due_at, id) the index's own, so that tasks sharing a slot need no sort.
        sa.Index("ix_task_due", "enabled", "due_at", "id"),
        sa.Index("ix_task_retry_due", "status", "next_retry_at"),
    )

    @property
    def depends_on(self) -> list[int]:
        return [parent.id for parent in self.parents]

    @property
    def has_schedule(self) -> bool:
        return self.cron_expression is not None or self.interval_seconds is not None or self.run_at is not None

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name!r}>"


@sa.event.listens_for(Task.next_run_at, "set", propagate=True)
def _draw_jitter(task: Task, slot: datetime | None, old: Any, initiator: Any) -> None:
    """Every ORM write of a task's next slot sets when it comes due: the slot plus the jitter
    drawn for it (engine/schedules.py). The engine's Core statements write both themselves."""
    from .engine.schedules import jitter_offset  # the engine's modules import this one

    task.due_at = None if slot is None else slot + jitter_offset(task.id or 0, slot, task.jitter_seconds or 0)


class Run(db.Model):
    """One attempt of a task: the execution-log entry."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("task.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(default=1)
    trigger: Mapped[str] = mapped_column(sa.String(16))
    # active_history: an ORM change of what TaskRunCounts counts must know the old value (run_counts.py).
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", active_history=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, active_history=True)
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float, active_history=True)
    exit_code: Mapped[int | None]
    http_status: Mapped[int | None]
    output: Mapped[str] = mapped_column(sa.Text, default="")
    message: Mapped[str] = mapped_column(sa.String(500), default="")
    # The lease: which process runs it and when that process last said so.
    owner: Mapped[str | None] = mapped_column(sa.String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Its task's pool: the one a queued run waits for, and whose slot the run holds while it runs.
    pool: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    task: Mapped[Task] = relationship(back_populates="runs")

    __table_args__ = (
        # The last line of defence against executing one slot twice.
        sa.UniqueConstraint("task_id", "scheduled_for", "attempt", name="uq_run_task_slot_attempt"),
        sa.Index("ix_run_task_started", "task_id", "started_at"),
        sa.Index("ix_run_status_started", "status", "started_at"),
        sa.Index("ix_run_status_heartbeat", "status", "heartbeat_at"),
        # Pending runs (manual, queued: catch-up, buffered, waiting for a pool, backfill) are few next to
        # the history: partial indexes find the oldest to start, and each task's oldest, without scanning it.
        sa.Index("ix_run_pending_slot", "pool", "scheduled_for", "id",
                 sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'")),
        sa.Index("ix_run_pending_task", "task_id", "scheduled_for",
                 sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'")),
    )

    @property
    def task_name(self) -> str:
        return self.task.name

    def __repr__(self) -> str:
        return f"<Run {self.id} task={self.task_id} attempt={self.attempt} {self.status}>"


class Calendar(db.Model):
    """Days on which the tasks that name this calendar have no slots (engine/schedules.py)."""

    __tablename__ = "calendar"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    exclude_dates: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # ISO dates, sorted
    exclude_weekdays: Mapped[list[int]] = mapped_column(sa.JSON, default=list)  # ISO weekdays, 1 = Monday
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Calendar {self.name!r}>"


class Pool(db.Model):
    """At most ``slots`` runs of the tasks that name this pool run at once, across every process.

    ``running`` is the number of slots taken: a claim takes one by a conditional UPDATE
    (``running < slots``) in its own transaction, and recording a run gives it back.
    """

    __tablename__ = "pool"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    slots: Mapped[int]
    description: Mapped[str] = mapped_column(sa.Text, default="")
    running: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} {self.running}/{self.slots}>"


class RunCancel(db.Model):
    """A cancel asked for a running run: its owner's engine reads its own rows once a second,
    stops the run, and the row goes when the run is recorded."""

    __tablename__ = "run_cancel"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    owner: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    message: Mapped[str] = mapped_column(sa.String(500))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TaskRunCounts(db.Model):
    """A task's runs counted by status, and the durations of its finished runs summed.

    What /api/stats/ reads instead of aggregating the run table (millions of rows). Every
    write that adds, changes or deletes runs changes these in the same transaction; see
    run_counts.py. The status columns are named after RUN_STATUSES.
    """

    __tablename__ = "task_run_counts"

    task_id: Mapped[int] = mapped_column(sa.ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    pending: Mapped[int] = mapped_column(default=0)
    running: Mapped[int] = mapped_column(default=0)
    success: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    # Finished runs that have a duration, and those durations summed in whole microseconds:
    # an integer sum stays exact however often runs are added and pruned, a float sum drifts.
    timed_runs: Mapped[int] = mapped_column(default=0)
    timed_microseconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)


#: What a token may do, least first; each scope may do everything the ones before it may (auth.py).
TOKEN_SCOPES = ("read", "run", "write", "admin")


class ApiToken(db.Model):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Tokens made before scopes existed could do everything: they stay admin.
    scope: Mapped[str] = mapped_column(sa.String(16), default="admin", server_default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Written when a process looks the token up in the database, at most once a minute (auth.py).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


AUDIT_ACTIONS = (
    "create", "update", "delete", "toggle", "pause", "resume", "run", "cancel", "backfill", "apply",
)


class AuditEntry(db.Model):
    """One change made through the API, the admin or the CLI: who, what, and each field before and after."""

    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(200))  # token:NAME, admin:USER or cli
    action: Mapped[str] = mapped_column(sa.String(16))
    # No foreign key: a task's history outlives the task (its delete is the last entry).
    task_id: Mapped[int | None]
    # field -> [before, after], secrets already masked (audit.py).
    changes: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)

    __table_args__ = (
        sa.Index("ix_audit_entry_task_id", "task_id", "id"),
        sa.Index("ix_audit_entry_actor", "actor", "id"),
    )


class SchedulerState(db.Model):
    """A single row the schedulers share: when any of them last ticked."""

    __tablename__ = "scheduler_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_tick_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
