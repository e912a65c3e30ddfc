"""A cgroup for each shell run: a cap on how many processes it forks, and a way to kill every one of them.

A process group cannot contain a shell command. ``setsid`` or a double fork leaves
the group, and nothing about a group limits how many processes it forks. A cgroup
does both, and it is what systemd (``TasksMax=``, ``KillMode=control-group``) and
Kubernetes (the ``pids`` limit) use:

- a process cannot leave its cgroup unless it has the privilege to write to the
  cgroup filesystem;
- the ``pids`` controller makes ``fork()`` fail once the cgroup holds ``pids.max``
  tasks;
- ``cgroup.procs`` lists every member, so a run's end can kill them all.

The layout is ``<this process's pids cgroup>/scheduler-service/<owner>/run-<n>``,
where ``<owner>`` is the engine's ``host:pid:token``. A scheduler that is killed
(``kill -9``) leaves its runs' processes running. Every scheduler on the same
machine looks for the directories of dead owners at each heartbeat and kills
what is in them.

This needs a writable ``pids`` hierarchy: cgroup v1, or a delegated v2 subtree.
:meth:`RunCgroups.detect` proves that by placing a real shell in a probe cgroup.
Where that fails, shell runs fall back to process-group cleanup only, and the
engine logs which of the two it uses.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DIRECTORY = "scheduler-service"
# Killing and removing races with processes that are still being torn down by the
# kernel; these bound how long a run's end may wait for its cgroup to empty.
_KILL_PASSES = 200
_KILL_PAUSE_SECONDS = 0.001
_REMOVE_ATTEMPTS = 50
_REMOVE_PAUSE_SECONDS = 0.01


def _read(path: str) -> str:
    # os.open/os.read: three system calls where open() makes nine, and in a burst of shell
    # runs each is a moment when ten worker threads compete for the GIL.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write(path: str, text: str) -> None:
    # One write() per value: the kernel reads each write to a cgroup file as one command.
    with open(path, "w") as file:
        file.write(text)


def find_pids_cgroup(mountinfo: str, cgroups: str) -> str | None:
    """The directory of this process's cgroup in a hierarchy with the pids controller, or None.

    ``mountinfo`` and ``cgroups`` are the texts of /proc/self/mountinfo and
    /proc/self/cgroup. A v1 ``pids`` hierarchy is preferred to the v2 one: v2's
    rule that a cgroup with processes may not hand controllers to its children
    means only a delegated v2 subtree works, and the probe decides that.
    """
    mounts: dict[str, tuple[str, str]] = {}  # "pids" or "v2" -> (mount root, mount point)
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mount_point = fields[3], fields[4]
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup" and "pids" in super_options:
            mounts.setdefault("pids", (root, mount_point))
        elif fstype == "cgroup2":
            mounts.setdefault("v2", (root, mount_point))

    paths: dict[str, str] = {}
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if "pids" in controllers.split(","):
            paths["pids"] = path
        elif hierarchy_id == "0" and controllers == "":
            paths["v2"] = path

    for kind in ("pids", "v2"):
        if kind not in mounts or kind not in paths:
            continue
        root, mount_point = mounts[kind]
        path = paths[kind]
        # A bind mount of a sub-tree (a container without a cgroup namespace)
        # shows our path from the real root; strip the part the mount hides.
        if root != "/":
            if not (path == root or path.startswith(root + "/")):
                continue
            path = path[len(root):]
        return os.path.join(mount_point, path.lstrip("/"))
    return None


def _owner_alive(name: str, hostname: str) -> bool:
    """Whether the engine that owns the directory ``name`` (``host:pid:token``) may still be running.

    Directories of other hosts (a cgroup filesystem shared across containers)
    count as alive: their pids mean nothing here.
    """
    parts = name.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return True
    host, pid = ":".join(parts[:-2]), int(parts[-2])
    if host != hostname:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@dataclass
class RunCgroup:
    """The cgroup of one shell run."""

    path: str
    refused_before: int = 0  # pids.events "max" when this run began: the count never resets
    has_kill_file: bool | None = None  # cgroup v2's cgroup.kill (Linux 5.14+); None: not looked yet
    # Open descriptors of the counter files, read with one pread() each: a reused cgroup is
    # checked at every run's end, and in a burst each system call is a moment when the
    # worker threads compete for the GIL. (cgroup.procs cannot be read this way: cgroup v1
    # lists its members once per open file.)
    _counters: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def members(self) -> list[int]:
        try:
            return [int(pid) for pid in _read(self.procs_file).split()]
        except FileNotFoundError:
            return []

    def kill_all(self) -> bool:
        """SIGKILL every member, again until none is left (a member may fork while we list); True once empty."""
        if self.holds_no_task():
            return True
        kill_file = os.path.join(self.path, "cgroup.kill")  # v2, Linux 5.14+: one atomic kill
        if self.has_kill_file is None:
            self.has_kill_file = os.path.exists(kill_file)
        if self.has_kill_file:
            try:
                _write(kill_file, "1")
            except OSError:
                pass
        for _ in range(_KILL_PASSES):
            members = self.members()
            if not members:
                return True
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # A killed process stays listed until the kernel has torn it down;
            # a forking one may have added a child since we listed.
            time.sleep(_KILL_PAUSE_SECONDS)
        log.warning("cgroup %s still has members after %d kill passes", self.path, _KILL_PASSES)
        return False

    def holds_no_task(self) -> bool:
        """True if no task is charged to the cgroup, not even a zombie that is not yet reaped.

        One read of ``pids.current``; False when it cannot be read, so that the caller
        looks at the members themselves.
        """
        try:
            return int(self._read_counter("pids.current")) == 0
        except (OSError, ValueError):
            return False

    def take_refused_forks(self) -> int:
        """How often fork() failed at the process limit during this run (read once, at its end)."""
        total = self.refused_forks()
        refused, self.refused_before = total - self.refused_before, total  # the next run counts from here
        return refused

    def refused_forks(self) -> int:
        """How often fork() failed in this cgroup because it was at its process limit, ever."""
        try:
            for line in self._read_counter("pids.events").splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def _read_counter(self, name: str) -> str:
        fd = self._counters.get(name)
        if fd is None:
            fd = self._counters[name] = os.open(os.path.join(self.path, name), os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(fd, 4096, 0).decode()

    def _close_counters(self) -> None:
        for fd in self._counters.values():
            os.close(fd)
        self._counters.clear()

    def remove(self) -> bool:
        """Kill what is left and remove the directory; False if it stays busy."""
        try:
            return self._remove()
        finally:
            self._close_counters()

    def _remove(self) -> bool:
        for _ in range(_REMOVE_ATTEMPTS):
            self.kill_all()
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    log.warning("cannot remove cgroup %s: %s", self.path, exc)
                    return False
            # Killed processes leave the cgroup only once the kernel has torn them down.
            time.sleep(_REMOVE_PAUSE_SECONDS)
        log.warning("cgroup %s is still busy; the next sweep removes it", self.path)
        return False


class RunCgroups:
    """The cgroups of one engine's shell runs, under ``<pids cgroup>/scheduler-service/<owner>``."""

    def __init__(self, parent: str, owner: str, max_processes: int) -> None:
        self.parent = parent
        self.home = os.path.join(parent, owner)
        self.max_processes = max_processes
        self._numbers = itertools.count(1)
        self._hostname = socket.gethostname()
        # Emptied cgroups, reused by later runs: a burst of short commands then makes a
        # handful of cgroup directories instead of one per run.
        self._idle: list[RunCgroup] = []
        self._idle_lock = threading.Lock()

    def acquire(self) -> RunCgroup:
        """An empty cgroup for one run: an idle one, or a new one.

        An idle cgroup's ``refused_before`` was brought up to date by its last run's
        ``take_refused_forks``: no run forks in it without the executor taking the count.
        """
        with self._idle_lock:
            cgroup = self._idle.pop() if self._idle else None
        return cgroup if cgroup is not None else self.create()

    def release(self, cgroup: RunCgroup) -> None:
        """Kill what is left of a run; keep its cgroup for the next run if it is empty, else remove it."""
        if not cgroup.kill_all():
            cgroup.remove()  # something is slow to die: do not hand it to another run
            return
        with self._idle_lock:
            self._idle.append(cgroup)

    @classmethod
    def detect(cls, owner: str, max_processes: int) -> tuple[RunCgroups | None, str]:
        """Set up this engine's cgroup directory, or explain in a few words why it cannot be done."""
        try:
            base = find_pids_cgroup(_read("/proc/self/mountinfo"), _read("/proc/self/cgroup"))
        except OSError as exc:
            return None, f"cannot read /proc: {exc}"
        if base is None:
            return None, "no cgroup hierarchy with the pids controller is mounted"
        cgroups = cls(os.path.join(base, DIRECTORY), owner, max_processes)
        try:
            os.makedirs(cgroups.home, exist_ok=True)
            reason = cgroups._probe()
        except OSError as exc:
            reason = f"{exc.strerror or exc} ({exc.filename or base})"
        if reason:
            cgroups.close()
            return None, reason
        return cgroups, ""

    def _probe(self) -> str:
        """Place a real shell in a fresh cgroup; '' if that works, else why not."""
        cgroup = self.create()
        try:
            probe = subprocess.run(
                jailed_command(cgroup, "exit 0"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10,
            )
        finally:
            cgroup.remove()
        if probe.returncode != 0:
            return "cannot move a process into a cgroup: " + probe.stderr.decode(errors="replace").strip()
        return ""

    def create(self) -> RunCgroup:
        """A new, empty cgroup limited to ``max_processes`` tasks."""
        cgroup = RunCgroup(os.path.join(self.home, f"run-{next(self._numbers)}"))
        os.mkdir(cgroup.path)
        try:
            pids_max = os.path.join(cgroup.path, "pids.max")
            if not os.path.exists(pids_max):
                raise OSError(errno.ENOTSUP, "the pids controller is not enabled here", pids_max)
            _write(pids_max, str(self.max_processes))
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def sweep_dead(self) -> int:
        """Kill the processes left by engines on this machine that died; how many cgroups were swept."""
        try:
            names = os.listdir(self.parent)
        except OSError:
            return 0
        swept = 0
        for name in names:
            if _owner_alive(name, self._hostname):
                continue
            directory = os.path.join(self.parent, name)
            left = [RunCgroup(os.path.join(directory, run)) for run in _subdirectories(directory)]
            for cgroup in left:
                if cgroup.members():
                    log.warning("killing processes left in %s by a scheduler that died", cgroup.path)
                cgroup.remove()
                swept += 1
            try:
                os.rmdir(directory)
            except OSError:
                pass  # another scheduler is sweeping it too, or a member is still dying
        return swept

    def close(self) -> None:
        """Kill whatever is left in this engine's cgroups and remove them."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for cgroup in idle:
            cgroup.remove()  # closes its counters' descriptors too
        for run in _subdirectories(self.home):
            RunCgroup(os.path.join(self.home, run)).remove()
        try:
            os.rmdir(self.home)
        except OSError:
            pass


def _subdirectories(path: str) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def jailed_command(cgroup: RunCgroup, command: str) -> list[str]:
    """argv that moves the shell into ``cgroup`` before it runs ``command``.

    The shell moves itself, so nothing it starts can fork before the move. The
    move is a prefix on the command's own first line, not a second shell: the
    command keeps its ``$0``, its arguments and its line numbers, and a run costs
    one exec, as without a cgroup. If the move fails, the command does not run.
    """
    return ["/bin/sh", "-c", f"echo $$ > {shlex.quote(cgroup.procs_file)} || exit 125; {command}"]
