"""The alert outbox: one row per webhook delivery, written by the engine's process, sent by a background thread."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..database import db
from ..models import UTCDateTime

ALERT_STATUSES = ("pending", "delivered", "failed")


class Alert(db.Model):
    """One alert to one webhook. ``pending`` until a 2xx answer (``delivered``) or the last attempt (``failed``)."""

    __tablename__ = "alert"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Alerts outlive their task: deleting the task keeps its history, unlinked.
    task_id: Mapped[int | None] = mapped_column(sa.ForeignKey("task.id", ondelete="SET NULL"), index=True)
    event: Mapped[str] = mapped_column(sa.String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    url: Mapped[str] = mapped_column(sa.String(2048))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    # When a sender may (next) take it. A sender that claims it moves this forward by a lease,
    # so that another process takes it over only if the first one died.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # The sender's query: pending alerts that are due.
        sa.Index("ix_alert_due", "status", "next_attempt_at"),
    )

    def __repr__(self) -> str:
        return f"<Alert {self.id} {self.event} task={self.task_id} {self.status}>"
