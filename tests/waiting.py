"""Polling helpers for tests that wait on real processes and threads (never a fixed long sleep)."""
from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited. A zombie counts as gone: in a container
    PID 1 may never reap orphans, but a zombie runs nothing and holds no memory."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
