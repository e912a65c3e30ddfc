"""Why a read or a change is refused, in the domain's words (no HTTP here).

``services`` and ``queries`` raise these; ``errors.py`` turns them into the API's
JSON error shape and the admin (``admin/task_writes.py``) into form errors. Both
read the attributes below, never each other's payloads.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Messages by field, nested as the fields are: {"action": {"env": {"TOKEN": ["..."]}}}
# (the shape of marshmallow's messages, so that schema errors and refusals read alike).
FieldMessages = dict[str, Any]


class Refused(Exception):
    """A refusal: ``message`` for people (may be None), ``fields`` names the fields it concerns,
    ``location`` where they were given (``json``: the body; ``query``: the query string)."""

    def __init__(self, message: str | None = None, fields: FieldMessages | None = None,
                 location: str = "json") -> None:
        super().__init__(message if message is not None else str(fields))
        self.message = message
        self.fields: FieldMessages = fields or {}
        self.location = location


class NotFound(Refused):
    """No ``kind`` ("task", "run", "calendar") with the id (or name) ``key``."""

    def __init__(self, kind: str, key: int | str) -> None:
        super().__init__(f"{kind} {key} not found")
        self.kind = kind
        self.key = key


class Conflict(Refused):
    """The change clashes with what is stored: a taken name, a task with children, an active run."""


class Invalid(Refused):
    """A value the rules refuse, at ``path`` (a field, or the keys down to a nested one)."""

    def __init__(self, path: str | Sequence[str], message: str, location: str = "json") -> None:
        self.path = (path,) if isinstance(path, str) else tuple(path)
        super().__init__(None, at_path(self.path, [message]), location)


def at_path(path: Sequence[str], value: Any) -> FieldMessages:
    """``value`` nested under the keys of ``path``: ``at_path(("a", "b"), v) == {"a": {"b": v}}``."""
    nested: Any = value
    for key in reversed(path):
        nested = {key: nested}
    return nested
