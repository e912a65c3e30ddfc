"""The contract's "Guard rails for actions": their settings, and the rules that judge an action by its names.

Applied by the executors at run time, whatever was accepted when the task was written
(a python callable must come from PYTHON_ACTIONS_MODULES; a shell run sees PATH, HOME,
LANG and its task's ``env``, not the service's secrets, unless SHELL_INHERIT_ENV; an
http request connects only outside HTTP_ACTIONS_DENY_NETWORKS, which ``outbound``
enforces), and by schemas.py when a task is written. Pure functions: they run in the
engine's pool workers and in the API's request threads alike.
"""
from __future__ import annotations

import inspect
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ... import outbound


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


# --- shell: the environment a run gets --------------------------------------------

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


# --- python: the modules a callable may come from ---------------------------------

MODULES_SETTING = "PYTHON_ACTIONS_MODULES"


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


def origin_refusal(reference: str, target: Any, allowed: tuple[str, ...] | None) -> str | None:
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
