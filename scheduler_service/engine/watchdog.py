"""Python actions called in the pool worker itself, and the one thread that stops them.

``Watchdog.call`` runs in the engine's pool workers; ``Watchdog`` owns one thread of its
own (``python-action-watchdog``) that interrupts the calls. Calling in the worker spares
the two thread switches per run that handing the call to a helper thread costs, each a
wait for the GIL: in a burst of short calls that is a large share of a run's CPU
(BENCHMARKS.md has the measurement).

The deadline and the shutdown still stop a call: the watchdog injects ``TimeoutError``
into the worker at its next bytecode. A call blocked in C code does not see it; past a
grace the watchdog gives up on it and tells the engine (``on_abandon``), which records
the run as failed and puts a new worker in the stuck one's place. When the call
returns at last, its outcome is dropped.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .deadlines import ABANDON_GRACE_SECONDS, STOP_POLL_SECONDS, deadline_or_stop, inject


class _CallWatch:
    """One call in one thread: whether it is still in the call, and why it was cut short."""

    def __init__(self, thread: threading.Thread, deadline: float | None, stop: threading.Event | None,
                 output: Callable[[], str]) -> None:
        self.thread, self.deadline, self.stop, self.output = thread, deadline, stop, output
        self.lock = threading.Lock()  # between the call's end and the watchdog's interrupt/abandon
        self.in_call = True
        self.reason: str | None = None  # set when the watchdog interrupted the call
        self.interrupted_at = 0.0
        self.abandoned = False

    def interrupt(self, reason: str, now: float) -> None:
        with self.lock:
            if self.in_call:
                self.reason, self.interrupted_at = reason, now
                inject(self.thread, TimeoutError)

    def finish(self) -> None:
        with self.lock:
            self.in_call = False
            if self.reason is not None:
                # An injected exception still pending would land in the worker's own code.
                inject(self.thread, None)

    def abandon(self, on_abandon: Callable[[int, str, str], None]) -> None:
        with self.lock:
            # Under the lock: the call cannot finish meanwhile, and its outcome is dropped after.
            if self.in_call and not self.abandoned:
                self.abandoned = True
                on_abandon(self.thread.ident, self.reason, self.output())


class Watchdog:
    """Stops python calls running in pool workers at their deadline or when ``stop`` is set."""

    def __init__(self, on_abandon: Callable[[int, str, str], None]) -> None:
        """``on_abandon(thread ident, reason, output so far)`` is called for a call stuck in C
        past the grace; the call's thread is the engine's to replace."""
        self._on_abandon = on_abandon
        self._watches: dict[int, _CallWatch] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call(self, function: Callable[[], None], deadline: float | None, stop: threading.Event | None,
             output: Callable[[], str]) -> tuple[str | None, bool]:
        """Call ``function()`` in this thread: (why it was cut short or None, whether it was abandoned).

        ``function`` must catch what it raises itself; ``output`` gives what it printed so far.
        """
        watch = _CallWatch(threading.current_thread(), deadline, stop, output)
        with self._changed:
            self._watches[watch.thread.ident] = watch
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="python-action-watchdog", daemon=True)
                self._thread.start()
            self._changed.notify()
        called = False
        try:
            while True:
                try:
                    if not called:
                        called = True
                        function()
                    watch.finish()
                    break
                except TimeoutError:
                    continue  # injected just outside the call's own handler: finish again
        finally:
            with self._changed:
                del self._watches[watch.thread.ident]
        return watch.reason, watch.abandoned

    def close(self) -> None:
        """End the watchdog's thread once no call is watched."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _loop(self) -> None:
        while True:
            stuck: list[_CallWatch] = []
            with self._changed:
                if self._closed and not self._watches:
                    self._thread = None
                    return
                now = time.monotonic()
                wake: float | None = None  # when a watched call next needs a look; None: when told
                for watch in self._watches.values():
                    due = self._look_at(watch, now, stuck)
                    if due is not None:
                        wake = due if wake is None else min(wake, due)
                if not stuck:
                    self._changed.wait(None if wake is None else max(0.0, wake - now))
            for watch in stuck:  # outside the watchdog's lock: the engine takes its own
                watch.abandon(self._on_abandon)

    @staticmethod
    def _look_at(watch: _CallWatch, now: float, stuck: list[_CallWatch]) -> float | None:
        """Interrupt ``watch``'s call, or add it to ``stuck``, if its time has come; when to look again."""
        if not watch.in_call or watch.abandoned:
            return None  # returned (its thread removes it in a moment), or given up on
        if watch.reason is None:
            reason = deadline_or_stop(watch.deadline, watch.stop)
            if reason:
                watch.interrupt(reason, now)
        if watch.reason is None:
            # The stop event is polled, as the executors' own waits do; the deadline is waited for.
            due = now + STOP_POLL_SECONDS if watch.stop is not None else None
            if watch.deadline is not None:
                due = watch.deadline if due is None else min(due, watch.deadline)
            return due
        give_up = watch.interrupted_at + ABANDON_GRACE_SECONDS
        if now >= give_up:
            stuck.append(watch)
            return None
        return give_up
