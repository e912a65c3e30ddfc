"""What to do with a task whose slot has come due: run it, skip it (and say why), or wait.

Pure: takes the task's values, its parents' states and ``now``; the tick turns
the plan into database writes. Misfire, concurrency and dependency rules meet here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import cron
from .active_runs import has_active_run
from .dependencies import ParentState, gate

ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class DueTask:
    """The values of a task the rules read."""

    cron_expression: str | None
    timezone: str
    next_run_at: datetime
    misfire_grace_seconds: int
    concurrency_policy: str
    active_runs: int
    status: str

    @property
    def is_active(self) -> bool:
        return has_active_run(self.active_runs, self.status)


@dataclass(frozen=True)
class Skip:
    slot: datetime
    message: str
    parent: ParentState | None = None  # the parent that stopped the slot, if one did


@dataclass(frozen=True)
class SlotPlan:
    """``run_slot`` runs (if set); each of ``skips`` is logged as a skipped run;
    ``next_run_at`` replaces the task's; ``wait`` means change nothing yet."""

    run_slot: datetime | None = None
    skips: tuple[Skip, ...] = ()
    next_run_at: datetime | None = None
    wait: bool = False
    wait_reason: str = ""
    trigger: str = "schedule"


def _fmt(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def plan_slot(task: DueTask, parents: Sequence[ParentState], now: datetime) -> SlotPlan:
    """Decide what the tick does with ``task``, whose ``next_run_at`` is at or before ``now``."""
    due = task.next_run_at
    forbid_active = task.concurrency_policy == "forbid" and task.is_active

    if task.cron_expression is None:
        # A dependency trigger is an event, not a slot: it is never missed, only delayed.
        if forbid_active:
            return SlotPlan(wait=True, wait_reason="previous run still active")
        return SlotPlan(run_slot=due, next_run_at=None, trigger="dependency")

    grace = timedelta(seconds=task.misfire_grace_seconds)
    decision = gate(parents) if parents else None
    if decision is not None and decision.decision == "wait" and now - due <= grace:
        # No slot since `due` can be past the grace yet: wait, without the cron arithmetic
        # (a task may wait for many ticks, and so may thousands of its siblings).
        return SlotPlan(wait=True, wait_reason=decision.reason)

    expression, zone = task.cron_expression, task.timezone
    next_slot = cron.next_fire_time(expression, zone, now)
    latest = cron.previous_fire_time(expression, zone, now + ONE_MICROSECOND)
    if latest is None or latest < due:
        latest = due

    if now - latest > grace:
        if decision is not None and decision.decision == "wait":
            skip = Skip(due, f"{decision.reason} past the misfire grace", decision.parent)
        else:
            # Every slot since `due` was missed by more than the grace: one row for the episode.
            span = f"{_fmt(due)}" if latest == due else f"{_fmt(due)} to {_fmt(latest)}"
            skip = Skip(due, f"missed slot {span}: more than {task.misfire_grace_seconds}s late")
        return SlotPlan(skips=(skip,), next_run_at=next_slot)

    skips: tuple[Skip, ...] = ()
    if latest > due and now - due > grace:
        # Older slots are beyond the grace, the latest is not: log the older ones once, run the latest.
        skips = (Skip(due, f"missed slots from {_fmt(due)}: more than {task.misfire_grace_seconds}s late; "
                           f"the latest slot {_fmt(latest)} runs instead"),)
    if decision is not None and decision.decision == "wait":
        return SlotPlan(wait=True, wait_reason=decision.reason)
    if decision is not None and decision.decision == "skip":
        return SlotPlan(skips=skips + (Skip(latest, decision.reason, decision.parent),), next_run_at=next_slot)

    if forbid_active:
        return SlotPlan(skips=skips + (Skip(latest, "previous run still active (concurrency_policy forbid)"),),
                        next_run_at=next_slot)
    return SlotPlan(run_slot=latest, skips=skips, next_run_at=next_slot)
