"""Alerts by webhook: decide from the engine's signals and write to the ``alert`` table (delivery.py sends them).

The path of one alert:

1. A signal receiver (on a scheduler thread) only puts the event on an in-memory
   queue: nothing here can block or slow a tick or a run.
2. ``AlertIntake`` (a thread of the engine's process) reads the task's ``notify``
   settings, decides which events apply and inserts one ``alert`` row per event.
3. ``AlertSender`` (delivery.py, another thread) claims due rows and POSTs them.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .. import events
from ..clock import utcnow
from ..database import db
from ..engine.records import ClaimedRun, FinishedRun, SkippedSlot
from ..models import Run, Task, task_dependencies
from ..schemas import DEFAULT_NOTIFY_EVENTS
from ..logcontext import log_context
from .models import Alert

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10000
# Runs a person asked for (run now, backfill): their start is never `late`, whatever their slot.
ASKED_FOR = ("manual", "backfill")


# --- what to send, to whom (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A task's resolved alert settings: where, and for which events."""

    url: str
    events: frozenset[str]
    late_after_seconds: int | None = None
    slow_after_seconds: int | None = None

    def wants(self, event: str) -> bool:
        return event in self.events


def target_for(notify: dict[str, Any] | None, default_url: str | None) -> Target | None:
    """A task without ``notify`` gets the default webhook (if any) for the default events;
    ``notify`` without ``url`` uses the default webhook; no URL at all means no alerts."""
    if notify is None:
        return Target(default_url, frozenset(DEFAULT_NOTIFY_EVENTS)) if default_url else None
    url = notify.get("url") or default_url
    if not url:
        return None
    wanted = notify.get("events")
    return Target(
        url,
        frozenset(DEFAULT_NOTIFY_EVENTS if wanted is None else wanted),
        notify.get("late_after_seconds"),
        notify.get("slow_after_seconds"),
    )


def finished_events(run: FinishedRun, target: Target) -> list[str]:
    """The events a recorded outcome raises (``slow`` is decided apart: it may come while running)."""
    found = []
    if run.cancelled:
        pass  # someone stopped it: not a failure to tell anyone about, and no retry follows
    elif run.status == "failed":
        found.append("failure" if run.gave_up else "retry")
        if run.paused:
            found.append("paused")
    elif run.status == "success":
        found.append("success")
        # Recovered: the first success after a run that ended its chain failed (a `failure` event);
        # a retry that succeeds is not a recovery from an alert the receiver has seen.
        if run.recovered and run.attempt == 1:
            found.append("recovered")
    return [event for event in found if target.wants(event)]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _finished_run_document(run: FinishedRun) -> dict[str, Any]:
    return {
        "id": run.run_id, "attempt": run.attempt, "trigger": run.trigger, "status": run.status,
        "scheduled_for": _iso(run.scheduled_for), "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at), "duration_seconds": run.duration_seconds,
        "message": run.message, "retry_at": _iso(run.retry_at),
    }


def _summary(event: str, name: str, run: FinishedRun) -> str:
    if event == "failure":
        text = f"task '{name}' failed on attempt {run.attempt}, no retries left"
    elif event == "retry":
        text = f"task '{name}' failed on attempt {run.attempt}; retry at {_iso(run.retry_at)}"
    elif event == "recovered":
        text = f"task '{name}' succeeded again after failing"
    elif event == "paused":
        text = f"task '{name}' paused itself after failing too often (pause_after_failures); resume it when fixed"
    else:
        text = f"task '{name}' succeeded"
    if run.duration_seconds is not None:
        text += f" ({run.duration_seconds:.1f}s)"
    return f"{text}: {run.message}" if run.message and run.status == "failed" else text


def payload(event: str, task_id: int, task_name: str, text: str, **details: Any) -> dict[str, Any]:
    """The JSON body (the delivery adds ``id``). ``text`` is one line for a person (Slack shows it)."""
    return {"event": event, "task": {"id": task_id, "name": task_name}, "text": text, **details}


