"""The python executor: calls ``pkg.module:function``, in-process, and captures what it prints.

Python actions run in-process: with a ``Watchdog`` (watchdog.py) the engine's pool
workers call them themselves; without one, a call thread of this module (``_CallThread``,
a daemon thread of its own) calls them while the caller waits. They are functions of
the deployment's own code (like APScheduler jobs), so isolating them in a process would
buy little and cost tens of milliseconds per call. A runaway call cannot hang the
scheduler: at the deadline ``TimeoutError`` is injected into its thread (which stops
pure-Python code at its next bytecode) and, if the thread is blocked in C, the call is
given up on and its thread left to finish.

What a call prints is captured by replacing sys.stdout/sys.stderr with streams that
route each thread's writes to the tail of the call that thread runs, if any.
"""
from __future__ import annotations

import importlib
import logging
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..deadlines import ABANDON_GRACE_SECONDS, inject
from ..records import Outcome
from .base import Executor, OutputTail, cut_short, describe, wait_for_event
from .guard_rails import callable_refusal, origin_refusal

if TYPE_CHECKING:
    from ..watchdog import Watchdog

log = logging.getLogger(__package__)  # the package's logger (base.py says why)

# The capture buffer of the current thread, if it runs a python action.
_capture = threading.local()
_install_lock = threading.Lock()


