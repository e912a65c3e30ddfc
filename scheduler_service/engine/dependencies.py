"""Dependency rules: cycle detection and the gate a child passes before it runs.

Pure functions over plain values, so they are tested without a database. Gates
return reasons, not booleans (the shape of Airflow's ``TIDepStatus``): a skipped
run says which parent stopped it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal


def find_cycle(task_id: int, new_parents: Iterable[int], parents_of: Mapping[int, Iterable[int]]) -> list[int] | None:
    """Return a path ``[task_id, ..., task_id]`` if giving ``task_id`` these parents closes a cycle.

    ``parents_of`` maps every other task to its current parents; the task's own
    current parents are ignored because ``new_parents`` replaces them.
    """
    # Walk up from each new parent; reaching task_id again means a cycle.
    came_from: dict[int, int] = {}
    stack: list[int] = []
    for parent in new_parents:
        if parent not in came_from:
            came_from[parent] = task_id
            stack.append(parent)
    while stack:
        node = stack.pop()
        if node == task_id:
            path = [task_id]
            step = came_from[task_id]
            while step != task_id:
                path.append(step)
                step = came_from[step]
            path.append(task_id)
            path.reverse()
            return path
        for ancestor in parents_of.get(node, ()):
            if ancestor not in came_from:
                came_from[ancestor] = node
                stack.append(ancestor)
    return None


@dataclass(frozen=True)
class ParentState:
    name: str
    status: str  # the parent task's status: pending, running, success, failed, retrying
    id: int | None = None


Decision = Literal["run", "wait", "skip"]


@dataclass(frozen=True)
class GateStatus:
    """The gate's answer for one child slot, with the reason a person reads in the log
    and the parent that decided it (None when it runs)."""

    decision: Decision
    reason: str = ""
    parent: ParentState | None = None


def gate(parents: Iterable[ParentState]) -> GateStatus:
    """Decide a scheduled child's slot from its parents' states.

    Any parent still running or retrying makes it wait; otherwise a parent that
    failed or never ran skips the slot; otherwise it runs.
    """
    parents = list(parents)
    busy = [p for p in parents if p.status in ("running", "retrying")]
    if busy:
        return GateStatus("wait", f"parent '{busy[0].name}' is {busy[0].status}", busy[0])
    for parent in parents:
        if parent.status == "failed":
            return GateStatus("skip", f"parent '{parent.name}' failed", parent)
        if parent.status == "pending":
            return GateStatus("skip", f"parent '{parent.name}' has never run", parent)
    return GateStatus("run")


@dataclass(frozen=True)
class ParentOutcome:
    """What a dependency-only child needs to know of one parent: its status and its latest success."""

    status: str
    last_success_at: datetime | None


def due_after_parents(parents: Sequence[ParentOutcome], child_last_run: datetime | None) -> bool:
    """Whether a task with parents and no cron expression is due: every parent's latest run
    succeeded, and each of them has succeeded since the child last ran."""
    if not parents or any(parent.status != "success" or parent.last_success_at is None for parent in parents):
        return False
    return child_last_run is None or all(parent.last_success_at > child_last_run for parent in parents)