# --- intake: events -> alert rows (a thread of the engine's process) ---------------------------


@dataclass
class _SlowWatch:
    """A run of a task that wants ``slow``, started in this process and not finished yet."""

    task_id: int
    task_name: str
    target: Target
    run: dict[str, Any]
    started_at: datetime
    alerted: bool = False


@dataclass
class _TaskInfo:
    name: str
    notify: dict[str, Any] | None


@dataclass
class _Batch:
    alerts: list[Alert] = field(default_factory=list)


class AlertIntake:
    """Receives the engine's signals into a queue; ``process`` turns them into ``alert`` rows."""

    def __init__(self, app: Flask, observe_start_lag: Callable[[str, float], None]) -> None:
        self.app = app
        self.observe_start_lag = observe_start_lag
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0
        self.watches: dict[int, _SlowWatch] = {}
        self.inserted = threading.Event()  # set after alerts were written (wakes the sender)
        self._last_watch_sweep = time.monotonic()

    # --- signal receivers (scheduler threads: no I/O) -------------------------------------------

    # The queue holds one entry per signal, (kind, subjects, *extra); drain() hands out one per subject.

    def on_runs_started(self, sender: Flask, runs: list[ClaimedRun], started_at: datetime, **extra: Any) -> None:
        self._put(("started", runs, started_at))

    def on_runs_finished(self, sender: Flask, runs: list[FinishedRun], **extra: Any) -> None:
        self._put(("finished", runs))

    def on_slots_skipped(self, sender: Flask, skips: list[SkippedSlot], **extra: Any) -> None:
        self._put(("skipped", skips))

    def _put(self, entry: tuple[Any, ...]) -> None:
        try:
            self.queue.put_nowait(entry)
        except queue.Full:
            self.dropped += len(entry[1])
            log.error("alert intake queue full: %d events dropped so far", self.dropped)

    def nudge(self) -> None:
        """Wake the intake thread now (an entry it ignores)."""
        self._put(("nudge", []))

    def connect(self) -> None:
        events.runs_started.connect(self.on_runs_started, self.app)
        events.runs_finished.connect(self.on_runs_finished, self.app)
        events.slots_skipped.connect(self.on_slots_skipped, self.app)

    # --- processing (the intake thread) ------------------------------------------------------

    def drain(self, first_timeout: float, limit: int = 500) -> list[tuple[Any, ...]]:
        """Queued events, one item (kind, subject, *extra) per run or skip; at least ``limit`` if that many wait."""
        entries = []
        try:
            entries.append(self.queue.get(timeout=first_timeout) if first_timeout > 0 else self.queue.get_nowait())
        except queue.Empty:
            return []
        count = len(entries[0][1])
        while count < limit:
            try:
                entries.append(self.queue.get_nowait())
            except queue.Empty:
                break
            count += len(entries[-1][1])
        return [(kind, subject, *extra) for kind, subjects, *extra in entries for subject in subjects]

    def process(self, items: list[tuple[Any, ...]], now: datetime) -> int:
        """Turn events into alert rows, and raise ``slow`` for watched runs; returns the alerts written."""
        items = [item for item in items if item[0] in ("started", "finished", "skipped")]
        if not items and not self.watches:
            return 0
        with self.app.app_context():
            try:
                written = self._process(items, now)
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("alert intake: database error, %d events not turned into alerts: %s",
                            len(items), exc.__class__.__name__)
                return 0
        if written:
            self.inserted.set()
        return written

    def _process(self, items: list[tuple[Any, ...]], now: datetime) -> int:
        default_url = self.app.config.get("ALERT_WEBHOOK_URL")
        task_ids = {item[1].task_id for item in items} | {watch.task_id for watch in self.watches.values()}
        tasks = self._tasks(task_ids, with_default_url=bool(default_url))
        batch = _Batch()
        for item in items:
            kind, subject = item[0], item[1]
            task = tasks.get(subject.task_id)
            with log_context(task_id=subject.task_id, run_id=getattr(subject, "run_id", None),
                             attempt=getattr(subject, "attempt", None)):
                if kind == "started":
                    self._started(subject, item[2], task, default_url, batch)
                elif kind == "finished":
                    self._finished(subject, task, default_url, batch)
                elif kind == "skipped":
                    self._skipped(subject, task, default_url, batch)
        self._check_slow(now, batch)
        self._sweep_watches()
        if not batch.alerts:
            db.session.commit()
            return 0
        db.session.add_all(batch.alerts)
        db.session.flush()
        queued = [(alert.id, alert.event, alert.task_id) for alert in batch.alerts]
        db.session.commit()
        for alert_id, event, task_id in queued:
            log.info("alert %s queued: %s for task %s", alert_id, event, task_id, extra={"task_id": task_id})
        return len(queued)

    def _tasks(self, task_ids: Iterable[int], *, with_default_url: bool) -> dict[int, _TaskInfo]:
        """The tasks among ``task_ids`` that can have alerts: all of them if there is a default
        webhook, else only those with ``notify`` (the rest are left out, as if deleted)."""
        ids = list(task_ids)
        if not ids:
            return {}
        query = sa.select(Task.id, Task.name, Task.notify).where(Task.id.in_(ids))
        if not with_default_url:
            # A task without notify holds SQL NULL, or JSON null once a PATCH cleared it.
            query = query.where(Task.notify.is_not(None), sa.cast(Task.notify, sa.Text) != "null")
        rows = db.session.execute(query).all()
        return {task_id: _TaskInfo(name, notify) for task_id, name, notify in rows}

    def _alert(self, batch: _Batch, target: Target, event: str, task_id: int, body: dict[str, Any]) -> None:
        now = utcnow()  # the wall clock: delivery is about real time, whatever clock the engine runs on
        batch.alerts.append(Alert(
            task_id=task_id, event=event, payload=body, url=target.url, status="pending", attempts=0,
            next_attempt_at=now, last_error="", created_at=now,
        ))

    def _started(self, claimed: ClaimedRun, started_at: datetime, task: _TaskInfo | None,
                 default_url: str | None, batch: _Batch) -> None:
        lag = (started_at - claimed.start_due_at).total_seconds()
        self.observe_start_lag(claimed.trigger, lag)
        target = target_for(task.notify, default_url) if task is not None else None  # None: deleted meanwhile
        if target is None:
            return
        run_doc = {
            "id": claimed.run_id, "attempt": claimed.attempt, "trigger": claimed.trigger, "status": "running",
            "scheduled_for": _iso(claimed.scheduled_for), "started_at": _iso(started_at),
        }
        late_after = target.late_after_seconds
        if target.wants("late") and late_after is not None and claimed.trigger not in ASKED_FOR and lag > late_after:
            text = (f"task '{task.name}' started {lag:.1f}s after its slot {_iso(claimed.scheduled_for)}"
                    f" (late after {late_after}s)")
            self._alert(batch, target, "late", claimed.task_id, payload(
                "late", claimed.task_id, task.name, text, run=run_doc, late_by_seconds=round(lag, 3),
                late_after_seconds=late_after,
            ))
        if target.wants("slow") and target.slow_after_seconds is not None:
            self.watches[claimed.run_id] = _SlowWatch(claimed.task_id, task.name, target, run_doc, started_at)

    def _finished(self, run: FinishedRun, task: _TaskInfo | None, default_url: str | None, batch: _Batch) -> None:
        watch = self.watches.pop(run.run_id, None)
        if task is None:
            return
        target = target_for(task.notify, default_url)
        if target is None:
            return
        run_doc = _finished_run_document(run)
        for event in finished_events(run, target):
            details: dict[str, Any] = {"run": run_doc}
            text = _summary(event, run.task_name, run)
            if event == "failure":
                children = self._children(run.task_id)
                details["skipped_children"] = children
                if children:
                    text += "; its children are skipped until it succeeds: " + ", ".join(
                        f"'{child['name']}'" for child in children
                    )
            self._alert(batch, target, event, run.task_id, payload(event, run.task_id, run.task_name, text, **details))
        slow_after = target.slow_after_seconds
        already = watch is not None and watch.alerted
        if (target.wants("slow") and slow_after is not None and not already
                and run.duration_seconds is not None and run.duration_seconds > slow_after):
            text = f"task '{run.task_name}' took {run.duration_seconds:.1f}s (slow after {slow_after}s)"
            self._alert(batch, target, "slow", run.task_id, payload(
                "slow", run.task_id, run.task_name, text, run=run_doc, slow_after_seconds=slow_after,
                running_seconds=run.duration_seconds,
            ))

    def _children(self, parent_id: int) -> list[dict[str, Any]]:
        """The enabled tasks that depend on ``parent_id``: a failed parent skips (or holds back) them all."""
        rows = db.session.execute(
            sa.select(Task.id, Task.name)
            .join(task_dependencies, task_dependencies.c.child_id == Task.id)
            .where(task_dependencies.c.parent_id == parent_id, Task.enabled)
            .order_by(Task.id)
        ).all()
        return [{"id": task_id, "name": name} for task_id, name in rows]

    def _skipped(self, skip: SkippedSlot, task: _TaskInfo | None, default_url: str | None, batch: _Batch) -> None:
        if task is None:
            return
        target = target_for(task.notify, default_url)
        if target is None or not target.wants("missed"):
            return
        if self._told_by_parent(skip, target, default_url):
            return
        text = f"task '{task.name}': slot {_iso(skip.slot)} skipped: {skip.message}"
        self._alert(batch, target, "missed", skip.task_id, payload(
            "missed", skip.task_id, task.name, text, slot=_iso(skip.slot), message=skip.message,
        ))

    def _told_by_parent(self, skip: SkippedSlot, target: Target, default_url: str | None) -> bool:
        """A slot skipped because a parent failed: that parent's `failure` alert named this child
        to the same webhook, so the child raises none of its own."""
        if skip.parent_status != "failed" or skip.parent_id is None:
            return False
        parent = db.session.execute(sa.select(Task.notify).where(Task.id == skip.parent_id)).one_or_none()
        if parent is None:
            return False
        parent_target = target_for(parent.notify, default_url)
        return parent_target is not None and parent_target.wants("failure") and parent_target.url == target.url

    def _check_slow(self, now: datetime, batch: _Batch) -> None:
        for run_id, watch in self.watches.items():
            slow_after = watch.target.slow_after_seconds
            if watch.alerted or slow_after is None:
                continue
            running = (now - watch.started_at).total_seconds()
            if running > slow_after:
                watch.alerted = True
                text = f"task '{watch.task_name}' has been running for {running:.0f}s (slow after {slow_after}s)"
                with log_context(task_id=watch.task_id, run_id=run_id, attempt=watch.run.get("attempt")):
                    self._alert(batch, watch.target, "slow", watch.task_id, payload(
                        "slow", watch.task_id, watch.task_name, text, run=watch.run, slow_after_seconds=slow_after,
                        running_seconds=round(running, 3),
                    ))

    def _sweep_watches(self) -> None:
        """Forget watched runs that another process finished (their outcome never reaches us)."""
        if not self.watches or time.monotonic() - self._last_watch_sweep < 60:
            return
        self._last_watch_sweep = time.monotonic()
        running = set(db.session.execute(
            sa.select(Run.id).where(Run.id.in_(list(self.watches)), Run.status == "running")
        ).scalars())
        for run_id in [run_id for run_id in self.watches if run_id not in running]:
            del self.watches[run_id]
