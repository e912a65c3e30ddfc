"""Retention: delete old runs (and old sent alerts) in small batches, so a year of runs never piles up.

Two rules, both applied by every pass:

* ``RUN_RETENTION_DAYS`` (default 90; 0 keeps runs forever): finished runs
  (success, failed, skipped) that finished longer ago than that are deleted.
* ``RUN_RETENTION_PER_TASK`` (default 10,000; 0 means no limit): of each task's
  runs, the newest N are kept and older finished ones deleted.

Runs still pending or running are never deleted. Nor are each task's latest
success and latest outcome, whatever their age: the scheduler reads them (a
dependency-only child's trigger, ``recovered`` alerts).

Each batch is one short transaction deleting at most ``BATCH_ROWS`` rows (named
by id), with a pause between batches, so the scheduler's own writes are never
held up for long (SQLite has one writer at a time). Each batch takes what it
deleted off the run counts in the same transaction, so the statistics describe
the runs that remain: after a pass, the kept history.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from .. import run_counts
from ..clock import utcnow
from ..database import db
from ..models import FINISHED_RUN_STATUSES, Run
from .models import Alert

log = logging.getLogger(__name__)

BATCH_ROWS = 1000
BATCH_PAUSE_SECONDS = 0.02


@dataclass
class PruneReport:
    by_age: int = 0
    by_count: int = 0
    alerts: int = 0
    batches: int = 0

    @property
    def runs(self) -> int:
        return self.by_age + self.by_count


def _protected_ids() -> set[int]:
    """Each task's latest success and latest success-or-failure: never deleted."""
    latest_success = sa.select(sa.func.max(Run.id)).where(Run.status == "success").group_by(Run.task_id)
    latest_outcome = sa.select(sa.func.max(Run.id)).where(Run.status.in_(("success", "failed"))).group_by(Run.task_id)
    ids = set(db.session.execute(latest_success).scalars()) | set(db.session.execute(latest_outcome).scalars())
    db.session.commit()
    return ids


def _delete_in_batches(conditions: list, protected: set[int], report: PruneReport, *, batch_rows: int,
                       pause: float, should_stop: Callable[[], bool], by_status: bool) -> int:
    """Delete the finished runs matching ``conditions``, ``batch_rows`` at a time, one transaction each.

    Batches are read in (started_at, id) order with a keyset cursor, the order of the
    indexes on (status, started_at) and (task_id, started_at): each batch reads about
    ``batch_rows`` index entries, never the whole table again. ``by_status`` walks
    one status at a time (what the status index serves).
    """
    deleted = 0
    statuses = ([Run.status == status for status in FINISHED_RUN_STATUSES] if by_status
                else [Run.status.in_(FINISHED_RUN_STATUSES)])
    for status_condition in statuses:
        after: tuple[datetime, int] | None = None
        while not should_stop():
            query = sa.select(Run.id, Run.started_at).where(status_condition, Run.started_at.is_not(None), *conditions)
            if after is not None:
                query = query.where(Run.started_at >= after[0], sa.tuple_(Run.started_at, Run.id) > after)
            rows = db.session.execute(query.order_by(Run.started_at, Run.id).limit(batch_rows)).all()
            if not rows:
                db.session.commit()
                break
            after = (rows[-1].started_at, rows[-1].id)
            doomed = [run_id for run_id, _ in rows if run_id not in protected]
            if doomed:
                deleted += _delete_and_uncount(sa.and_(Run.id.in_(doomed), status_condition, *conditions))
            db.session.commit()
            report.batches += 1
            if pause:
                time.sleep(pause)
    return deleted


def _delete_and_uncount(condition: sa.ColumnElement[bool]) -> int:
    """Delete the runs matching ``condition`` and take them off the run counts; how many went.

    The DELETE checks the conditions again (a row that changed since it was read is left
    alone) and answers what it deleted: what the counts lose is what is gone.
    """
    gone = db.session.execute(
        sa.delete(Run).where(condition)
        .returning(Run.task_id, Run.status, Run.finished_at, Run.duration_seconds)
        .execution_options(synchronize_session=False)
    ).all()
    run_counts.apply(db.session.connection(), (run_counts.counted(*row, sign=-1) for row in gone))
    return len(gone)


