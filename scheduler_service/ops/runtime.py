"""The background jobs of a process where the engine runs: alert intake, alert delivery, retention.

They start the first time this process's engine finishes a tick (``events.tick_finished``),
so a process that serves only the API, or a CLI command, never runs them. Each is a
daemon thread of its own: a slow webhook or a long retention pass never takes a
thread the scheduler needs. They end when the engine stops (``stop`` ends them at once).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask

from . import retention
from .alerts import AlertIntake
from .delivery import DUE_ALERTS_POLL_SECONDS, AlertSender

if TYPE_CHECKING:
    from ..engine.scheduler import Engine

log = logging.getLogger(__name__)

INTAKE_POLL_SECONDS = 0.25


class OpsRuntime:
    def __init__(self, app: Flask, engine: Engine, intake: AlertIntake, sender: AlertSender,
                 count_pruned: Callable[[int], None]) -> None:
        self.app = app
        self.engine = engine
        self.intake = intake
        self.sender = sender
        self.count_pruned = count_pruned
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, loop in (("alert-intake", self._intake_loop), ("alert-sender", self._sender_loop),
                           ("retention", self._retention_loop)):
            thread = threading.Thread(target=self._guard(loop), name=f"ops-{name}", daemon=True)
            self.threads.append(thread)
            thread.start()
        log.info("operations jobs started (alerts, retention)")

    def stop(self, timeout: float = 10.0) -> None:
        """End the jobs now (the intake writes what it has queued first)."""
        self.stopped.set()
        self.intake.inserted.set()
        self.intake.nudge()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0))

    # --- when to stop -------------------------------------------------------------------------

    def _engine_stopping(self) -> bool:
        return self.stopped.is_set() or self.engine.stopping.is_set()

    def _engine_gone(self) -> bool:
        """Stopped, and no run of it can finish any more (its last outcomes are queued)."""
        if self.stopped.is_set():
            return True
        return self.engine.stopping.is_set() and not self.engine.timer.running and self.engine.in_flight_count() == 0

    def _sleep(self, seconds: float) -> bool:
        """Wait; False if the engine stopped meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._engine_stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.stopped.wait(min(left, 0.5))
        return False

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except Exception:  # a bug here must not go unseen, nor take anything else down
                log.exception("operations job %s crashed", threading.current_thread().name)
        return run

    # --- the jobs -----------------------------------------------------------------------------

    def _intake_loop(self) -> None:
        while True:
            gone = self._engine_gone()
            items = self.intake.drain(0 if gone else INTAKE_POLL_SECONDS)
            try:
                self.intake.process(items, self.engine.clock())
            except Exception:
                log.exception("alert intake failed on %d events", len(items))
            if gone and self.intake.queue.empty():
                return

    def _sender_loop(self) -> None:
        wake = self.intake.inserted
        while not self._engine_stopping():
            wake.wait(DUE_ALERTS_POLL_SECONDS)
            wake.clear()
            try:
                while self.sender.send_due(should_stop=self._engine_stopping) and not self._engine_stopping():
                    pass
            except Exception:
                log.exception("alert sender failed")
        self.sender.close()

    def _retention_loop(self) -> None:
        config = self.app.config
        first, interval = config["RETENTION_FIRST_PASS_DELAY_SECONDS"], config["RETENTION_INTERVAL_SECONDS"]
        if not self._sleep(first):
            return
        while True:
            started = time.monotonic()
            try:
                report = retention.configured_pass(self.app, self.engine.clock(), should_stop=self._engine_stopping)
            except Exception:
                log.exception("retention pass failed; trying again in %.0fs", interval)
            else:
                if report.runs or report.alerts:
                    self.count_pruned(report.runs)
                    log.info("retention: deleted %d runs (%d by age, %d beyond the per-task limit) and %d alerts "
                             "in %.1fs", report.runs, report.by_age, report.by_count, report.alerts,
                             time.monotonic() - started)
            # Some jitter, so that several processes do not all prune at the same moment.
            if not self._sleep(interval * random.uniform(0.9, 1.1)):
                return