class _ThreadRoutedStream:
    """Stands in for sys.stdout/sys.stderr: writes from a thread running a python
    action go to that action's buffer, everything else to the original stream."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def write(self, text: str) -> int:
        tail: OutputTail | None = getattr(_capture, "tail", None)
        if tail is not None:
            tail.write(text.encode("utf-8", errors="replace"))
            return len(text)
        if self._original is None:  # no console at all (pythonw)
            return len(text)
        return self._original.write(text)

    def flush(self) -> None:
        if getattr(_capture, "tail", None) is None and self._original is not None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        # encoding, isatty, fileno, buffer...: behave like the real stream.
        return getattr(self._original, name)


def _install_capture() -> None:
    """Route sys.stdout/sys.stderr through the per-thread capture; idempotent.

    Checked on every run rather than once, because something else (a test
    runner, a logging setup) may have replaced the streams since.
    """
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _ThreadRoutedStream):
                setattr(sys, name, _ThreadRoutedStream(stream))


class _NotAllowed(Exception):
    """The callable is outside PYTHON_ACTIONS_MODULES; the message says how."""


def _resolve(reference: str, allowed: tuple[str, ...] | None = None) -> Callable[..., Any]:
    """'pkg.module:attr.path' -> the object it names; _NotAllowed if PYTHON_ACTIONS_MODULES refuses it."""
    refusal = callable_refusal(reference, allowed)
    if refusal:
        raise _NotAllowed(refusal)
    module_name, _, attr_path = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
        refusal = origin_refusal(reference, target, allowed)
        if refusal:
            raise _NotAllowed(refusal)
    if not callable(target):
        raise TypeError(f"{type(target).__name__} object is not callable")
    return target


class _CallThread:
    """A daemon thread that python actions are called in, one call at a time, then kept idle
    for the next call: starting a thread per run would cost more CPU than all the rest of
    what executing a short call costs.

    A thread that had ``TimeoutError`` injected is retired, never reused: the exception may
    arrive after its call returned, and must not land in the next one.
    """

    _idle: queue.SimpleQueue[_CallThread] = queue.SimpleQueue()
    IDLE_NAME = "python-action (idle)"

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.done = threading.Event()  # set when the current call has returned
        self._lock = threading.Lock()
        self._in_call = False
        self._retired = False
        self.thread = threading.Thread(target=self._serve, name=self.IDLE_NAME, daemon=True)
        self.thread.start()

    @classmethod
    def call(cls, function: Callable[[], None], name: str) -> _CallThread:
        """Call ``function`` in an idle thread (a new one if none is idle); wait on its ``done``."""
        try:
            helper = cls._idle.get_nowait()
        except queue.Empty:
            helper = cls()
        # No lock: an idle thread is this caller's alone until the call is handed over.
        helper.done.clear()
        helper._in_call = True
        helper.thread.name = name
        helper._calls.put(function)
        return helper

    def interrupt(self) -> bool:
        """Raise TimeoutError in the call if it still runs (True); the thread then ends with the call."""
        with self._lock:
            if self._in_call:
                self._retired = True
                inject(self.thread, TimeoutError)
            return self._retired

    def _serve(self) -> None:
        try:
            while True:
                function = self._calls.get()
                try:
                    function()
                finally:
                    with self._lock:  # from here on, interrupt() leaves this thread alone
                        self._in_call = False
                    self.done.set()
                if self._retired:
                    return
                self.thread.name = self.IDLE_NAME
                self._idle.put(self)
        except BaseException:  # the injected TimeoutError, arriving after its call: this thread is retired
            return


class PythonExecutor(Executor):
    """Calls ``pkg.module:function(*args, **kwargs)``: with a ``watchdog``, in the calling
    thread (the engine's pool workers); without one, in a daemon thread of this process
    (a ``_CallThread``) that the caller waits on. Only from ``modules`` (PYTHON_ACTIONS_MODULES;
    None: any), checked before the import, since importing runs the module's code.

    Output is what the call prints to sys.stdout/sys.stderr from its own thread
    (not from threads it starts, nor writes to file descriptors), then
    ``-> repr(result)`` when the result is not None.
    """

    def __init__(self, watchdog: Watchdog | None = None, *, modules: tuple[str, ...] | None = None) -> None:
        self.watchdog = watchdog
        self.modules = modules  # PYTHON_ACTIONS_MODULES: None allows any

    def _run(
        self, action: Mapping[str, Any], deadline: float | None, output_limit: int, stop: threading.Event | None
    ) -> Outcome:
        reference = action["callable"]
        try:
            function = _resolve(reference, self.modules)
        except _NotAllowed as exc:
            # Also a task written before the setting changed: what runs is decided now.
            return Outcome(succeeded=False, message=f"refused: {exc}")
        except Exception as exc:
            return Outcome(succeeded=False, message=f"cannot import {reference!r}: {describe(exc)}")

        _install_capture()
        tail = OutputTail(output_limit)
        result: dict[str, Any] = {}

        def call() -> None:
            _capture.tail = tail
            try:
                result["value"] = function(*(action.get("args") or ()), **(action.get("kwargs") or {}))
            except BaseException as exc:  # also SystemExit and our injected TimeoutError
                result["error"] = exc
                tail.write(traceback.format_exc().encode("utf-8", errors="replace"))
            finally:
                _capture.tail = None

        if self.watchdog is not None:
            reason, abandoned = self.watchdog.call(call, deadline, stop, tail.text)
            if abandoned:
                return Outcome(succeeded=False, message=reason or "", abandoned=True)
            if reason:
                return cut_short(reason, output=tail.text())
        else:
            worker = _CallThread.call(call, f"python-action {reference}")
            reason = wait_for_event(worker.done, deadline, stop)
            # interrupt() is False when the call returned just as time ran out: then its own outcome stands.
            if reason and worker.interrupt():
                worker.thread.join(ABANDON_GRACE_SECONDS)
                if worker.thread.is_alive():
                    log.warning(
                        "python action %s still runs after TimeoutError (blocked in C code, or it caught the"
                        " exception); abandoning its thread",
                        reference,
                    )
                return cut_short(reason, output=tail.text())

        if "error" in result:
            return Outcome(succeeded=False, message=describe(result["error"]), output=tail.text())
        value = result.get("value")
        if value is not None:
            try:
                shown = repr(value)
            except Exception as exc:
                shown = f"<repr failed: {describe(exc)}>"
            separator = b"" if tail.total == 0 or tail.endswith(b"\n") else b"\n"
            tail.write(separator + f"-> {shown}".encode("utf-8", errors="replace"))
        return Outcome(succeeded=True, output=tail.text())
