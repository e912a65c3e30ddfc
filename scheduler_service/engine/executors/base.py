"""The Executor base class, which keeps every executor's invariants, and the helpers the executors share.

Its shape follows APScheduler's ``executors/base.py``: :meth:`Executor.execute` keeps
the invariants every caller relies on (it never raises, always returns an ``Outcome``,
keeps at most ``output_limit`` bytes of output, messages are one line) and each
subclass does the actual work in ``_run``. Nothing here touches the database; the
caller records the outcome. Runs in the engine's pool workers (and in any thread that
calls ``execute_action``); ``OutputTail`` is also written by the threads an executor
waits on.

Two things end an action early: its timeout (``timed out after 5s``) and the caller's
``stop`` event, set at shutdown (``stopped by shutdown``, with ``interrupted=True`` so
the caller can tell it apart from the action's own failure). Either way each executor
really stops the action, not merely leaves it behind.

Output is always the *tail*: the end of a log is where the error is, and memory must
stay flat however much an action prints.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..deadlines import STOPPED, TIMED_OUT, deadline_or_stop, wait_slice
from ..records import Outcome

# The package's one logger, named as before the executors were split into modules:
# the name is what operators' logging configuration refers to.
log = logging.getLogger(__package__)

READ_CHUNK = 64 * 1024
_REPLACEMENT = "\ufffd".encode()  # what invalid UTF-8 becomes, too
_MAX_MESSAGE = 500


class OutputTail:
    """A byte sink that keeps only the last ``limit`` bytes, in memory under 3x ``limit``.

    Thread-safe, because an abandoned python or http thread may still write
    while the executor reads the text.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.total = 0  # bytes written, kept or not
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        written = len(data)
        # PostgreSQL text cannot hold NUL: a run whose output had one could never be recorded.
        data = data.replace(b"\x00", _REPLACEMENT)
        with self._lock:
            self.total += len(data)
            if self.limit:
                self._buffer += data[-self.limit :]  # more of one chunk could never survive
                # Trimming only past 2x the limit keeps the copying amortised.
                if len(self._buffer) > 2 * self.limit:
                    del self._buffer[: -self.limit]
        return written

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def endswith(self, suffix: bytes) -> bool:
        with self._lock:
            return self._buffer.endswith(suffix)

    def text(self) -> str:
        """The kept bytes decoded as UTF-8, invalid sequences replaced."""
        with self._lock:
            data = bytes(self._buffer[-self.limit :]) if self.limit else b""
        if self.truncated:
            # The cut may fall inside a multi-byte character; drop its orphaned
            # continuation bytes (0b10xxxxxx) rather than show a replacement mark.
            start = 0
            while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
                start += 1
            data = data[start:]
        return data.decode("utf-8", errors="replace")


def _tail_of(text: str, limit: int) -> str:
    if len(text) * 4 <= limit and "\x00" not in text:
        return text  # within the limit however it encodes (UTF-8 is at most 4 bytes a character)
    tail = OutputTail(limit)
    tail.write(text.encode("utf-8", errors="replace"))
    return tail.text()


def one_line(text: str) -> str:
    """``text`` on one line, cut to a bounded length: what every outcome's message is."""
    line = " ".join(str(text).replace("\x00", "\ufffd").split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _format_seconds(seconds: float) -> str:
    """5.0 -> '5', 1.5 -> '1.5', 0.125 -> '0.125'."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def describe(exc: BaseException) -> str:
    """'ValueError: boom' - type name and the first line of the message."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def cut_short(reason: str, **fields: Any) -> Outcome:
    """The outcome of an action ended by timeout (TIMED_OUT) or shutdown (STOPPED)."""
    return Outcome(succeeded=False, message=reason, interrupted=reason == STOPPED, **fields)


def _finalized(outcome: Outcome, timeout: float | None, output_limit: int) -> Outcome:
    """``outcome`` with its message on one line (a timeout says how long) and the tail of its output."""
    message = outcome.message
    if message == TIMED_OUT and timeout is not None:
        message = f"timed out after {_format_seconds(timeout)}s"
    return replace(outcome, message=one_line(message), output=_tail_of(outcome.output, output_limit))


def abandoned_outcome(reason: str, timeout: float | None, output: str, output_limit: int) -> Outcome:
    """What is recorded for a python call given up on, stuck in C code past its timeout or the shutdown."""
    return _finalized(cut_short(reason, output=output), timeout, output_limit)


def wait_for_thread(thread: threading.Thread, deadline: float | None, stop: threading.Event | None) -> str | None:
    """Join ``thread``; None once it has finished, else why we gave up waiting."""
    while True:
        thread.join(wait_slice(deadline))
        if not thread.is_alive():
            return None
        reason = deadline_or_stop(deadline, stop)
        if reason:
            return reason


def wait_for_event(done: threading.Event, deadline: float | None, stop: threading.Event | None) -> str | None:
    """Wait for ``done``; None once it is set, else why we gave up waiting."""
    while not done.wait(wait_slice(deadline)):
        reason = deadline_or_stop(deadline, stop)
        if reason:
            return reason
    return None


class Executor(ABC):
    """Runs one type of action. Instances hold no per-run state and are shared by threads."""

    def execute(
        self,
        action: Mapping[str, Any],
        *,
        timeout: float | None,
        output_limit: int,
        stop: threading.Event | None = None,
    ) -> Outcome:
        """Run ``action`` to completion, timeout or shutdown.

        Never raises: any unexpected error becomes a failed Outcome with the
        exception as message. A ``stop`` already set means the action is not started.
        """
        if stop is not None and stop.is_set():
            return cut_short(STOPPED)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            outcome = self._run(action, deadline, output_limit, stop)
        except Exception as exc:
            log.exception("%s failed unexpectedly", type(self).__name__)
            outcome = Outcome(succeeded=False, message=describe(exc))
        return _finalized(outcome, timeout, output_limit)

    @abstractmethod
    def _run(
        self,
        action: Mapping[str, Any],
        deadline: float | None,
        output_limit: int,
        stop: threading.Event | None,
    ) -> Outcome:
        """Do the work; ``deadline`` is a ``time.monotonic()`` value or None."""

    def close(self) -> None:
        """Release what the executor keeps between runs (connection pools); it may still run after."""
