"""Prometheus metrics at /metrics (the text exposition format; OpenMetrics when asked for).

Two kinds of numbers:

* what happened in a process (runs started and finished, durations, start lag,
  ticks, lost claims): counters and histograms that the engine's signals update.
  Under several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR``: prometheus-client
  then keeps them in files there, and a scrape of any worker sums every process.
* what is true now (tasks by status, the last tick, the alert backlog): read from
  the database at scrape time, so any process answers the same.

Tasks are labelled by ``task_id`` (stable across renames); ``scheduler_task_info``
maps ids to names for a PromQL join.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, request
from flask_smorest import abort
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from .. import auth, events, listing, pools
from ..database import db
from ..models import SchedulerState, Task
from .models import ALERT_STATUSES, Alert

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, float("inf"))
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))

# `_created` series double the series count and say little here.
disable_created_metrics()


_RUNS_STARTED = ("scheduler_runs_started", "Runs this scheduler started, by task.")
_RUNS_FINISHED = ("scheduler_runs_finished",
                  "Runs whose outcome was recorded, by task and outcome (success or failed).")
_SLOTS_SKIPPED = ("scheduler_slots_skipped",
                  "Slots logged as skipped (missed, concurrency, dependency gate), by task.")
_RUN_DURATION = ("scheduler_run_duration_seconds", "How long finished runs took, by task (sum and count).")


class PerTaskRuns:
    """This process's per-task run numbers, kept as plain counts and exposed at scrape time.

    prometheus-client keeps a child object per label set: 2.2 KB for the three per-task
    series of one task (219 MB for 100,000 tasks that have each run once), and 18.5 µs to
    create in a burst of new tasks. The exposition is the same as the client's Counter and
    Summary. With PROMETHEUS_MULTIPROC_DIR the client's instruments are used instead: only
    their files are summed across processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, int] = {}
        self._finished: dict[tuple[int, str], int] = {}
        self._skipped: dict[int, int] = {}
        self._durations: dict[int, tuple[int, float]] = {}  # task id -> (count, sum of seconds)

    def add_started(self, task_ids: Iterable[int]) -> None:
        with self._lock:
            for task_id in task_ids:
                self._started[task_id] = self._started.get(task_id, 0) + 1

    def add_finished(self, runs: Iterable[Any]) -> None:
        with self._lock:
            for run in runs:
                key = (run.task_id, run.status)
                self._finished[key] = self._finished.get(key, 0) + 1
                if run.duration_seconds is not None:
                    count, total = self._durations.get(run.task_id, (0, 0.0))
                    self._durations[run.task_id] = (count + 1, total + run.duration_seconds)

    def add_skipped(self, task_ids: Iterable[int]) -> None:
        with self._lock:
            for task_id in task_ids:
                self._skipped[task_id] = self._skipped.get(task_id, 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started, finished = sorted(self._started.items()), sorted(self._finished.items())
            skipped, durations = sorted(self._skipped.items()), sorted(self._durations.items())
        for (name, text), counts in ((_RUNS_STARTED, started), (_SLOTS_SKIPPED, skipped)):
            family = CounterMetricFamily(name, text, labels=["task_id"])
            for task_id, count in counts:
                family.add_metric([str(task_id)], count)
            yield family
        family = CounterMetricFamily(*_RUNS_FINISHED, labels=["task_id", "outcome"])
        for (task_id, outcome), count in finished:
            family.add_metric([str(task_id), outcome], count)
        yield family
        summary = SummaryMetricFamily(*_RUN_DURATION, labels=["task_id"])
        for task_id, (count, total) in durations:
            summary.add_metric([str(task_id)], count_value=count, sum_value=total)
        yield summary


class _PerTaskInstruments:
    """The per-task numbers as prometheus-client instruments, for multiprocess mode (same API as PerTaskRuns)."""

    def __init__(self) -> None:
        # registry=None: in multiprocess mode the values live in files, not in a registry.
        self.runs_started = Counter(*_RUNS_STARTED, ["task_id"], registry=None)
        self.runs_finished = Counter(*_RUNS_FINISHED, ["task_id", "outcome"], registry=None)
        self.slots_skipped = Counter(*_SLOTS_SKIPPED, ["task_id"], registry=None)
        self.run_duration = Summary(*_RUN_DURATION, ["task_id"], registry=None)

    def add_started(self, task_ids: Iterable[int]) -> None:
        for task_id in task_ids:
            self.runs_started.labels(str(task_id)).inc()

    def add_finished(self, runs: Iterable[Any]) -> None:
        for run in runs:
            self.runs_finished.labels(str(run.task_id), run.status).inc()
            if run.duration_seconds is not None:
                self.run_duration.labels(str(run.task_id)).observe(run.duration_seconds)

    def add_skipped(self, task_ids: Iterable[int]) -> None:
        for task_id in task_ids:
            self.slots_skipped.labels(str(task_id)).inc()


class Metrics:
    """One app's metrics: the instruments the signals update and the scrape-time collectors."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.multiprocess_dir: str | None = app.config.get("PROMETHEUS_MULTIPROC_DIR")
        # In multiprocess mode the values live in files, not in a registry of this process.
        self.registry = None if self.multiprocess_dir else CollectorRegistry(auto_describe=True)
        registry = self.registry
        # Per task: runs started, finished and skipped, and a duration sum and count (the average).
        # The duration buckets are kept once, over all tasks: a histogram per task would be ~17
        # series and ~20 objects for each of 100,000 tasks.
        if registry is None:
            self.per_task: PerTaskRuns | _PerTaskInstruments = _PerTaskInstruments()
        else:
            self.per_task = PerTaskRuns()
            registry.register(self.per_task)
        self.run_duration_buckets = Histogram(
            "scheduler_run_duration_all_tasks_seconds", "How long finished runs took, all tasks together.",
            buckets=DURATION_BUCKETS, registry=registry,
        )
        self.start_lag = Histogram(
            "scheduler_run_start_lag_seconds", "How long after its slot plus its jitter (or request, or retry time) a run started.",
            ["trigger"], buckets=LAG_BUCKETS, registry=registry,
        )
        self.ticks = Counter("scheduler_ticks", "Scheduler ticks completed.", registry=registry)
        self.tick_errors = Counter(
            "scheduler_tick_errors", "Steps of a tick that failed (database errors; retried next tick).",
            registry=registry,
        )
        self.tick_duration = Histogram(
            "scheduler_tick_duration_seconds", "How long one tick took.", buckets=TICK_BUCKETS, registry=registry,
        )
        self.claims_lost = Counter(
            "scheduler_claims_lost", "Work another process claimed first (normal when several processes run).",
            registry=registry,
        )
        self.alert_deliveries = Counter(
            "scheduler_alert_deliveries", "Webhook delivery attempts, by result (delivered, retrying, failed).",
            ["result"], registry=registry,
        )
        self.runs_pruned = Counter(
            "scheduler_runs_pruned", "Runs deleted by retention.", registry=registry,
        )
        self.database = DatabaseCollector(app)

    # --- signal receivers (the engine's threads: only in-memory work here) ------------------

    def on_runs_started(self, sender: Flask, runs: list[Any], started_at: datetime, **extra: Any) -> None:
        self.per_task.add_started(run.task_id for run in runs)

    def on_runs_finished(self, sender: Flask, runs: list[Any], **extra: Any) -> None:
        self.per_task.add_finished(runs)
        for run in runs:
            if run.duration_seconds is not None:
                self.run_duration_buckets.observe(run.duration_seconds)

    def on_slots_skipped(self, sender: Flask, skips: list[Any], **extra: Any) -> None:
        self.per_task.add_skipped(skip.task_id for skip in skips)

    def on_tick_finished(self, sender: Flask, report: Any, duration_seconds: float, **extra: Any) -> None:
        self.ticks.inc()
        self.tick_duration.observe(duration_seconds)
        if report.lost_claims:
            self.claims_lost.inc(report.lost_claims)
        if report.errors:
            self.tick_errors.inc(report.errors)

    def observe_start_lag(self, trigger: str, lag_seconds: float) -> None:
        self.start_lag.labels(trigger).observe(max(lag_seconds, 0.0))

    def connect(self) -> None:
        # Bound methods are held weakly by blinker; `self` lives in app.extensions as long as the app.
        events.runs_started.connect(self.on_runs_started, self.app)
        events.runs_finished.connect(self.on_runs_finished, self.app)
        events.slots_skipped.connect(self.on_slots_skipped, self.app)
        events.tick_finished.connect(self.on_tick_finished, self.app)

    # --- exposition ----------------------------------------------------------------------------

    def exposition_registry(self) -> CollectorRegistry:
        """A registry for one scrape: this process's (or every process's) instruments, and the database's."""
        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir:
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        else:
            registry.register(_Forward(self.registry))
        registry.register(self.database)
        return registry

    def render(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.exposition_registry()), content_type


