"""What to do with a task whose slot has come due: run it, queue it, skip it (and say why), or wait.

Pure: takes the task's values, its parents' states and ``now``; the tick turns the plan
into database writes. Misfire, catch-up, jitter, concurrency and dependency rules meet here.

Jitter shifts the task's clock: a slot drawn ``d`` seconds of jitter comes due ``d`` after
the slot, and every rule below reads ``now - d`` as the time, so that jitter never makes a
slot look missed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .active_runs import EXCLUSIVE_POLICIES, has_active_run
from .dependencies import ParentState, gate
from .schedules import ONE_MICROSECOND, Schedule, jitter_offset

# catchup "none": a slot the engine reaches later than this counts as missed during downtime.
# On-time slots are reached within a second or two, a big burst in a few more.
MISSED_AFTER = timedelta(seconds=15)
# catchup "all" queues at most this many missed slots (the latest ones); older ones are skipped.
MAX_CATCHUP_RUNS = 1000


@dataclass(frozen=True)
class DueTask:
    """The values of a task the rules read."""

    task_id: int
    schedule: Schedule
    next_run_at: datetime  # the slot
    due_at: datetime  # when it came due: the slot plus its jitter
    misfire_grace_seconds: int
    concurrency_policy: str
    active_runs: int
    status: str
    catchup: str = "latest"
    jitter_seconds: int = 0
    waiting: int = 0  # queued runs of the task not started yet (read for buffer_*, replace and pools)
    pool: str | None = None

    @property
    def is_active(self) -> bool:
        return has_active_run(self.active_runs, self.status)

    def due_at_of(self, slot: datetime | None) -> datetime | None:
        return None if slot is None else slot + jitter_offset(self.task_id, slot, self.jitter_seconds)


@dataclass(frozen=True)
class Skip:
    slot: datetime
    message: str
    parent: ParentState | None = None  # the parent that stopped the slot, if one did


@dataclass(frozen=True)
class SlotPlan:
    """``run_slot`` runs now (if set); each of ``queue`` becomes a pending run, started one at
    a time oldest first; each of ``skips`` is logged as a skipped run; ``next_run_at`` and
    ``next_due_at`` replace the task's; ``wait`` means change nothing yet."""

    run_slot: datetime | None = None
    queue: tuple[datetime, ...] = ()
    skips: tuple[Skip, ...] = ()
    next_run_at: datetime | None = None
    next_due_at: datetime | None = None
    wait: bool = False
    wait_reason: str = ""
    trigger: str = "schedule"
    replace: bool = False  # cancel what of the task is active; the queued slot runs after it


