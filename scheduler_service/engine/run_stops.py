"""The stop event of each run a process holds: set at shutdown, or when someone cancels the run.

The executors watch one event per run (as they watch their deadline); whoever sets it
decides what the run records: a shutdown stops it to be retried elsewhere, a cancel
(engine/cancels.py) ends it ``cancelled ...`` for good.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace

from .records import Outcome


class RunStops:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[int, threading.Event] = {}
        self._cancelled: dict[int, str] = {}  # run id -> the cancel's message
        self.shutting_down = threading.Event()

    def add(self, run_id: int) -> threading.Event:
        """The stop event of a run just claimed (already set if the process is stopping)."""
        stop = threading.Event()
        with self._lock:
            self._events[run_id] = stop
            if self.shutting_down.is_set():
                stop.set()
        return stop

    def event(self, run_id: int) -> threading.Event:
        with self._lock:
            return self._events.get(run_id) or self.shutting_down

    def stop_all(self) -> None:
        """Shutdown: every run stops (and is retried: this is no cancel)."""
        self.shutting_down.set()
        with self._lock:
            for stop in self._events.values():
                stop.set()

    def cancel(self, asked: Mapping[int, str]) -> list[int]:
        """Stop the runs of ``asked`` (run id -> message) held here; the ids held no more."""
        gone = []
        with self._lock:
            for run_id, message in asked.items():
                stop = self._events.get(run_id)
                if stop is None:
                    gone.append(run_id)
                elif run_id not in self._cancelled:
                    self._cancelled[run_id] = message
                    stop.set()
        return gone

    def held(self) -> bool:
        with self._lock:
            return bool(self._events)

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._events.pop(run_id, None)

    def finish(self, run_id: int, outcome: Outcome) -> Outcome:
        """The outcome the run records: the action's, or, if a cancel stopped it, that it was cancelled."""
        with self._lock:
            self._events.pop(run_id, None)
            message = self._cancelled.pop(run_id, None)
        return outcome if message is None else cancelled_outcome(outcome, message)


def cancelled_outcome(outcome: Outcome, message: str) -> Outcome:
    """What a cancelled run records. An action the stop ended (or kept from starting) records
    failed with the cancel's message, its output and exit code kept, and is not retried. An
    action that ended on its own before the stop reached it keeps its own outcome: the cancel
    came too late, as a Kubernetes Job that completes before it is deleted."""
    if not outcome.interrupted:
        return outcome
    return replace(outcome, succeeded=False, message=message, interrupted=False, cancelled=True)
