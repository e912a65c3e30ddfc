"""Run one task action (shell, http or python) and report what happened as an :class:`Outcome`.

A package as APScheduler's ``executors/`` is: ``base`` keeps the invariants every
executor shares (never raises, timeout and shutdown, bounded output, one-line messages),
each other module does one kind of work (``shell``, ``http``, ``python``) and
``guard_rails`` holds the contract's rules that apply to them all. This module builds
the executors and picks one by the action's ``type``; a new kind of executor is one
module and one entry in ``executors_with``. Called from the engine's pool workers.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from requests.adapters import DEFAULT_POOLSIZE

from ..records import Outcome
from .base import Executor, OutputTail, abandoned_outcome, one_line
from .guard_rails import (
    BASE_ENV, ENV_NAME, ENV_NAME_RULE, MODULES_SETTING, GuardRails, callable_refusal, env_refusal, module_allowed,
)
from .http import HttpExecutor
from .python import PythonExecutor
from .shell import ShellExecutor

if TYPE_CHECKING:
    from ..containment import RunCgroups
    from ..watchdog import Watchdog

__all__ = [
    "BASE_ENV", "ENV_NAME", "ENV_NAME_RULE", "EXECUTORS", "MODULES_SETTING", "Executor", "GuardRails", "HttpExecutor",
    "Outcome", "OutputTail", "PythonExecutor", "ShellExecutor", "abandoned_outcome", "callable_refusal",
    "close_executors", "env_refusal", "execute_action", "executors_with", "module_allowed",
]

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
        return Outcome(succeeded=False, message=one_line(f"unknown action type {kind!r}"))
    return executor.execute(action, timeout=timeout, output_limit=output_limit, stop=stop)
