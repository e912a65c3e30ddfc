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
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, request
from flask_smorest import abort
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from .. import auth, events, listing
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


class Metrics:
    """One app's metrics: the instruments the signals update and the scrape-time collectors."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.multiprocess_dir: str | None = app.config.get("PROMETHEUS_MULTIPROC_DIR")
        # In multiprocess mode the values live in files, not in a registry of this process.
        self.registry = None if self.multiprocess_dir else CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.runs_started = Counter(
            "scheduler_runs_started", "Runs this scheduler started, by task.", ["task_id"], registry=registry,
        )
        self.runs_finished = Counter(
            "scheduler_runs_finished", "Runs whose outcome was recorded, by task and outcome (success or failed).",
            ["task_id", "outcome"], registry=registry,
        )
        self.slots_skipped = Counter(
            "scheduler_slots_skipped", "Slots logged as skipped (missed, concurrency, dependency gate), by task.",
            ["task_id"], registry=registry,
        )
        # Per task a sum and a count (the average); the buckets are kept once, over all tasks:
        # a histogram per task would be ~17 series and ~20 objects for each of 100,000 tasks.
        self.run_duration = Summary(
            "scheduler_run_duration_seconds", "How long finished runs took, by task (sum and count).", ["task_id"],
            registry=registry,
        )
        self.run_duration_buckets = Histogram(
            "scheduler_run_duration_all_tasks_seconds", "How long finished runs took, all tasks together.",
            buckets=DURATION_BUCKETS, registry=registry,
        )
        self.start_lag = Histogram(
            "scheduler_run_start_lag_seconds", "How long after its slot (or request, or retry time) a run started.",
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
        for run in runs:
            self.runs_started.labels(str(run.task_id)).inc()

    def on_runs_finished(self, sender: Flask, runs: list[Any], **extra: Any) -> None:
        for run in runs:
            self.runs_finished.labels(str(run.task_id), run.status).inc()
            if run.duration_seconds is not None:
                self.run_duration.labels(str(run.task_id)).observe(run.duration_seconds)
                self.run_duration_buckets.observe(run.duration_seconds)

    def on_slots_skipped(self, sender: Flask, skips: list[Any], **extra: Any) -> None:
        for skip in skips:
            self.slots_skipped.labels(str(skip.task_id)).inc()

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

        families: list[Metric] = [tasks, enabled, info, alerts]
        last_tick = session.execute(sa.select(SchedulerState.last_tick_at).where(SchedulerState.id == 1)).scalar()
        if last_tick is not None:
            tick = GaugeMetricFamily(
                "scheduler_last_tick_timestamp_seconds",
                "When any scheduler process last ticked (Unix time); alert when it falls behind.",
            )
            tick.add_metric([], last_tick.timestamp())
            families.append(tick)
        return families


def _authorized() -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip()) and auth.token_is_valid(token.strip())


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