class _Forward:
    """Collects another registry (so one scrape is one registry: one `# EOF` in OpenMetrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return self.registry.collect()


class DatabaseCollector:
    """Numbers that are facts in the database, read at scrape time (the same from every process)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("scheduler_database_up", "1 if the database answered this scrape's queries.")
        try:
            with self.app.app_context():
                families = self._read()
                db.session.commit()
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        session = db.session
        _, enabled_count, by_status = listing.task_counts([])
        tasks = GaugeMetricFamily("scheduler_tasks", "Tasks by status.", labels=["status"])
        for status, count in by_status.items():
            tasks.add_metric([status], count)

        enabled = GaugeMetricFamily("scheduler_tasks_enabled", "Tasks that are enabled.")
        enabled.add_metric([], enabled_count)

        info = GaugeMetricFamily("scheduler_task_info", "1 for each task: its name, for joins on task_id.",
                                 labels=["task_id", "task"])
        for task_id, name in session.execute(sa.select(Task.id, Task.name).order_by(Task.id)):
            info.add_metric([str(task_id), name], 1)

        alerts = GaugeMetricFamily("scheduler_alerts", "Alerts by delivery status.", labels=["status"])
        alert_counts = dict.fromkeys(ALERT_STATUSES, 0)
        for status, count in session.execute(sa.select(Alert.status, sa.func.count()).group_by(Alert.status)):
            alert_counts[status] = count
        for status, count in alert_counts.items():
            alerts.add_metric([status], count)

        families: list[Metric] = [tasks, enabled, info, alerts, *_pool_gauges()]
        last_tick = session.execute(sa.select(SchedulerState.last_tick_at).where(SchedulerState.id == 1)).scalar()
        if last_tick is not None:
            tick = GaugeMetricFamily(
                "scheduler_last_tick_timestamp_seconds",
                "When any scheduler process last ticked (Unix time); alert when it falls behind.",
            )
            tick.add_metric([], last_tick.timestamp())
            families.append(tick)
        return families


