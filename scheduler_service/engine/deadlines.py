"""When a running action must end, and how a python call is made to end: the timing and interrupt primitives.

Shared by the executors (run by the engine's pool workers, and by the threads they wait on)
and the watchdog (its own thread), so that neither imports the other. Plain values and
functions of the clock; nothing here starts a thread or touches the database.
"""
from __future__ import annotations

import ctypes
import threading
import time

# How often a waiting loop looks at the stop event; bounds shutdown latency.
STOP_POLL_SECONDS = 0.05
# How long to wait for a python call's thread to end after injecting TimeoutError
# before declaring it stuck in C and abandoning it.
ABANDON_GRACE_SECONDS = 0.5

# Why an action was cut short. A run only knows its deadline; Executor.execute() knows
# the configured timeout and turns TIMED_OUT into "timed out after 5s".
TIMED_OUT = "timed out"
STOPPED = "stopped by shutdown"


def deadline_or_stop(deadline: float | None, stop: threading.Event | None) -> str | None:
    """Why the action must end now (STOPPED or TIMED_OUT), or None to keep going."""
    if stop is not None and stop.is_set():
        return STOPPED
    if deadline is not None and time.monotonic() >= deadline:
        return TIMED_OUT
    return None


def wait_slice(deadline: float | None) -> float:
    """How long one wait may block: short enough to notice stop, never past the deadline."""
    if deadline is None:
        return STOP_POLL_SECONDS
    return max(0.0, min(STOP_POLL_SECONDS, deadline - time.monotonic()))


def inject(thread: threading.Thread, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in ``thread`` at its next bytecode (no effect while it is blocked in C).

    None takes back an exception injected earlier that has not been raised yet.
    """
    exc = None if exc_type is None else ctypes.py_object(exc_type)
    modified = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), exc)
    if modified > 1:  # cannot happen with a valid ident; undo rather than hit other threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
