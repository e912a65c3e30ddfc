"""Slowing down password guessing: at most ``MAX_FAILURES`` failed logins a minute per name and per client address.

Failures are rows of ``admin_login_failure`` rather than counters in memory, so the
limit holds across every process serving the admin. A try is written down as a
failure *before* its password is checked, and taken back if the password was
right: processes checking passwords at the same moment then all see each other's
tries, and never let more than ``MAX_FAILURES`` through together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..database import db
from .models import LoginFailure

MAX_FAILURES = 10
WINDOW = timedelta(minutes=1)
_KEY_LENGTH = LoginFailure.__table__.c.key.type.length


@dataclass(frozen=True)
class Attempt:
    """A login try: the failure rows written for it, or, when refused, the seconds to wait."""

    failure_ids: tuple[int, ...]
    retry_after: int | None


def throttle_keys(name: str, address: str | None) -> tuple[str, ...]:
    # The name as authenticate() looks it up; an address unknown to the server is one shared bucket.
    return (f"name:{name.strip()}"[:_KEY_LENGTH], f"addr:{address or 'unknown'}"[:_KEY_LENGTH])


def begin_attempt(keys: tuple[str, ...], now: datetime) -> Attempt:
    """Count a try against every key; refused (``retry_after`` set) if a key has had its fill this minute."""
    db.session.execute(sa.delete(LoginFailure).where(LoginFailure.at <= now - WINDOW))
    rows = [LoginFailure(key=key, at=now) for key in keys]
    db.session.add_all(rows)
    db.session.flush()
    own = tuple(row.id for row in rows)
    db.session.commit()
    waits = [wait for wait in (_seconds_to_wait(key, own, now) for key in keys) if wait is not None]
    if not waits:
        return Attempt(own, None)
    # A refused try is not checked, so it is no failure: it must not keep the limit in place.
    _delete(own)
    return Attempt((), max(waits))


def end_attempt(attempt: Attempt) -> None:
    """The password was right: this try was no failure after all."""
    _delete(attempt.failure_ids)


def _seconds_to_wait(key: str, own: tuple[int, ...], now: datetime) -> int | None:
    """None if ``key`` has had fewer than MAX_FAILURES other failures this minute, else the
    seconds until the oldest of the last MAX_FAILURES leaves the window."""
    recent = db.session.execute(
        sa.select(LoginFailure.at)
        .where(LoginFailure.key == key, LoginFailure.at > now - WINDOW, LoginFailure.id.not_in(own))
        .order_by(LoginFailure.at.desc())
        .limit(MAX_FAILURES)
    ).scalars().all()
    if len(recent) < MAX_FAILURES:
        return None
    return max(1, math.ceil((recent[-1] + WINDOW - now).total_seconds()))


def _delete(ids: tuple[int, ...]) -> None:
    if ids:
        db.session.execute(sa.delete(LoginFailure).where(LoginFailure.id.in_(ids)))
        db.session.commit()
