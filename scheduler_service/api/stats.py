"""System statistics, computed by aggregate queries (never a loop over runs)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask.views import MethodView

from .. import services
from ..extensions import db
from ..models import RUN_STATUSES, TASK_STATUSES, Run, SchedulerState, Task
from ..schemas import StatsQueryArgsSchema, StatsSchema
from .blueprint import Blueprint

blp = Blueprint("stats", __name__, url_prefix="/api/stats", description="Statistics")

NEXT_RUNS_SHOWN = 10


def _count_by_status(column: Any, statuses: tuple[str, ...], where: list) -> dict[str, int]:
    rows = db.session.execute(sa.select(column, sa.func.count()).where(*where).group_by(column)).all()
    counts = dict.fromkeys(statuses, 0)
    counts.update({status: count for status, count in rows if status in counts})
    return counts


def collect_stats(task_id: int | None = None) -> dict[str, Any]:
    task_filter = [Task.id == task_id] if task_id is not None else []
    run_filter = [Run.task_id == task_id] if task_id is not None else []

    tasks_total, tasks_enabled = db.session.execute(
        sa.select(sa.func.count(), sa.func.count().filter(Task.enabled)).where(*task_filter)
    ).one()
    runs_by_status = _count_by_status(Run.status, RUN_STATUSES, run_filter)
    avg_duration = db.session.execute(
        sa.select(sa.func.avg(Run.duration_seconds)).where(Run.finished_at.is_not(None), *run_filter)
    ).scalar()
    decided = runs_by_status["success"] + runs_by_status["failed"]
    next_runs = db.session.execute(
        sa.select(Task.id, Task.name, Task.next_run_at)
        .where(Task.enabled, Task.next_run_at.is_not(None), *task_filter)
        .order_by(Task.next_run_at, Task.id)
        .limit(NEXT_RUNS_SHOWN)
    ).all()
    state = db.session.get(SchedulerState, 1)
    return {
        "tasks": {
            "total": tasks_total,
            "enabled": tasks_enabled,
            "by_status": _count_by_status(Task.status, TASK_STATUSES, task_filter),
        },
        "runs": {
            "total": sum(runs_by_status.values()),
            "by_status": runs_by_status,
            "success_rate": runs_by_status["success"] / decided if decided else None,
            "avg_duration_seconds": float(avg_duration) if avg_duration is not None else None,
        },
        "next_runs": [{"task_id": id_, "name": name, "next_run_at": at} for id_, name, at in next_runs],
        "scheduler": {"last_tick_at": state.last_tick_at if state else None},
    }


@blp.route("/")
class Stats(MethodView):
    @blp.arguments(StatsQueryArgsSchema, location="query")
    @blp.response(200, StatsSchema)
    def get(self, args):
        """System stats, or the same document for one task (`?task_id=`)."""
        task_id = args.get("task_id")
        if task_id is not None:
            services.get_task_or_404(task_id)
        return collect_stats(task_id)
