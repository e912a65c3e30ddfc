"""Run one task action (shell, http or python) and report what happened as an :class:`Outcome`.

The shape follows APScheduler's ``executors/base.py``: :meth:`Executor.execute`
keeps the invariants every caller relies on (it never raises, always returns an
``Outcome``, keeps at most ``output_limit`` bytes of output, messages are one
line) and each subclass does the actual work in ``_run``. Nothing here touches
the database; the caller records the outcome.

Two things end an action early: its timeout (``timed out after 5s``) and the
caller's ``stop`` event, set at shutdown (``stopped by shutdown``, with
``interrupted=True`` so the caller can tell it apart from the action's own
failure). Either way the action is really stopped, not merely left behind:
a shell command's whole process group (and its cgroup, where it has one) is killed, an HTTP response is no
longer read, a python call gets ``TimeoutError`` raised inside it.

Output is always the *tail*: the end of a log is where the error is, and memory
must stay flat however much a command prints.

The guard rails of the contract ("Guard rails for actions", :class:`GuardRails`) are
applied here, at run time, whatever was accepted when the task was written: a python
callable must come from PYTHON_ACTIONS_MODULES, an http request connects only outside
HTTP_ACTIONS_DENY_NETWORKS (through ``outbound``, redirects followed only when the
action asks), and a shell run sees PATH, HOME, LANG and its task's ``env``, not the
service's secrets, unless SHELL_INHERIT_ENV.

Python actions run in-process: the engine's pool workers call them themselves,
under a ``Watchdog`` (watchdog.py); without one, a daemon thread calls them while
the caller waits. They are functions of the deployment's own code (like
APScheduler jobs), so isolating them in a process would buy little and cost tens
of milliseconds per call. A runaway call cannot hang the scheduler: at the
deadline ``TimeoutError`` is injected into its thread (which stops pure-Python
code at its next bytecode) and, if the thread is blocked in C, the call is given
up on and its thread left to finish.
"""
from __future__ import annotations

import ctypes
import importlib
import inspect
import logging
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from requests.adapters import DEFAULT_POOLSIZE

from .. import outbound
from .records import Outcome
from .containment import RunCgroup, RunCgroups, jailed_command

if TYPE_CHECKING:
    from .watchdog import Watchdog

log = logging.getLogger(__name__)

# How often a waiting loop looks at the stop event; bounds shutdown latency.
POLL_SECONDS = 0.05
# After the group is killed, how long to keep reading what is still buffered in
# the pipe. A process that escaped the group (setsid) can hold the pipe open
# forever, so this must be bounded.
_DRAIN_SECONDS = 1.0
# How long to wait for a python thread to die after injecting TimeoutError
# before declaring it stuck in C and abandoning it.
ABANDON_GRACE_SECONDS = 0.5
_READ_CHUNK = 64 * 1024
_REPLACEMENT = "\ufffd".encode()  # what invalid UTF-8 becomes, too
_MAX_MESSAGE = 500

# _run() only sees the deadline; execute() knows the configured timeout and
# turns this placeholder into "timed out after 5s".
_TIMED_OUT = "timed out"
_STOPPED = "stopped by shutdown"


@dataclass(frozen=True)
class GuardRails:
    """The settings of the contract's "Guard rails for actions" that executors apply at run time.

    The defaults are the contract's with shell actions enabled, for executors built
    without an app (``EXECUTORS``); the engine passes its app's settings.
    """

    python_modules: tuple[str, ...] | None = None  # None: any module ("*")
    deny_networks: tuple[outbound.Network, ...] = outbound.DEFAULT_DENY_NETWORKS
    shell_inherit_env: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GuardRails:
        return cls(
            python_modules=config["PYTHON_ACTIONS_MODULES"],
            deny_networks=tuple(config["HTTP_ACTIONS_DENY_NETWORKS"]),
            shell_inherit_env=config["SHELL_INHERIT_ENV"],
        )


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