def prune_runs(now: datetime, *, older_than_days: float | None, keep_per_task: int | None,
               batch_rows: int = BATCH_ROWS, pause: float = BATCH_PAUSE_SECONDS,
               should_stop: Callable[[], bool] = lambda: False) -> PruneReport:
    """One retention pass as of ``now``. ``None`` (or 0 for ``keep_per_task``) switches a rule off."""
    report = PruneReport()
    protected = _protected_ids()
    if older_than_days is not None:
        cutoff = now - timedelta(days=older_than_days)
        # started_at <= finished_at: the first condition lets the (status, started_at) index narrow the scan.
        report.by_age = _delete_in_batches(
            [Run.started_at < cutoff, Run.finished_at < cutoff], protected, report,
            batch_rows=batch_rows, pause=pause, should_stop=should_stop, by_status=True,
        )
        report.alerts = _prune_alerts(cutoff, batch_rows=batch_rows, pause=pause, should_stop=should_stop)
    if keep_per_task:
        over = db.session.execute(
            sa.select(Run.task_id).group_by(Run.task_id).having(sa.func.count() > keep_per_task).order_by(Run.task_id)
        ).scalars().all()
        db.session.commit()
        for task_id in over:
            if should_stop():
                break
            # The id of the task's keep_per_task-th newest run: it and everything newer stay.
            boundary = db.session.execute(
                sa.select(Run.id).where(Run.task_id == task_id).order_by(Run.id.desc())
                .offset(keep_per_task - 1).limit(1)
            ).scalar()
            db.session.commit()
            if boundary is None:
                continue
            report.by_count += _delete_in_batches(
                [Run.task_id == task_id, Run.id < boundary], protected, report,
                batch_rows=batch_rows, pause=pause, should_stop=should_stop, by_status=False,
            )
    return report


def _prune_alerts(cutoff: datetime, *, batch_rows: int, pause: float, should_stop: Callable[[], bool]) -> int:
    """Sent (or given-up) alerts older than the cutoff go with the runs they were about."""
    deleted = 0
    done = (Alert.status.in_(("delivered", "failed")), Alert.created_at < cutoff)
    while not should_stop():
        ids = db.session.execute(
            sa.select(Alert.id).where(*done).order_by(Alert.id).limit(batch_rows)
        ).scalars().all()
        if not ids:
            db.session.commit()
            break
        deleted += db.session.execute(
            sa.delete(Alert).where(Alert.id >= ids[0], Alert.id <= ids[-1], *done)
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        if pause:
            time.sleep(pause)
    return deleted


def configured_pass(app: Flask, now: datetime, should_stop: Callable[[], bool] = lambda: False,
                    older_than_days: float | None = None, keep_per_task: int | None = None) -> PruneReport:
    """A pass with the app's settings; ``older_than_days``/``keep_per_task`` (the CLI's options) override them.

    From the settings 0 switches a rule off; ``older_than_days=0`` given here means every finished run.
    """
    days = (app.config["RUN_RETENTION_DAYS"] or None) if older_than_days is None else older_than_days
    keep = app.config["RUN_RETENTION_PER_TASK"] if keep_per_task is None else keep_per_task
    with app.app_context():
        return prune_runs(now, older_than_days=days, keep_per_task=keep or None, should_stop=should_stop)


@click.command("prune-runs")
@click.option("--older-than", "older_than", type=click.IntRange(min=0), metavar="DAYS",
              help="Delete finished runs older than DAYS (default: RUN_RETENTION_DAYS; 0: all finished runs).")
@click.option("--keep-per-task", type=click.IntRange(min=0), metavar="N",
              help="Keep each task's newest N runs (default: RUN_RETENTION_PER_TASK; 0: no limit).")
@with_appcontext
def prune_runs_command(older_than: int | None, keep_per_task: int | None) -> None:
    """Delete old runs now (the scheduler also does it every few minutes)."""
    app = current_app._get_current_object()
    started = time.monotonic()
    report = configured_pass(app, utcnow(), older_than_days=older_than, keep_per_task=keep_per_task)
    click.echo(
        f"Deleted {report.runs} runs ({report.by_age} by age, {report.by_count} beyond the per-task limit) "
        f"and {report.alerts} old alerts in {time.monotonic() - started:.1f}s."
    )


def init_app(app: Flask) -> None:
    app.cli.add_command(prune_runs_command)
