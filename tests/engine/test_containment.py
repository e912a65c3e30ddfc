"""Shell runs in cgroups: no process outlives its run, and no run forks without limit.

The tests that start processes use the machine's real cgroups and are skipped
where there are none to use (the engine then falls back to process groups, as
test_executors.py covers). A fork bomb is only ever started inside a cgroup.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest

from scheduler_service.config import ConfigError
from scheduler_service.engine import containment
from scheduler_service.engine.containment import RunCgroups, find_pids_cgroup, jailed_command
from scheduler_service.engine.executors import ShellExecutor, executors_with, execute_action
from scheduler_service.engine.scheduler import _shell_cgroups
from tests.processes import running
from tests.waiting import wait_until

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "8:pids:/jobs/box\n4:memory:/elsewhere\n0::/\n"
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/system.slice/scheduler.service\n"


def test_finds_the_v1_pids_hierarchy_before_v2():
    assert find_pids_cgroup(V1_MOUNTINFO, V1_CGROUP) == "/sys/fs/cgroup/pids/jobs/box"


def test_finds_a_v2_cgroup_when_there_is_no_v1_pids_hierarchy():
    assert find_pids_cgroup(V2_MOUNTINFO, V2_CGROUP) == "/sys/fs/cgroup/system.slice/scheduler.service"


def test_strips_the_root_of_a_bind_mounted_subtree():
    mountinfo = "39 31 0:36 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    assert find_pids_cgroup(mountinfo, "8:pids:/docker/abc/worker\n") == "/sys/fs/cgroup/pids/worker"
    assert find_pids_cgroup(mountinfo, "8:pids:/docker/other\n") is None  # not visible through that mount


def test_finds_nothing_without_a_cgroup_filesystem():
    assert find_pids_cgroup("22 1 0:5 / /proc rw - proc proc rw\n", "0::/\n") is None


def test_only_dead_owners_on_this_host_are_swept():
    host = "node-1"
    assert containment._owner_alive(f"{host}:{os.getpid()}:abc", host)
    assert not containment._owner_alive(f"{host}:{2**22 + 1}:abc", host)  # above any pid_max
    assert containment._owner_alive(f"other-host:{2**22 + 1}:abc", host)
    assert containment._owner_alive("not-an-owner", host)


def test_cgroup_mode_stops_start_up_with_one_line_when_the_machine_has_none(monkeypatch):
    monkeypatch.setattr(containment, "find_pids_cgroup", lambda mountinfo, cgroups: None)
    config = {"SHELL_CONTAINMENT": "cgroup", "SHELL_MAX_PROCESSES": 10}
    with pytest.raises(ConfigError) as excinfo:
        _shell_cgroups(config, "host:1:abc")
    assert str(excinfo.value).startswith("SHELL_CONTAINMENT=")
    assert "\n" not in str(excinfo.value)
    assert _shell_cgroups({**config, "SHELL_CONTAINMENT": "auto"}, "host:1:abc") is None


# --- real cgroups ------------------------------------------------------------------------


@pytest.fixture
def cgroups():
    found, reason = RunCgroups.detect(f"test:{os.getpid()}:{uuid.uuid4().hex[:8]}", max_processes=16)
    if found is None:
        pytest.skip(f"no cgroups to contain shell runs here: {reason}")
    yield found
    found.close()
    assert not os.path.exists(found.home)


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read() and running(int(entry)):
                    found.append(int(entry))
        except OSError:
            pass
    return found


def _shell(cgroups, command: str, timeout: float = 10):
    return execute_action(
        {"type": "shell", "command": command}, timeout=timeout, output_limit=65536,
        executors=executors_with(cgroups),
    )


def _marker() -> str:
    # A sleep argument no other process on the machine uses.
    return f"30.{uuid.uuid4().int % 10**6:06d}"


def test_a_child_that_leaves_the_process_group_does_not_outlive_its_run(cgroups):
    marker = _marker()
    outcome = _shell(cgroups, f"setsid sleep {marker} & echo started")
    assert (outcome.succeeded, outcome.output) == (True, "started\n")
    assert _processes_with(marker) == []


def test_a_daemon_holding_the_output_pipe_is_killed_and_the_run_ends_at_once(cgroups):
    marker = _marker()
    started = time.monotonic()
    # A double fork into a new session, still holding stdout: the classic daemon escape.
    outcome = _shell(cgroups, f"(setsid sh -c 'sleep {marker}' &); echo detached")
    assert (outcome.succeeded, outcome.output) == (True, "detached\n")
    assert _processes_with(marker) == []
    # Without the cgroup kill, the executor waits for the pipe for up to a second.
    assert time.monotonic() - started < 5


def test_a_run_cannot_fork_past_its_limit(cgroups):
    marker = _marker()
    outcome = _shell(cgroups, f"for i in $(seq 40); do sleep {marker} & done; echo forked", timeout=2)
    assert "[scheduler] fork() failed" in outcome.output
    assert "limit of 16 processes (SHELL_MAX_PROCESSES)" in outcome.output
    assert _processes_with(marker) == []


def test_a_fork_bomb_is_contained_and_cleaned_up(cgroups):
    before = len([entry for entry in os.listdir("/proc") if entry.isdigit()])
    outcome = _shell(cgroups, "bomb() { bomb | bomb & }; bomb; sleep 5", timeout=2)
    assert outcome.message == "timed out after 2s"
    assert "[scheduler] fork() failed" in outcome.output
    after = len([entry for entry in os.listdir("/proc") if entry.isdigit()])
    assert after < before + 16  # loose: other tests' processes come and go
    # Its cgroup is empty and waits for the next run.
    left = [containment.RunCgroup(os.path.join(cgroups.home, name)) for name in containment._subdirectories(cgroups.home)]
    assert left and all(cgroup.members() == [] for cgroup in left)


def test_a_reused_cgroup_reports_only_its_own_run_s_refused_forks(cgroups):
    first = _shell(cgroups, "for i in $(seq 40); do sleep 1 & done", timeout=5)
    assert "[scheduler] fork() failed" in first.output
    second = _shell(cgroups, "echo quiet")
    assert (second.succeeded, second.output) == (True, "quiet\n")


def _descriptors_under(path: str) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since listed
        if target.startswith(path + "/"):
            found.append(target)
    return found


def test_runs_hold_a_few_descriptors_and_closing_gives_them_back(cgroups):
    for _ in range(20):
        assert _shell(cgroups, "true").succeeded
    # One reused cgroup's counters, however many runs it served.
    assert 0 < len(_descriptors_under(cgroups.home)) <= 2
    cgroups.close()
    assert _descriptors_under(cgroups.home) == []


def test_what_a_killed_scheduler_left_running_is_killed_by_the_next_sweep(cgroups):
    marker = _marker()
    dead = RunCgroups(cgroups.parent, f"{cgroups._hostname}:{2**22 + 1}:dead", max_processes=16)
    os.makedirs(dead.home)
    left = dead.create()
    orphan = subprocess.Popen(jailed_command(left, f"exec sleep {marker}"), start_new_session=True)
    try:
        wait_until(lambda: left.members() == [orphan.pid], timeout=5)
        # At least this one: a scheduler that another test killed may have left its own.
        assert cgroups.sweep_dead() >= 1
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert not os.path.exists(dead.home)
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_the_command_is_unchanged_by_its_jail(cgroups):
    outcome = _shell(cgroups, 'echo "$0" $#; false; echo "line $LINENO"')
    # dash reports LINENO; the point is that it is the user's line 1, not the jail's.
    assert outcome.output.splitlines()[0] == "/bin/sh 0"
    assert outcome.output.splitlines()[1] in ("line 1", "line ")


def test_without_cgroups_the_executor_keeps_process_groups_only():
    outcome = ShellExecutor(None).execute({"type": "shell", "command": "echo plain"}, timeout=5, output_limit=100)
    assert (outcome.succeeded, outcome.output) == (True, "plain\n")