def _one_line(text: str) -> str:
    line = " ".join(str(text).replace("\x00", "\ufffd").split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _format_seconds(seconds: float) -> str:
    """5.0 -> '5', 1.5 -> '1.5', 0.125 -> '0.125'."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def _describe(exc: BaseException) -> str:
    """'ValueError: boom' - type name and the first line of the message."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _cut_short(reason: str, **fields: Any) -> Outcome:
    """The outcome of an action ended by timeout (_TIMED_OUT) or shutdown (_STOPPED)."""
    return Outcome(succeeded=False, message=reason, interrupted=reason == _STOPPED, **fields)


def _finalized(outcome: Outcome, timeout: float | None, output_limit: int) -> Outcome:
    """``outcome`` with its message on one line (a timeout says how long) and the tail of its output."""
    message = outcome.message
    if message == _TIMED_OUT and timeout is not None:
        message = f"timed out after {_format_seconds(timeout)}s"
    return replace(outcome, message=_one_line(message), output=_tail_of(outcome.output, output_limit))


def abandoned_outcome(reason: str, timeout: float | None, output: str, output_limit: int) -> Outcome:
    """What is recorded for a python call given up on, stuck in C code past its timeout or the shutdown."""
    return _finalized(_cut_short(reason, output=output), timeout, output_limit)


def deadline_or_stop(deadline: float | None, stop: threading.Event | None) -> str | None:
    """Why the action must end now, or None to keep going."""
    if stop is not None and stop.is_set():
        return _STOPPED
    if deadline is not None and time.monotonic() >= deadline:
        return _TIMED_OUT
    return None


def _slice(deadline: float | None) -> float:
    """How long one wait may block: short enough to notice stop, never past the deadline."""
    if deadline is None:
        return POLL_SECONDS
    return max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))


def _wait_for_thread(thread: threading.Thread, deadline: float | None, stop: threading.Event | None) -> str | None:
    """Join ``thread``; None once it has finished, else why we gave up waiting."""
    while True:
        thread.join(_slice(deadline))
        if not thread.is_alive():
            return None
        reason = deadline_or_stop(deadline, stop)
        if reason:
            return reason


def _wait_for_event(done: threading.Event, deadline: float | None, stop: threading.Event | None) -> str | None:
    """Wait for ``done``; None once it is set, else why we gave up waiting."""
    while not done.wait(_slice(deadline)):
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
            return _cut_short(_STOPPED)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            outcome = self._run(action, deadline, output_limit, stop)
        except Exception as exc:
            log.exception("%s failed unexpectedly", type(self).__name__)
            outcome = Outcome(succeeded=False, message=_describe(exc))
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


# --- shell -----------------------------------------------------------------------


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # everything in the group has already exited


