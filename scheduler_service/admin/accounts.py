"""Admin accounts: creating them, checking a password, and the stamp that ties a session to a password."""
from __future__ import annotations

import hashlib
from functools import lru_cache

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from ..database import db
from .models import AdminSession, AdminUser

NAME_MAX = 100
PASSWORD_MIN = 8


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked when a name is unknown, so that a wrong name takes as long as a wrong password."""
    return generate_password_hash("not a password of anyone")


class AccountError(ValueError):
    """A name or password that cannot be used; str(e) says why."""


def find_admin(name: str) -> AdminUser | None:
    return db.session.execute(sa.select(AdminUser).where(AdminUser.name == name)).scalar_one_or_none()


def _checked_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise AccountError(f"the password must have at least {PASSWORD_MIN} characters")
    return password


def create_admin(name: str, password: str) -> AdminUser:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise AccountError(f"the name must have 1..{NAME_MAX} characters")
    if find_admin(name) is not None:
        raise AccountError(f"an admin named {name!r} exists already (use --reset-password to change its password)")
    user = AdminUser(name=name, password_hash=generate_password_hash(_checked_password(password)))
    db.session.add(user)
    db.session.commit()
    return user


def set_password(user: AdminUser, password: str) -> None:
    """Change the password and end the user's open sessions (a reset is often done because one leaked)."""
    user.password_hash = generate_password_hash(_checked_password(password))
    db.session.execute(sa.delete(AdminSession).where(AdminSession.user_id == user.id))
    db.session.commit()


def authenticate(name: str, password: str) -> AdminUser | None:
    user = find_admin(name.strip())
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def session_stamp(user: AdminUser) -> str:
    """A short digest of the stored hash: kept in the session, it changes when the password does."""
    return hashlib.sha256(user.password_hash.encode("utf-8")).hexdigest()[:16]
