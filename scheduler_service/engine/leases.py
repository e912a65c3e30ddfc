"""Leases: a process says every few seconds that it still runs its runs, and finishes as
lost the runs of a process that stopped saying so.

Runs on the heartbeat thread (the engine's heartbeat job). A run whose owner died is
failed (``worker lost``) and retried by its task's policy, like any failure.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..database import db
from ..models import Run
from . import cancels
from .records import FinishedRun, Outcome, RunResult
from .recording import finish_lost

log = logging.getLogger(__name__)

RECOVERY_BATCH = 500
WORKER_LOST = "worker lost"


def renew_leases(run_ids: Iterable[int], owner: str, now: datetime) -> int:
    """Say that this process still runs ``run_ids``."""
    ids = list(run_ids)
    if not ids:
        return 0
    renewed = db.session.execute(
        sa.update(Run).where(Run.id.in_(ids), Run.owner == owner, Run.status == "running").values(heartbeat_at=now)
    ).rowcount
    db.session.commit()
    return renewed


def recover_lost_runs(now: datetime, lease_seconds: float, alive: Iterable[int] = ()) -> list[FinishedRun]:
    """Fail runs whose owner stopped renewing its lease, and retry them by the task's policy."""
    stale_before = now - timedelta(seconds=lease_seconds)
    lost = db.session.execute(
        sa.select(Run.id, Run.heartbeat_at)
        .where(Run.status == "running", Run.heartbeat_at < stale_before)
        .order_by(Run.id)
        .limit(RECOVERY_BATCH)
    ).all()
    alive = set(alive)
    lost = [(run_id, heartbeat_at) for run_id, heartbeat_at in lost if run_id not in alive]
    # A run cancelled before its process died stays cancelled: not retried.
    cancelled = cancels.messages_for(run_id for run_id, _ in lost)
    db.session.commit()
    recovered = []
    for run_id, heartbeat_at in lost:
        if run_id in cancelled:
            outcome = Outcome(succeeded=False, message=f"{cancelled[run_id]} ({WORKER_LOST})", cancelled=True)
        else:
            outcome = Outcome(succeeded=False, message=WORKER_LOST)
        finished = finish_lost(RunResult(run_id, outcome, None, now), heartbeat_at)
        if finished is not None:
            recovered.append(finished)
            log.warning("run %s: %s (no heartbeat since %s)", run_id, WORKER_LOST, heartbeat_at.isoformat())
    return recovered