def _has_exited(proc: subprocess.Popen) -> bool:
    """True once the shell has exited, *without* reaping it.

    While the shell is an unreaped zombie its pid (the group id) cannot be
    reused, so killing the group afterwards cannot hit an unrelated process.
    """
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _ready(fds: list[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` until some of ``fds`` are readable (data, end-of-file or a process exit).

    poll rather than select: select() cannot watch descriptors numbered above
    1023, which a long-running service with many connections may hand out.
    """
    if not fds:
        time.sleep(seconds)
        return set()
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(seconds * 1000)}


def _readable(fd: int, seconds: float) -> bool:
    return fd in _ready([fd], seconds)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits, where the kernel has them."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


_dev_null_fd: int | None = None
_dev_null_lock = threading.Lock()


def _dev_null() -> int:
    """A descriptor of /dev/null for shell runs' stdin, opened once (close-on-exec; Popen dup2s it to 0)."""
    global _dev_null_fd
    with _dev_null_lock:
        if _dev_null_fd is None:
            _dev_null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _dev_null_fd


# What a shell can hold as a variable name (POSIX); anything else Popen refuses, or the shell ignores.
ENV_NAME_RULE = "[A-Za-z_][A-Za-z0-9_]*"
ENV_NAME = re.compile(ENV_NAME_RULE + r"\Z")
# What a shell run gets of the service's own environment unless SHELL_INHERIT_ENV.
BASE_ENV = ("PATH", "HOME", "LANG")


def env_refusal(env: Any) -> str | None:
    """Why a task's ``env`` cannot be given to a shell, or None (a task stored before names were checked)."""
    if env is None:
        return None
    if not isinstance(env, Mapping):
        return "env must be an object of names and values"
    for name in env:
        if not isinstance(name, str) or not ENV_NAME.match(name):
            return f"env name {name!r} does not match {ENV_NAME_RULE}"
    return None


def _start_error(exc: Exception) -> str:
    # An OSError's own text names the file ("[Errno 2] No such file or directory: '/missing'").
    return str(exc) if isinstance(exc, OSError) else _describe(exc)


def _exit_message(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name} (exit code {code})"


class ShellExecutor(Executor):
    """``/bin/sh -c command`` in its own process group, and in a cgroup of its own when ``cgroups`` is given.

    stdout and stderr are merged. However the run ends, the whole process group
    is killed, and the whole cgroup with it: that also reaches children that left
    the group (``setsid``, double forks), and the cgroup caps how many processes
    the command may fork.
    """

    def __init__(self, cgroups: RunCgroups | None = None, *, inherit_env: bool = False) -> None:
        self.cgroups = cgroups
        self.inherit_env = inherit_env

    def _run(
        self, action: Mapping[str, Any], deadline: float | None, output_limit: int, stop: threading.Event | None
    ) -> Outcome:
        refusal = env_refusal(action.get("env"))
        if refusal:
            return Outcome(succeeded=False, message=f"refused: {refusal}")
        cgroup = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.acquire()  # a failed acquire removes what it made, descriptors included
            except Exception as exc:
                return Outcome(succeeded=False, message=f"cannot create the run's cgroup: {_start_error(exc)}")
        try:
            return self._run_contained(action, cgroup, deadline, output_limit, stop)
        finally:
            if cgroup is not None:
                self.cgroups.release(cgroup)

    def _run_contained(
        self,
        action: Mapping[str, Any],
        cgroup: RunCgroup | None,
        deadline: float | None,
        output_limit: int,
        stop: threading.Event | None,
    ) -> Outcome:
        command = action["command"]
        argv = ["/bin/sh", "-c", command] if cgroup is None else jailed_command(cgroup, command)
        env = self._environment(action.get("env"))
        cwd = action.get("cwd") or None
        # Everything that may fail before Popen is done above: from the pipe on, every path closes it.
        tail = OutputTail(output_limit)
        # A pipe of our own rather than stdout=PIPE, and one /dev/null shared by every run:
        # Popen would open /dev/null and wrap the pipe in a file object each time, five more
        # system calls, and in a burst each one is a moment when the workers compete for the GIL.
        output, output_end = os.pipe()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=_dev_null(),
                stdout=output_end,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group, so one killpg reaches every child
            )
        except Exception as exc:  # OSError: no such cwd; ValueError: a NUL byte; TypeError: a value not a string
            os.close(output)
            return Outcome(succeeded=False, message=f"cannot start command: {_start_error(exc)}")
        except BaseException:
            os.close(output)
            raise
        finally:
            os.close(output_end)  # the shell has its own copy: the pipe ends when its last writer exits

        try:
            try:
                reason, pipe_open = self._pump(proc, output, tail, deadline, stop)
            finally:
                # On timeout, on shutdown and after a normal exit alike:
                # nothing the run started may outlive it.
                _kill_group(proc.pid)
                # Reaped only now: until the group is killed, the shell's pid (the group's id)
                # must not be free for reuse. Reaped before the cgroup is checked, so that an
                # emptied cgroup holds no task at all, which one read of a counter tells.
                exit_code = self._reap(proc)
                if cgroup is not None:
                    cgroup.kill_all()  # also what left the group, so the pipe closes at once
            if pipe_open:
                self._drain(output, tail)
        finally:
            os.close(output)
        refused = cgroup.take_refused_forks() if cgroup is not None else 0
        if refused:
            tail.write(
                f"\n[scheduler] fork() failed {refused} times: the run reached its limit of"
                f" {self.cgroups.max_processes} processes (SHELL_MAX_PROCESSES)\n".encode()
            )

        if reason:
            return _cut_short(reason, output=tail.text(), exit_code=exit_code)
        if exit_code == 0:
            return Outcome(succeeded=True, output=tail.text(), exit_code=0)
        message = _exit_message(exit_code) if exit_code is not None else "did not exit after SIGKILL"
        return Outcome(succeeded=False, message=message, output=tail.text(), exit_code=exit_code)

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str] | None:
        if self.inherit_env:
            # None inherits this process's environment as it is, without copying os.environ in Python.
            return {**os.environ, **extra} if extra else None
        # The service's environment holds its own secrets (DATABASE_URL, SECRET_KEY): a run gets only these.
        base = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
        return {**base, **extra} if extra else base

    @staticmethod
    def _pump(
        proc: subprocess.Popen, fd: int, tail: OutputTail, deadline: float | None, stop: threading.Event | None
    ) -> tuple[str | None, bool]:
        """Copy output into ``tail`` until the shell exits or must be stopped.

        Returns (why it was stopped or None, whether the pipe is still open).
        The loop ends on the shell's exit, not on end-of-file: a background
        child can keep the pipe open long after the shell is gone. A pidfd
        wakes the loop the moment the shell exits; without one (Linux < 5.3),
        the exit is noticed at the next poll.
        """
        exit_fd = _pidfd(proc.pid)
        pipe_open = True
        try:
            while True:
                reason = deadline_or_stop(deadline, stop)
                if reason:
                    return reason, pipe_open
                watched = [fd] if pipe_open else []
                if exit_fd is not None:
                    watched.append(exit_fd)
                ready = _ready(watched, _slice(deadline))
                if fd in ready:
                    chunk = os.read(fd, _READ_CHUNK)
                    if chunk:
                        tail.write(chunk)
                    else:
                        pipe_open = False
                if exit_fd in ready if exit_fd is not None else _has_exited(proc):
                    return None, pipe_open
        finally:
            if exit_fd is not None:
                os.close(exit_fd)

    @staticmethod
    def _drain(fd: int, tail: OutputTail) -> None:
        """Read what is left in the pipe after the group was killed, for a bounded time."""
        give_up = time.monotonic() + _DRAIN_SECONDS
        while (remaining := give_up - time.monotonic()) > 0:
            if not _readable(fd, remaining):
                return
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return
            tail.write(chunk)

    @staticmethod
    def _reap(proc: subprocess.Popen) -> int | None:
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # SIGKILLed yet alive: stuck in uninterruptible sleep. Popen reaps it later.
            log.warning("shell process %d did not die after SIGKILL", proc.pid)
            return None


# --- http ------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests and urllib3 nest the real error several levels deep."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        candidates = (exc.__cause__, getattr(exc, "reason", None), exc.args[0] if exc.args else None)
        exc = next((c for c in candidates if isinstance(c, BaseException)), None)


def _request_error_message(exc: requests.RequestException, url: str) -> str:
    chain = list(_causes(exc))
    # Refused first: urllib3's NewConnectionError subclasses its ConnectTimeoutError.
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"connection refused: {url}"
    # A read timeout while streaming arrives as ConnectionError(ReadTimeoutError).
    if any(isinstance(e, (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)) for e in chain):
        return _TIMED_OUT
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {url}: {_describe(chain[-1])}"
    return _describe(chain[-1])


def _expected(expect_status: int | list[int] | None) -> tuple[Callable[[int], bool], str]:
    """A status check and its description for messages, e.g. '2xx' or '200, 204'."""
    if expect_status is None:
        return (lambda status: 200 <= status < 300), "2xx"
    codes = expect_status if isinstance(expect_status, list) else [expect_status]
    return (lambda status: status in codes), ", ".join(str(code) for code in codes)


class HttpExecutor(Executor):
    """A real HTTP request with ``requests``; the body is streamed into the output tail.

    The request runs in a helper thread that this executor waits on, so the
    timeout covers the whole call (connect, headers and a slowly trickling body,
    which ``requests``' per-read timeouts alone do not) and a shutdown is
    noticed at once. An abandoned helper stops at its next chunk or, at the
    latest, at its own socket timeout.

    Every connection, each redirect hop's too, opens through ``outbound``, which refuses
    addresses in ``deny_networks``. Redirects are followed only when the action says
    ``"follow_redirects": true``. One session serves every run: its pools keep connections
    alive between runs, and it keeps no cookies, so runs never see each other's.
    """

    def __init__(
        self, deny_networks: tuple[outbound.Network, ...] = outbound.DEFAULT_DENY_NETWORKS,
        *, connections: int = DEFAULT_POOLSIZE,
    ) -> None:
        self.http = outbound.session(deny_networks, pool_maxsize=connections)

    def close(self) -> None:
        self.http.close()

    def _run(
        self, action: Mapping[str, Any], deadline: float | None, output_limit: int, stop: threading.Event | None
    ) -> Outcome:
        url = action["url"]
        method = (action.get("method") or "GET").upper()
        body = action.get("body")
        body_kwargs: dict[str, Any] = {}
        if isinstance(body, (dict, list)):
            body_kwargs["json"] = body
        elif body is not None:
            body_kwargs["data"] = str(body).encode("utf-8")
        matches, expected = _expected(action.get("expect_status"))
        follow_redirects = action.get("follow_redirects") is True

        tail = OutputTail(output_limit)
        abandoned = threading.Event()
        status: list[int] = []  # filled by the helper once headers arrive
        result: list[Outcome] = []

        def call() -> None:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                with self.http.request(
                    method,
                    url,
                    headers=dict(action.get("headers") or {}),
                    timeout=remaining,
                    stream=True,
                    allow_redirects=follow_redirects,
                    **body_kwargs,
                ) as response:
                    status.append(response.status_code)
                    for chunk in response.iter_content(_READ_CHUNK):
                        if abandoned.is_set():
                            return
                        tail.write(chunk)
            except Exception as exc:
                if isinstance(exc, outbound.Refused):
                    message = str(exc)  # says which rule, and which host and address
                elif isinstance(exc, requests.RequestException):
                    message = _request_error_message(exc, url)
                else:
                    message = _describe(exc)  # e.g. an invalid header value
                result.append(Outcome(succeeded=False, message=message, http_status=status[0] if status else None))
                return
            code = status[0]
            if matches(code):
                result.append(Outcome(succeeded=True, http_status=code))
            else:
                result.append(Outcome(succeeded=False, message=f"HTTP {code} (expected {expected})", http_status=code))

        helper = threading.Thread(target=call, name=f"http-action {method} {url}", daemon=True)
        helper.start()
        reason = _wait_for_thread(helper, deadline, stop)
        if reason:
            abandoned.set()
            return _cut_short(reason, output=tail.text(), http_status=status[0] if status else None)
        # requests' own timeout may have fired just before ours: its message is
        # the same _TIMED_OUT placeholder.
        return replace(result[0], output=tail.text())


# --- python ----------------------------------------------------------------------

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


MODULES_SETTING = "PYTHON_ACTIONS_MODULES"


class _NotAllowed(Exception):
    """The callable is outside PYTHON_ACTIONS_MODULES; the message says how."""


def module_allowed(module: str, allowed: tuple[str, ...] | None) -> bool:
    """Whether ``module`` is under one of the prefixes ``allowed`` (None: any): 'a.b' allows 'a.b.c', not 'a.bc'."""
    if allowed is None:
        return True
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def _setting_text(allowed: tuple[str, ...]) -> str:
    return f"{MODULES_SETTING} ({', '.join(allowed)})" if allowed else f"{MODULES_SETTING} (empty: no python actions)"


def callable_refusal(reference: str, allowed: tuple[str, ...] | None) -> str | None:
    """Why PYTHON_ACTIONS_MODULES does not let ``reference`` ('pkg.module:function') run, or None.

    Judged on the name alone, so it needs no import (importing runs the module's code).
    """
    module = reference.partition(":")[0]
    if module_allowed(module, allowed):
        return None
    return f"module '{module}' is not allowed by {_setting_text(allowed or ())}"


def _origin_refusal(reference: str, target: Any, allowed: tuple[str, ...] | None) -> str | None:
    """Why an object reached from an allowed module is still not allowed: it is another module
    (``myapp.jobs:os.system``), or a function or class defined in one (``myapp.jobs:getoutput``
    after ``from subprocess import getoutput``)."""
    if allowed is None:
        return None
    if isinstance(target, types.ModuleType):
        module: Any = target.__name__
    elif inspect.isroutine(target) or inspect.isclass(target):
        module = getattr(target, "__module__", None)
    else:
        return None  # an instance (a partial, a callable object) the allowed module made itself
    if isinstance(module, str) and module_allowed(module, allowed):
        return None
    where = f"module '{module}'" if isinstance(module, str) else "an unknown module"
    return f"{reference} comes from {where}, which is not allowed by {_setting_text(allowed)}"


def _resolve(reference: str, allowed: tuple[str, ...] | None = None) -> Callable[..., Any]:
    """'pkg.module:attr.path' -> the object it names; _NotAllowed if PYTHON_ACTIONS_MODULES refuses it."""
    refusal = callable_refusal(reference, allowed)
    if refusal:
        raise _NotAllowed(refusal)
    module_name, _, attr_path = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
        refusal = _origin_refusal(reference, target, allowed)
        if refusal:
            raise _NotAllowed(refusal)
    if not callable(target):
        raise TypeError(f"{type(target).__name__} object is not callable")
    return target


def inject(thread: threading.Thread, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in ``thread`` at its next bytecode (no effect while it is blocked in C).

    None takes back an exception injected earlier that has not been raised yet.
    """
    exc = None if exc_type is None else ctypes.py_object(exc_type)
    modified = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), exc)
    if modified > 1:  # cannot happen with a valid ident; undo rather than hit other threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)


class _CallThread:
    """A daemon thread that python actions are called in, one call at a time, then kept idle
    for the next call: starting a thread per run cost ~100 µs of CPU, more than the rest of
    what executing a no-op run costs.

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
            return Outcome(succeeded=False, message=f"cannot import {reference!r}: {_describe(exc)}")

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
                return _cut_short(reason, output=tail.text())
        else:
            worker = _CallThread.call(call, f"python-action {reference}")
            reason = _wait_for_event(worker.done, deadline, stop)
            # interrupt() is False when the call returned just as time ran out: then its own outcome stands.
            if reason and worker.interrupt():
                worker.thread.join(ABANDON_GRACE_SECONDS)
                if worker.thread.is_alive():
                    log.warning(
                        "python action %s still runs after TimeoutError (blocked in C code, or it caught the"
                        " exception); abandoning its thread",
                        reference,
                    )
                return _cut_short(reason, output=tail.text())

        if "error" in result:
            return Outcome(succeeded=False, message=_describe(result["error"]), output=tail.text())
        value = result.get("value")
        if value is not None:
            try:
                shown = repr(value)
            except Exception as exc:
                shown = f"<repr failed: {_describe(exc)}>"
            separator = b"" if tail.total == 0 or tail.endswith(b"\n") else b"\n"
            tail.write(separator + f"-> {shown}".encode("utf-8", errors="replace"))
        return Outcome(succeeded=True, output=tail.text())


# With the contract's defaults (GuardRails()): for callers without an app, such as tests.
EXECUTORS: dict[str, Executor] = {
    "shell": ShellExecutor(),
    "http": HttpExecutor(),
    "python": PythonExecutor(),
}


def executors_with(
    cgroups: RunCgroups | None,
    watchdog: Watchdog | None = None,
    rails: GuardRails = GuardRails(),
    *,
    connections: int = DEFAULT_POOLSIZE,
) -> dict[str, Executor]:
    """The executors of an engine whose shell runs get cgroups from ``cgroups`` (None: process groups only),
    whose python calls run in its workers under ``watchdog`` (None: in threads of their own), that apply
    ``rails``, and that keep up to ``connections`` idle connections to each host (one per worker).

    Its own instances, never those of EXECUTORS: the engine closes them when it stops.
    """
    return {
        "shell": ShellExecutor(cgroups, inherit_env=rails.shell_inherit_env),
        "http": HttpExecutor(rails.deny_networks, connections=connections),
        "python": PythonExecutor(watchdog, modules=rails.python_modules),
    }


def close_executors(executors: Mapping[str, Executor]) -> None:
    """Release what ``executors`` keep between runs (at an engine's shutdown)."""
    for executor in executors.values():
        executor.close()


def execute_action(
    action: Mapping[str, Any],
    *,
    timeout: float | None,
    output_limit: int,
    stop: threading.Event | None = None,
    executors: Mapping[str, Executor] = EXECUTORS,
) -> Outcome:
    """Run ``action`` with the executor its ``type`` names. Never raises."""
    kind = action.get("type") if isinstance(action, Mapping) else None
    executor = executors.get(kind) if isinstance(kind, str) else None
    if executor is None:
        return Outcome(succeeded=False, message=_one_line(f"unknown action type {kind!r}"))
    return executor.execute(action, timeout=timeout, output_limit=output_limit, stop=stop)
