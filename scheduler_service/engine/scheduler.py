"""The engine of one process and the Flask extension that owns it.

APScheduler is the timer only: its thread runs our tick job (tick.py claims due work
from our own tables: APScheduler's job stores cannot be shared between processes) and
the heartbeat job (leases.py). The tick wakes at the earliest due time, at least every
SCHEDULER_TICK_SECONDS, and at once when this process changes or finishes work. The
``Engine`` wires the threads together: timer, workers (workers.py), recorder
(recorder.py), watchdog; this module runs on the timer thread and the workers.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import click
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.serving import is_running_from_reloader

from ..clock import utcnow
from ..config import ConfigError
from ..logcontext import log_context
from .. import events
from ..database import db
from . import cancels
from .claim_window import ClaimWindow
from .run_stops import RunStops
from .containment import RunCgroups
from .executors import GuardRails, abandoned_outcome, close_executors, execute_action, executors_with
from .records import ClaimedRun, FinishedRun, Outcome, RunResult, SkippedSlot
from .recorder import RECORD_BATCH, Recorder
from .leases import recover_lost_runs, renew_leases
from .tick import TickReport, mark_tick, tick
from .watchdog import Watchdog
from .workers import Workers

log = logging.getLogger(__name__)

# While a dependency gate waits, look again soon: its parent may finish in another process.
WAITING_RECHECK_SECONDS = 1.0
BACKLOG_RECHECK_SECONDS = 0.02
# The tick time shown in /api/stats is written at most this often (it is one more commit).
MARK_TICK_SECONDS = 1.0
# How often a process that runs something reads the cancels asked of it: a cancel takes effect within this.
CANCEL_POLL_SECONDS = 1.0


class Engine:
    """One process's scheduler: the timer, a bounded pool of workers, a recorder and the leases of its runs.

    A run goes: claimed by a tick (its lease starts) -> queued on the pool -> executed
    by a worker -> its result queued for the recorder -> recorded in a batch, and only
    then does this process stop renewing its lease.
    """

    def __init__(self, app: Flask, clock: Callable[[], datetime] = utcnow) -> None:
        config = app.config
        self.app = app
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_workers: int = config["SCHEDULER_MAX_WORKERS"]
        self.window = ClaimWindow(self.max_workers, RECORD_BATCH)
        self.tick_seconds: float = config["SCHEDULER_TICK_SECONDS"]
        self.lease_seconds: float = config["RUN_LEASE_SECONDS"]
        self.output_limit: int = config["RUN_OUTPUT_LIMIT_BYTES"]
        self.shell_enabled: bool = config["SHELL_ACTIONS_ENABLED"]
        self.cgroups = _shell_cgroups(config, self.owner) if self.shell_enabled else None
        self.watchdog = Watchdog(on_abandon=self._abandon)
        self.executors = executors_with(self.cgroups, self.watchdog, GuardRails.from_config(config),
                                        connections=self.max_workers)
        self._running_on: dict[int, tuple[ClaimedRun, datetime]] = {}  # worker thread ident -> its run
        self.pool = Workers(self.max_workers, self._execute, name="scheduler-run")
        self.timer = BackgroundScheduler(timezone=timezone.utc)
        self.stopping = threading.Event()
        self._in_flight: set[int] = set()  # claimed and not yet recorded
        # Each claimed run's stop event: set at shutdown (running actions stop, queued ones do
        # not start) or when the run is cancelled.
        self.stops = RunStops()
        self._lock = threading.Lock()
        self._wake_requested = threading.Event()
        self._ticking = threading.Event()
        self._tick_lock = threading.Lock()
        self._last_mark = 0.0
        # One writer at a time within this process: SQLite lets one transaction write,
        # and a second writer waits in its busy handler, which sleeps in steps of up
        # to 100 ms. Taking turns here costs nothing on PostgreSQL.
        self._db_lock = threading.Lock()
        self.recorder = Recorder(app, self.owner, self._db_lock, self.in_flight_count, self._recorded)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        now = datetime.now(timezone.utc)
        self.timer.add_job(
            self._tick_job, IntervalTrigger(seconds=self.tick_seconds), id="tick",
            next_run_time=now, max_instances=1, coalesce=True, misfire_grace_time=None,
        )
        self.timer.add_job(
            self._heartbeat_job, IntervalTrigger(seconds=max(self.lease_seconds / 3, 0.2)), id="heartbeat",
            next_run_time=now, max_instances=1, coalesce=True, misfire_grace_time=None,
        )
        self.timer.add_job(
            self._cancel_job, IntervalTrigger(seconds=CANCEL_POLL_SECONDS), id="cancels",
            next_run_time=now, max_instances=1, coalesce=True, misfire_grace_time=None,
        )
        self.pool.start()
        self.recorder.start()
        self.timer.start()
        log.info("scheduler started as %s (%d workers)", self.owner, self.max_workers)
        if self.cgroups is not None:
            log.info("shell runs get a cgroup each under %s, at most %d processes (SHELL_MAX_PROCESSES)",
                     self.cgroups.home, self.cgroups.max_processes)

    def shutdown(self, grace_seconds: float = 0) -> None:
        """Stop claiming; let running runs finish for ``grace_seconds``; stop the rest so they are retried."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._remove_job("tick")
        with self._tick_lock:
            pass  # a tick in progress finishes submitting what it claimed before we count
        deadline = time.monotonic() + grace_seconds
        while self.in_flight_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stops.stop_all()
        # Stopped actions end within moments (their process groups are killed); let them record.
        deadline = time.monotonic() + 30
        while self.in_flight_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.in_flight_count():
            log.error("%d runs did not record their outcome; lease recovery will finish them", self.in_flight_count())
        self.recorder.stop_when_empty()
        self._remove_job("cancels")
        self.timer.shutdown(wait=False)
        # A queued run sees the stop event at once and records itself as stopped.
        self.pool.shutdown()
        self.watchdog.close()
        self.recorder.join(timeout=5)
        close_executors(self.executors)
        if self.cgroups is not None:
            self.cgroups.close()
        log.info("scheduler %s stopped", self.owner)

    def wake(self) -> None:
        """Tick as soon as possible (thread-safe)."""
        self._wake_requested.set()
        # A tick in progress sees the request when it ends and ticks again.
        if not self.stopping.is_set() and not self._ticking.is_set():
            try:
                self.timer.modify_job("tick", next_run_time=datetime.now(timezone.utc))
            except JobLookupError:
                pass

    def in_flight_count(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def claim_window(self) -> int:
        """How many runs this process may hold claimed now (ClaimWindow)."""
        return self.window.size()

    def _room_to_claim(self) -> bool:
        return self.window.has_room(self.in_flight_count())

    def _remove_job(self, job_id: str) -> None:
        try:
            self.timer.remove_job(job_id)
        except JobLookupError:
            pass

    # --- jobs ---------------------------------------------------------------------------

    def _tick_job(self) -> None:
        with self._tick_lock:
            self._ticking.set()
            try:
                self._tick_until_no_wake()
            finally:
                self._ticking.clear()

    def _tick_until_no_wake(self) -> None:
        # A wake that arrives while a tick runs is not lost: tick again.
        while not self.stopping.is_set():
            self._wake_requested.clear()
            capacity = self.claim_window() - self.in_flight_count()
            mark = time.monotonic() - self._last_mark >= MARK_TICK_SECONDS
            started = time.monotonic()
            with self._db_lock, self.app.app_context():
                now = self.clock()
                report = tick(now, owner=self.owner, capacity=capacity,
                              on_committed=lambda committed: self._start(committed, now))
            if mark:
                # After the runs are on their way: the stats' tick time must not delay them.
                self._mark(now)
            events.tick_finished.send(self.app, report=report, duration_seconds=time.monotonic() - started)
            if self._wake_requested.is_set():
                continue
            # Only now: a timer set while this job still runs would fire into it, and
            # APScheduler skips that run with a warning.
            self._schedule_next_tick(report)
            if not self._wake_requested.is_set():  # a wake in between saw us ticking and left it to us
                return

    def _mark(self, now: datetime) -> None:
        try:
            with self._db_lock, self.app.app_context():
                mark_tick(now)
        except SQLAlchemyError as exc:
            log.warning("writing the tick time failed: %s", exc.__class__.__name__)
            return
        self._last_mark = time.monotonic()

    def _schedule_next_tick(self, report: TickReport) -> None:
        now = datetime.now(timezone.utc)
        target = now + timedelta(seconds=self.tick_seconds)
        if report.next_due_at is not None:
            # The clock may be injected (tests); translate its due time into real time.
            target = min(target, now + (report.next_due_at - self.clock()))
        if report.waiting:
            target = min(target, now + timedelta(seconds=WAITING_RECHECK_SECONDS))
        if report.lost_claims or (report.saturated and self._room_to_claim()):
            # Due work is left (another process took what we saw, or we had no room
            # then): look again at once rather than at the next future slot.
            target = min(target, now + timedelta(seconds=BACKLOG_RECHECK_SECONDS))
        if self.stopping.is_set():
            return
        try:
            self.timer.modify_job("tick", next_run_time=max(target, now))
        except JobLookupError:
            pass

    def _heartbeat_job(self) -> None:
        """Renew our leases, finish other processes' lost runs, and kill what dead schedulers left running here."""
        if self.cgroups is not None:
            self.cgroups.sweep_dead()
        with self._lock:
            running = list(self._in_flight)
        try:
            with self._db_lock, self.app.app_context():
                now = self.clock()
                renew_leases(running, self.owner, now)
                recovered = recover_lost_runs(now, self.lease_seconds, running)
        except SQLAlchemyError as exc:
            log.warning("renewing leases failed: %s", exc.__class__.__name__)
            return
        if recovered:
            self._announce(recovered, [])
            self.wake()  # their retries may be due

    def _cancel_job(self) -> None:
        """Stop the runs of this process that someone cancelled (engine/cancels.py): one query
        a second, and none while this process runs nothing."""
        if not self.stops.held():
            return
        try:
            with self._db_lock, self.app.app_context():
                asked = cancels.requested(self.owner)
                gone = self.stops.cancel(asked)
                if gone:  # finished before the cancel was seen: nothing left to stop
                    cancels.forget(gone)
                db.session.commit()
        except SQLAlchemyError as exc:
            log.warning("reading cancels failed: %s", exc.__class__.__name__)
            return
        for run_id in asked.keys() - set(gone):
            log.info("run %s: %s", run_id, asked[run_id])

    def _announce(self, finished: list[FinishedRun], skips: list[SkippedSlot]) -> None:
        if finished:
            events.runs_finished.send(self.app, runs=finished)
        if skips:
            events.slots_skipped.send(self.app, skips=skips)

    # --- runs ---------------------------------------------------------------------------

    def _start(self, report: TickReport, now: datetime) -> None:
        # Skips first: whoever sees a run start has already heard of the slots it made way for.
        self._announce([], report.skips)
        for run in report.claimed:
            self._submit(run)
        if report.claimed:
            events.runs_started.send(self.app, runs=report.claimed, started_at=now)

    def _submit(self, claimed: ClaimedRun) -> None:
        with self._lock:
            self._in_flight.add(claimed.run_id)
        self.stops.add(claimed.run_id)
        try:
            self.pool.submit(claimed)
        except RuntimeError:  # the workers are shut down: leave the run to lease recovery
            with self._lock:
                self._in_flight.discard(claimed.run_id)
            self.stops.forget(claimed.run_id)

    def _execute(self, claimed: ClaimedRun) -> None:
        started_at = self.clock()
        worker = threading.get_ident()
        self._running_on[worker] = (claimed, started_at)
        try:
            with log_context(task_id=claimed.task_id, run_id=claimed.run_id, attempt=claimed.attempt):
                outcome = self._perform(claimed, self.stops.event(claimed.run_id))
        except BaseException as exc:  # the executors never raise; if one does, the run still ends
            outcome = Outcome(succeeded=False, message=f"internal error: {exc!r}")
        del self._running_on[worker]
        outcome = self.stops.finish(claimed.run_id, outcome)
        if not outcome.abandoned:  # else _abandon recorded the run long ago
            self.recorder.put(RunResult(claimed.run_id, outcome, started_at, self.clock()))

    def _abandon(self, worker: int, reason: str, output: str) -> None:
        """The watchdog gave up on the python call that ``worker`` runs: record the run, replace the worker."""
        claimed, started_at = self._running_on[worker]
        log.warning("python action %s still runs after TimeoutError (blocked in C code, or it caught the"
                    " exception); its run is failed and its worker replaced", claimed.action.get("callable"))
        outcome = self.stops.finish(
            claimed.run_id, abandoned_outcome(reason, claimed.timeout_seconds, output, self.output_limit))
        self.recorder.put(RunResult(claimed.run_id, outcome, started_at, self.clock()))
        self.pool.replace(worker)

    def _perform(self, claimed: ClaimedRun, stop: threading.Event) -> Outcome:
        if claimed.action.get("type") == "shell" and not self.shell_enabled:
            return Outcome(succeeded=False, message="shell actions are disabled (SHELL_ACTIONS_ENABLED=false)")
        return execute_action(
            claimed.action, timeout=claimed.timeout_seconds, output_limit=self.output_limit, stop=stop,
            executors=self.executors,
        )

    def _recorded(self, batch: list[RunResult], finished: list[FinishedRun]) -> None:
        """The recorder wrote ``batch`` (``finished`` is what it recorded): stop renewing their leases, tell."""
        with self._lock:
            self._in_flight.difference_update(result.run_id for result in batch)
        self.window.note_recorded(len(batch))
        self._announce(finished, [])
        if self._room_to_claim():
            self.wake()  # workers are free, and retries or dependent runs may be due


def _shell_cgroups(config, owner: str) -> RunCgroups | None:
    """The cgroups for shell runs that SHELL_CONTAINMENT asks for; ConfigError if it demands what is missing."""
    mode = config["SHELL_CONTAINMENT"]
    if mode == "process-group":
        return None
    cgroups, reason = RunCgroups.detect(owner, config["SHELL_MAX_PROCESSES"])
    if cgroups is None:
        if mode == "cgroup":
            raise ConfigError(f"SHELL_CONTAINMENT='cgroup': {reason}")
        log.warning("shell runs are contained by process groups only (no cgroups: %s); SHELL_MAX_PROCESSES"
                    " is not enforced and a child that calls setsid can outlive its run", reason)
    return cgroups


def _serving_process() -> bool:
    """True where this process serves requests: a WSGI server, or ``flask run`` (its reloader child only)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    if ctx.info_name != "run":
        return False
    return not ctx.params.get("reload") or is_running_from_reloader()


class SchedulerExtension:
    """Flask extension: ``init_app`` starts the engine in serving processes when enabled."""

    def init_app(self, app: Flask) -> None:
        app.extensions["scheduler"] = None
        if app.config["SCHEDULER_ENABLED"] and _serving_process():
            self.start(app)

    def start(self, app: Flask, clock: Callable[[], datetime] = utcnow) -> Engine:
        engine = app.extensions.get("scheduler")
        if engine is None:
            engine = Engine(app, clock)
            app.extensions["scheduler"] = engine
            engine.start()
            grace = app.config["SCHEDULER_SHUTDOWN_GRACE_SECONDS"]
            atexit.register(engine.shutdown, grace)
        return engine

    def stop(self, app: Flask, grace_seconds: float = 0) -> None:
        engine = app.extensions.get("scheduler")
        if engine is not None:
            engine.shutdown(grace_seconds)
            app.extensions["scheduler"] = None

    def wake(self) -> None:
        engine = current_app.extensions.get("scheduler")
        if engine is not None:
            engine.wake()

    def run_forever(self, app: Flask) -> None:
        """Run until SIGINT/SIGTERM, then shut down gracefully and return."""
        received = threading.Event()

        def on_signal(signum, frame) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            received.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        self.start(app)
        while not received.wait(1.0):
            pass
        self.stop(app, app.config["SCHEDULER_SHUTDOWN_GRACE_SECONDS"])
