"""The shell executor: ``/bin/sh -c command``, its output pumped into the tail, the whole run killed at its end.

Runs in the engine's pool workers (the calling thread does the waiting and the
reading: no helper thread). However the run ends (exit, timeout, shutdown), its whole
process group is killed, and its cgroup where it has one (containment.py), so that
nothing the command started outlives the run. A run sees only the environment the
guard rails allow (guard_rails.py).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..containment import RunCgroup, RunCgroups, jailed_command
from ..deadlines import deadline_or_stop, wait_slice
from ..records import Outcome
from .base import READ_CHUNK, Executor, OutputTail, cut_short, describe
from .guard_rails import BASE_ENV, env_refusal

log = logging.getLogger(__package__)  # the package's logger (base.py says why)

# After the group is killed, how long to keep reading what is still buffered in
# the pipe. A process that escaped the group (setsid) can hold the pipe open
# forever, so this must be bounded.
_DRAIN_SECONDS = 1.0


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


def _start_error(exc: Exception) -> str:
    # An OSError's own text names the file ("[Errno 2] No such file or directory: '/missing'").
    return str(exc) if isinstance(exc, OSError) else describe(exc)


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
            return cut_short(reason, output=tail.text(), exit_code=exit_code)
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
                ready = _ready(watched, wait_slice(deadline))
                if fd in ready:
                    chunk = os.read(fd, READ_CHUNK)
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
            chunk = os.read(fd, READ_CHUNK)
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
