"""The recorder: a thread of its own that writes finished runs in batches (recording.py).

Workers put a ``RunResult`` on its queue; it records them (retrying while the database
is unreachable), then tells the engine which runs are done and what they finished, so
that the engine stops renewing their leases, announces them and may tick again.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .records import FinishedRun, RunResult
from .recording import finish_runs

log = logging.getLogger(__name__)

RECORD_RETRY_SECONDS = (0.5, 1, 2, 4, 8, 15, 30)
# Outcomes recorded in one transaction at most.
RECORD_BATCH = 256
# While runs keep finishing, the recorder waits for the next outcome up to RECORD_GAP_SECONDS,
# and fills a batch for RECORD_LINGER_SECONDS at most.
RECORD_GAP_SECONDS = 0.003
RECORD_LINGER_SECONDS = 0.020


class Recorder:
    """Records what ``put`` is given, in batches, as ``owner``, until ``close``."""

    def __init__(self, app: Flask, owner: str, db_lock: threading.Lock, in_flight: Callable[[], int],
                 on_recorded: Callable[[list[RunResult], list[FinishedRun]], None]) -> None:
        self.app = app
        self.owner = owner
        self._db_lock = db_lock  # the engine's: one writer at a time within this process
        self._in_flight = in_flight
        self._on_recorded = on_recorded
        self._results: queue.Queue[RunResult] = queue.Queue()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, result: RunResult) -> None:
        self._results.put(result)

    def stop_when_empty(self) -> None:
        """End the thread once the queue is empty (what is put meanwhile is still recorded)."""
        self._done.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not (self._done.is_set() and self._results.empty()):
            try:
                batch = [self._results.get(timeout=0.2)]
            except queue.Empty:
                continue
            self._fill(batch)
            self._on_recorded(batch, self._record(batch))

    def _fill(self, batch: list[RunResult]) -> None:
        """Add what else is queued; while runs keep finishing, wait a moment for the next one.

        A batch's transaction costs about as much as recording twenty runs, so in a burst
        fuller batches mean less work per run. A lone run, or one among slow ones, waits
        RECORD_GAP_SECONDS at most.
        """
        give_up = time.monotonic() + RECORD_LINGER_SECONDS
        while len(batch) < RECORD_BATCH:
            try:
                batch.append(self._results.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = give_up - time.monotonic()
            if remaining <= 0 or self._in_flight() <= len(batch):
                return
            try:
                batch.append(self._results.get(timeout=min(RECORD_GAP_SECONDS, remaining)))
            except queue.Empty:
                return

    def _record(self, batch: list[RunResult]) -> list[FinishedRun]:
        """Record a batch, retrying while the database is unreachable.

        If it stays unreachable past the retries, the runs keep stale leases and
        lease recovery (here or elsewhere) finishes them as lost and retries them.
        """
        for delay in (*RECORD_RETRY_SECONDS, None):
            try:
                with self._db_lock, self.app.app_context():
                    finished = finish_runs(batch, owner=self.owner)
            except SQLAlchemyError as exc:
                if delay is None:
                    log.error("could not record %d outcomes: %s", len(batch), exc.__class__.__name__)
                    return []
                log.warning("recording %d outcomes failed (%s); again in %ss", len(batch), exc.__class__.__name__, delay)
                time.sleep(delay)
                continue
            if len(finished) < len(batch):
                log.warning("%d runs were taken over (lease lost); their outcomes are dropped",
                            len(batch) - len(finished))
            return finished
        return []