def _pool_gauges() -> list[Metric]:
    """Each pool's slots, the runs holding one, and the pending runs of its tasks waiting."""
    slots = GaugeMetricFamily("scheduler_pool_slots", "Runs a pool lets run at once.", labels=["pool"])
    running = GaugeMetricFamily("scheduler_pool_running", "Runs holding a slot of the pool.", labels=["pool"])
    waiting = GaugeMetricFamily("scheduler_pool_waiting", "Pending runs of the pool's tasks.", labels=["pool"])
    queued = pools.waiting_by_pool()
    for pool in pools.list_pools():
        slots.add_metric([pool.name], pool.slots)
        running.add_metric([pool.name], pool.running)
        waiting.add_metric([pool.name], queued.get(pool.name, 0))
    return [slots, running, waiting]


def _authorized() -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip()) and auth.token_holder(token.strip()) is not None


def metrics_view() -> Response:
    if not current_app.config["METRICS_PUBLIC"] and not _authorized():
        abort(401, message="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics_of(current_app).render(request.headers.get("Accept"))
    return Response(body, status=200, content_type=content_type)


def metrics_of(app: Flask) -> Metrics:
    return app.extensions["ops"].metrics


def init_app(app: Flask) -> Metrics:
    metrics = Metrics(app)
    metrics.connect()
    app.add_url_rule(METRICS_PATH, "metrics", metrics_view, methods=["GET"])
    return metrics

