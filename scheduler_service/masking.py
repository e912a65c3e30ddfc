"""Write-only secrets: what every read shows in their place, and how a write that sends the mask back keeps them.

Secrets are the values of an action's ``headers`` and ``env``, and the path and query of
webhook URLs (a Slack-style hook's path is its credential). Reads (the API, the admin, the
alerts list, the audit trail, ``tasks export``) show ``MASK`` instead; a write that sends
``MASK`` back keeps the stored value, so a client can read a task, change one field and
write it all back. Pure functions of plain values: no database, no request.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
#: The parts of an action whose values are secret.
SECRET_MAPS = ("headers", "env")


class MaskError(ValueError):
    """A write sent ``MASK`` where no stored value exists to keep; ``path`` names where
    (``("action", "env", "TOKEN")``: a header name may itself hold a dot)."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path

    @property
    def field(self) -> str:
        """The path as one dotted name, for messages."""
        return ".".join(self.path)


def mask_action(action: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``action`` with every header and env value replaced by ``MASK``."""
    if action is None:
        return None
    masked = dict(action)
    for part in SECRET_MAPS:
        if isinstance(masked.get(part), Mapping):
            masked[part] = {name: MASK for name in masked[part]}
    return masked


def restore_action(action: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """``action`` with each ``MASK`` value replaced by the stored value of the same entry.

    Raises MaskError when an entry is ``MASK`` but the stored action (of the same type) has no such entry.
    """
    restored = dict(action)
    same_type = stored is not None and stored.get("type") == action.get("type")
    for part in SECRET_MAPS:
        values = restored.get(part)
        if not isinstance(values, Mapping):
            continue
        kept = (stored.get(part) or {}) if same_type else {}
        merged = {}
        for name, value in values.items():
            if value == MASK:
                if name not in kept:
                    raise MaskError(
                        ("action", part, name), f"'{MASK}' keeps a stored value, and there is none for {name!r}."
                    )
                value = kept[name]
            merged[name] = value
        restored[part] = merged
    return restored


def mask_url(url: str | None) -> str | None:
    """Scheme, host and port of a URL, its path and query shown as ``MASK``: where, without the credential."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.path in ("", "/") and not parts.query and not parts.fragment:
        return url
    return urlunsplit((parts.scheme, parts.netloc, "/" + MASK, "", ""))


def restore_url(url: str | None, stored: str | None, path: tuple[str, ...]) -> str | None:
    """``url`` itself, or the stored URL when ``url`` is that URL's masked form."""
    if url is None or MASK not in url:
        return url
    if stored is not None and mask_url(stored) == url:
        return stored
    raise MaskError(path, f"'{MASK}' keeps a stored URL, and none of this host is stored.")


def mask_notify(notify: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if notify is None:
        return None
    return {**notify, "url": mask_url(notify.get("url"))}


def restore_notify(notify: Mapping[str, Any] | None, stored: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if notify is None:
        return None
    stored_url = (stored or {}).get("url")
    return {**notify, "url": restore_url(notify.get("url"), stored_url, ("notify", "url"))}
