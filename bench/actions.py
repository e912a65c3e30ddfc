"""The actions both schedulers run: module-level functions, importable by reference.

``noop`` is what the issue calls "a python no-op": it only notes when it started
(one list append), so that both schedulers' start lag is measured the same way,
as the moment the action itself begins minus its scheduled time.
``shell_true`` is the peer's shell action: ``/bin/sh -c true`` through
``subprocess.run`` with its output captured, as our shell executor does.
"""
from __future__ import annotations

import subprocess
import threading
import time

# (actual start, due) for each call; due is None for the burst, where all share one instant.
STARTS: list[tuple[float, float | None]] = []
FINISHES: list[float] = []
DONE = threading.Event()
EXPECTED = [0]  # how many calls make the workload complete (set by the peer's harness)


def noop(due: float | None = None) -> None:
    STARTS.append((time.time(), due))


def _count_finish() -> None:
    FINISHES.append(time.time())
    if len(FINISHES) >= EXPECTED[0] > 0:
        DONE.set()


def noop_counted(due: float | None = None) -> None:
    """The peer's no-op: the same start note, plus a completion count (APScheduler logs nothing to poll)."""
    STARTS.append((time.time(), due))
    _count_finish()


def shell_true(due: float | None = None) -> None:
    STARTS.append((time.time(), due))
    subprocess.run(["/bin/sh", "-c", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, check=False)
    _count_finish()
