"""Operations: metrics, alerts by webhook, run retention and structured logs.

``init_app`` wires what every process has (the /metrics view, the signal receivers,
``flask prune-runs``, logging; ``/api/alerts/`` is in ``api/alerts.py``). The background jobs (alert
intake and delivery, retention) start only where the engine runs, on its first
tick (see ``runtime``).

State lives in ``app.extensions["ops"]``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask

from .. import events
from . import logging as ops_logging
from . import metrics, retention
from . import models  # noqa: F401  (registers Alert on db.metadata, for migrations)
from .alerts import AlertIntake
from .delivery import AlertSender
from .runtime import OpsRuntime


@dataclass
class OpsState:
    metrics: metrics.Metrics
    intake: AlertIntake
    runtime: OpsRuntime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_tick_finished(self, sender: Flask, **extra: object) -> None:
        """Start this process's jobs on its engine's first tick (and again for a new engine)."""
        engine = sender.extensions.get("scheduler")
        if engine is None or (self.runtime is not None and self.runtime.engine is engine):
            return
        with self.lock:
            if self.runtime is not None and self.runtime.engine is engine:
                return
            if self.runtime is not None:
                self.runtime.stop(timeout=0)
            runtime = OpsRuntime(
                sender, engine, self.intake,
                AlertSender(sender, lambda result: self.metrics.alert_deliveries.labels(result).inc()),
                self.metrics.runs_pruned.inc,
            )
            self.runtime = runtime
        runtime.start()


def init_app(app: Flask) -> None:
    ops_logging.init_app(app)
    app_metrics = metrics.init_app(app)
    intake = AlertIntake(app, app_metrics.observe_start_lag)
    intake.connect()
    state = OpsState(app_metrics, intake)
    app.extensions["ops"] = state
    events.tick_finished.connect(state.on_tick_finished, app)
    retention.init_app(app)


def stop_jobs(app: Flask, timeout: float = 10.0) -> None:
    """End this process's background jobs now (tests; the engine's own stop ends them too)."""
    state: OpsState | None = app.extensions.get("ops")
    if state is not None and state.runtime is not None:
        state.runtime.stop(timeout)
        state.runtime = None
