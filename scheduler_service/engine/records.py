"""The records the engine's threads hand each other: plain frozen dataclasses, no behaviour.

An executor (a worker thread) makes an ``Outcome``; the worker wraps it in a ``RunResult``
for the recorder thread, which answers with ``FinishedRun``s; a tick (the timer thread)
claims ``ClaimedRun``s and skips ``SkippedSlot``s. Metrics and alerts receive the same
records through the signals in ``events.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What one execution of an action produced."""

    succeeded: bool
    message: str = ""  # one line; "" on success
    output: str = ""  # the tail of the output, at most output_limit bytes as UTF-8
    exit_code: int | None = None  # shell only; negative = killed by that signal
    http_status: int | None = None  # http only
    interrupted: bool = False  # stopped by shutdown, not by its own doing
    cancelled: bool = False  # stopped because someone cancelled it: never retried (engine/cancels.py)
    # The call was given up on, and its outcome recorded then (Watchdog): drop this late one.
    abandoned: bool = False


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process now owns and must execute."""

    run_id: int
    task_id: int
    attempt: int
    action: dict[str, Any]
    timeout_seconds: int | None
    trigger: str  # schedule, retry, manual, dependency or backfill
    scheduled_for: datetime
    # When the run was due to start: the slot plus the jitter drawn for it (None: the slot).
    due_at: datetime | None = None

    @property
    def start_due_at(self) -> datetime:
        return self.due_at or self.scheduled_for


@dataclass(frozen=True)
class SkippedSlot:
    """A slot logged as skipped. ``parent_id`` and ``parent_status`` name the parent that stopped
    it, when one did: alerts read them, never the message, which is for people."""

    task_id: int
    slot: datetime
    message: str
    parent_id: int | None = None
    parent_status: str | None = None


@dataclass(frozen=True)
class RunResult:
    """An action's outcome, waiting to be recorded."""

    run_id: int
    outcome: Outcome
    started_at: datetime | None  # when the action really began; None keeps the claim time
    finished_at: datetime


@dataclass(frozen=True)
class FinishedRun:
    """What recording an outcome did: the facts metrics and alerts are made of."""

    run_id: int
    task_id: int
    task_name: str
    attempt: int
    trigger: str
    status: str  # success or failed
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime
    duration_seconds: float | None
    message: str
    retry_at: datetime | None  # when it will be retried; None after a success or the last attempt
    previous_outcome: str | None  # the task's finished run before this one: success, failed or None
    cancelled: bool = False  # a cancelled run is neither a failure to alert on nor retried
    paused: bool = False  # this failure paused the task (pause_after_failures)

    @property
    def gave_up(self) -> bool:
        return self.status == "failed" and self.retry_at is None and not self.cancelled

    @property
    def recovered(self) -> bool:
        return self.status == "success" and self.previous_outcome == "failed"
