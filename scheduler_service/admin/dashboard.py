"""What the dashboard shows, read with aggregate queries and shaped by ``charts``.

The headline numbers are the API's own (``collect_stats``); the rest are the
few aggregates the charts need, each one query, never a loop over runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..queries import collect_stats
from ..database import db
from ..engine import cron
from ..models import Run, Task, task_dependencies
from ..engine.schedules import Schedule
from ..task_schedules import load_calendars, schedule_for
from . import charts

HOURS_SHOWN = 24
MICROSECOND = timedelta(microseconds=1)
# Outcomes stacked in the hourly chart, bottom-up. Pending runs have not started, so no hour.
HOURLY_SERIES = ("success", "failed", "skipped", "running")
DURATION_TASKS_SHOWN = 12
# Marks a lane may get across the window: more than its width can tell apart (charts thins
# what would overlap), and a dense schedule is sampled so that its lane reaches the end.
TIMELINE_MARKS_PER_TASK = 200
GRAPH_NODES_SHOWN = 120


@dataclass(frozen=True)
class Dashboard:
    stats: dict[str, Any]
    hourly: charts.BarChart
    last_day_success_rate: float | None
    success_donut: charts.Donut
    durations: charts.HBarChart
    timeline: charts.Timeline
    graph: charts.Graph
    graph_hidden: int  # tasks with dependencies left out of a very large graph
    unlinked_tasks: int  # tasks with no dependency either way, not drawn


def build_dashboard(now: datetime) -> Dashboard:
    stats = collect_stats()
    hours = hourly_outcomes(now)
    hourly = charts.stacked_bars([(start.strftime("%H:00"), counts) for start, counts in hours], HOURLY_SERIES)
    decided = hourly.totals["success"] + hourly.totals["failed"]
    graph, hidden, unlinked = dependency_graph()
    return Dashboard(
        stats=stats,
        hourly=hourly,
        last_day_success_rate=hourly.totals["success"] / decided if decided else None,
        success_donut=charts.donut(stats["runs"]["success_rate"]),
        durations=charts.horizontal_bars(average_durations()),
        timeline=charts.timeline(now, upcoming_runs(now, stats["next_runs"])),
        graph=graph,
        graph_hidden=hidden,
        unlinked_tasks=unlinked,
    )


def hour_starts(now: datetime, hours: int = HOURS_SHOWN) -> list[datetime]:
    """The starts of the last ``hours`` clock hours, the current (partial) one last."""
    current = now.replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=hours - 1 - index) for index in range(hours)]


def hourly_outcomes(now: datetime) -> list[tuple[datetime, dict[str, int]]]:
    """Runs started in each of the last 24 clock hours, counted by status."""
    starts = hour_starts(now)
    # The hour index is a CASE over the boundaries: the same SQL on SQLite and PostgreSQL.
    hour = sa.case(
        *[(Run.started_at < boundary, index) for index, boundary in enumerate(starts[1:])],
        else_=len(starts) - 1,
    )
    runs = (
        sa.select(hour.label("hour"), Run.status.label("status"))
        .where(Run.started_at >= starts[0], Run.status.in_(HOURLY_SERIES))
        .subquery()
    )
    # Grouped outside the subquery: PostgreSQL cannot match a CASE of bound parameters across clauses.
    rows = db.session.execute(
        sa.select(runs.c.hour, runs.c.status, sa.func.count()).group_by(runs.c.hour, runs.c.status)
    ).all()
    counts: list[dict[str, int]] = [dict.fromkeys(HOURLY_SERIES, 0) for _ in starts]
    for index, status, count in rows:
        counts[index][status] = count
    return list(zip(starts, counts))


def average_durations(limit: int = DURATION_TASKS_SHOWN) -> list[tuple[int, str, float]]:
    """(task id, name, mean seconds) of the tasks whose finished runs take longest."""
    mean = sa.func.avg(Run.duration_seconds)
    rows = db.session.execute(
        sa.select(Task.id, Task.name, mean)
        .join(Run, Run.task_id == Task.id)
        .where(Run.finished_at.is_not(None), Run.duration_seconds.is_not(None))
        .group_by(Task.id, Task.name)
        .order_by(mean.desc(), Task.name)
        .limit(limit)
    ).all()
    return [(task_id, name, float(seconds)) for task_id, name, seconds in rows]


def upcoming_runs(now: datetime, next_runs: list[dict[str, Any]]) -> list[tuple[int, str, list[datetime]]]:
    """For each soonest-due task of the stats, its stored next slot and the slots after it
    (by its whole schedule: cron, interval or one-off, its calendar's days left out)."""
    ids = [item["task_id"] for item in next_runs]
    tasks = {task.id: task for task in db.session.scalars(sa.select(Task).where(Task.id.in_(ids)))} if ids else {}
    calendars = load_calendars(task.calendar for task in tasks.values())  # one query for every lane
    end = now + charts.timeline_window(now, (item["next_run_at"] for item in next_runs))
    spacing = (end - now) / TIMELINE_MARKS_PER_TASK
    lanes = []
    for item in next_runs:
        task = tasks.get(item["task_id"])
        if task is None or not task.has_schedule:
            continue
        try:
            times = _sampled_slots(schedule_for(task, calendars), item["next_run_at"], end, spacing)
        except cron.CronError:  # a zone gone from the system's tz database
            times = [item["next_run_at"]]
        lanes.append((task.id, task.name, times))
    return lanes


def _sampled_slots(schedule: Schedule, first: datetime, end: datetime, spacing: timedelta) -> list[datetime]:
    """Slots from ``first`` to ``end``, each at least ``spacing`` after the one before."""
    times = [first]
    while len(times) < TIMELINE_MARKS_PER_TASK:
        following = schedule.next_after(times[-1] + spacing - MICROSECOND)
        if following is None or following > end:
            break
        times.append(following)
    return times


def dependency_graph(limit: int = GRAPH_NODES_SHOWN) -> tuple[charts.Graph, int, int]:
    """The graph of tasks that have parents or children; also how many were left out and how many have neither."""
    edges = [(parent, child) for child, parent in db.session.execute(sa.select(task_dependencies))]
    linked = sorted({node for edge in edges for node in edge})
    shown_ids = linked[:limit]
    rows = db.session.execute(
        sa.select(Task.id, Task.name, Task.status, Task.enabled).where(Task.id.in_(shown_ids))
    ).all() if shown_ids else []
    tasks = [charts.GraphTask(*row) for row in rows]
    total = db.session.execute(sa.select(sa.func.count()).select_from(Task)).scalar_one()
    return charts.layered_graph(tasks, edges), len(linked) - len(shown_ids), total - len(linked)