def _fmt(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def plan_slot(task: DueTask, parents: Sequence[ParentState], now: datetime) -> SlotPlan:
    """Decide what the tick does with ``task``, whose ``due_at`` is at or before ``now``."""
    due = task.next_run_at

    if task.schedule.kind is None:
        # A dependency trigger is an event, not a slot: it is never missed, only delayed.
        if task.concurrency_policy in EXCLUSIVE_POLICIES and task.is_active:
            return SlotPlan(wait=True, wait_reason="previous run still active")
        if task.concurrency_policy == "replace" and task.is_active:
            return SlotPlan(queue=(due,), trigger="dependency", replace=True)
        return SlotPlan(run_slot=due, trigger="dependency")

    clock = now - (task.due_at - due)
    grace = timedelta(seconds=task.misfire_grace_seconds)
    decision = gate(parents) if parents else None
    if decision is not None and decision.decision == "wait" and clock - due <= grace:
        # No slot since `due` can be past the grace yet: wait, without the slot arithmetic
        # (a task may wait for many ticks, and so may thousands of its siblings).
        return SlotPlan(wait=True, wait_reason=decision.reason)

    schedule = task.schedule
    next_slot = schedule.next_after(clock)
    advance = {"next_run_at": next_slot, "next_due_at": task.due_at_of(next_slot)}
    latest = schedule.latest_until(clock)
    if latest is None or latest < due:
        latest = due

    if clock - latest > grace:
        if decision is not None and decision.decision == "wait":
            skip = Skip(due, f"{decision.reason} past the misfire grace", decision.parent)
        else:
            # Every slot since `due` was missed by more than the grace: one row for the episode.
            skip = Skip(due, f"missed slot {_span(due, latest)}: more than {task.misfire_grace_seconds}s late")
        return SlotPlan(skips=(skip,), **advance)

    runs, skips = _catch_up(task, latest, clock, grace)
    if not runs:
        return SlotPlan(skips=skips, **advance)
    if decision is not None and decision.decision == "wait":
        return SlotPlan(wait=True, wait_reason=decision.reason)
    if decision is not None and decision.decision == "skip":
        return SlotPlan(skips=skips + (Skip(runs[-1], decision.reason, decision.parent),), **advance)
    if len(runs) > 1:
        return SlotPlan(queue=tuple(runs), skips=skips, **advance)
    return _overlap(task, runs[0], skips, advance)


def _overlap(task: DueTask, slot: datetime, skips: tuple[Skip, ...], advance: dict) -> SlotPlan:
    """The concurrency policy's answer for one slot that may run now. A slot that must wait
    (for the task's active run, or behind runs of the task waiting for its pool) is queued: a
    pending run that the tick starts when the task may run and its pool has room, oldest first."""
    policy = task.concurrency_policy
    busy = task.is_active or task.waiting > 0  # a waiting run goes before this slot
    if policy == "forbid" and task.is_active:
        return SlotPlan(skips=skips + (Skip(slot, "previous run still active (concurrency_policy forbid)"),),
                        **advance)
    if policy == "forbid" and task.waiting:
        waits_for = f" for pool {task.pool}" if task.pool is not None else ""
        return SlotPlan(skips=skips + (Skip(slot, f"a run of the task already waits{waits_for} "
                                                  "(concurrency_policy forbid)"),), **advance)
    if policy == "buffer_one" and task.waiting:
        return SlotPlan(skips=skips + (Skip(slot, "a slot already waits (concurrency_policy buffer_one)"),),
                        **advance)
    if policy == "replace" and busy:
        return SlotPlan(queue=(slot,), skips=skips, replace=True, **advance)
    if busy and policy in ("buffer_one", "buffer_all") or task.pool is not None and task.waiting:
        return SlotPlan(queue=(slot,), skips=skips, **advance)
    # A pool's task runs now only if the tick can take a slot of its pool; else it is queued then.
    return SlotPlan(run_slot=slot, skips=skips, **advance)


def _catch_up(task: DueTask, latest: datetime, clock: datetime, grace: timedelta
              ) -> tuple[list[datetime], tuple[Skip, ...]]:
    """The slots from ``task.next_run_at`` to ``latest`` (within the grace) that run, by the
    task's catch-up policy, and the skipped row for those that do not."""
    due = task.next_run_at
    late = f"more than {task.misfire_grace_seconds}s late"
    if task.catchup == "none":
        on_time = clock - latest <= MISSED_AFTER
        if latest == due and on_time:
            return [latest], ()
        last_missed = latest if not on_time else task.schedule.latest_until(latest - ONE_MICROSECOND) or due
        skip = Skip(due, f"missed slot {_span(due, last_missed)}: not run (catchup none)")
        return ([latest] if on_time else []), (skip,)
    if task.catchup == "all":
        runs = _slots_back_from(task.schedule, latest, max(due, clock - grace))
        if runs[0] > due:
            skip = Skip(due, f"missed slots from {_fmt(due)} to before {_fmt(runs[0])}: {late}")
            return runs, (skip,)
        return runs, ()
    if latest > due and clock - due > grace:
        # Older slots are beyond the grace, the latest is not: log the older ones once, run the latest.
        return [latest], (Skip(due, f"missed slots from {_fmt(due)}: {late}; the latest slot {_fmt(latest)} "
                                    "runs instead"),)
    return [latest], ()


def _slots_back_from(schedule: Schedule, latest: datetime, earliest: datetime) -> list[datetime]:
    """The slots from ``earliest`` to ``latest`` (a slot), oldest first, at most MAX_CATCHUP_RUNS (the latest)."""
    slots = [latest]
    while len(slots) < MAX_CATCHUP_RUNS:
        earlier = schedule.latest_until(slots[-1] - ONE_MICROSECOND)
        if earlier is None or earlier < earliest:
            break
        slots.append(earlier)
    return slots[::-1]


def _span(first: datetime, last: datetime) -> str:
    return _fmt(first) if first == last else f"{_fmt(first)} to {_fmt(last)}"
