"""Functions the python-executor tests name as ``sample_callables:<name>``."""
from __future__ import annotations

import sys
import threading
import time

# Set by busy_loop when it starts and when its frame unwinds, so a test can see
# that the injected TimeoutError really stopped the thread.
busy_started = threading.Event()
busy_exited = threading.Event()


def greet(name: str, punctuation: str = "!") -> str:
    print(f"greeting {name}")
    print("to stderr", file=sys.stderr)
    return f"hello {name}{punctuation}"


def chatty(tag: str, lines: int) -> None:
    """Prints interleaved with another thread doing the same."""
    for index in range(lines):
        print(f"{tag} {index}")
        time.sleep(0.005)


def fail() -> None:
    raise ValueError("boom\nsecond line of the message")


def busy_loop() -> None:
    busy_started.set()
    try:
        while True:
            pass
    finally:
        busy_exited.set()


def sleep_in_c(seconds: float) -> None:
    time.sleep(seconds)


_per_thread = threading.local()


def calls_in_this_thread() -> int:
    """How many times this function was called in the current thread."""
    _per_thread.calls = getattr(_per_thread, "calls", 0) + 1
    return _per_thread.calls


def spin(seconds: float) -> str:
    """Runs pure Python for ``seconds``; a TimeoutError raised in it is caught and reported."""
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            pass
    except TimeoutError:
        return "caught the timeout"
    return "finished"
