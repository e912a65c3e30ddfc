"""Fields bound to every log line written inside a block (task id, run id, attempt, request id).

A context variable, so it is per thread and per request. Kept apart from
ops/logging.py (which formats and redacts) so that the engine can bind a run's
fields without depending on the operations package.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_context: ContextVar[dict[str, Any]] = ContextVar("scheduler_log_context", default={})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (task_id, run_id, attempt, ...) to every log line written inside the block."""
    merged = {**_context.get(), **{key: value for key, value in fields.items() if value is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)
