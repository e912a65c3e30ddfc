"""The people who may use the admin pages. Only a salted hash of each password is stored."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..database import db
from ..models import UTCDateTime


class AdminUser(db.Model):
    __tablename__ = "admin_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    # werkzeug.security's "method$salt$hash" string (scrypt by default).
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<AdminUser {self.id} {self.name!r}>"


class AdminSession(db.Model):
    """A logged-in admin session. The cookie holds its id; only a SHA-256 of the id is kept here,
    and logging out deletes the row, so a copied cookie stops working."""

    __tablename__ = "admin_session"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("admin_user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginFailure(db.Model):
    """A failed admin login, kept for a minute to throttle guessing (per name and per client address).

    In the database rather than in memory, so the limit holds across every process serving the admin.
    """

    __tablename__ = "admin_login_failure"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(200))  # "name:NAME" or "addr:ADDRESS"
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.Index("ix_admin_login_failure_key_at", "key", "at"),)
