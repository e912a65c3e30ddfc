"""Alert delivery: a thread of the engine's process that claims due ``alert`` rows and POSTs them, signed.

``AlertSender`` claims due rows with a conditional UPDATE (so several processes never send
one alert at once), POSTs the JSON, signed, with a short timeout, and records the outcome:
``delivered``, or a retry after an exponential backoff (``delivery_retry_policy``), or
``failed`` after ``MAX_ATTEMPTS``. The POST goes through ``outbound``
(HTTP_ACTIONS_DENY_NETWORKS applies, after DNS) and follows no redirect. A sender that
dies mid-delivery leaves its claim to expire (``CLAIM_LEASE_SECONDS``), then another sends
it: a receiver may, after a crash, see one delivery id twice.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .. import outbound
from ..clock import utcnow
from ..database import db
from ..engine.retry import RetryPolicy
from ..logcontext import log_context
from .models import Alert

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRY_MAX_SECONDS = 3600  # the longest wait; the first is the ALERT_RETRY_BASE_SECONDS setting
CLAIM_LEASE_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 5.0
SEND_BATCH = 20
DUE_ALERTS_POLL_SECONDS = 2.0  # retries come due with no wake-up from the intake
ERROR_LIMIT = 500

SIGNATURE_HEADER = "X-Scheduler-Signature"
TIMESTAMP_HEADER = "X-Scheduler-Timestamp"
EVENT_HEADER = "X-Scheduler-Event"
DELIVERY_HEADER = "X-Scheduler-Delivery"
USER_AGENT = "scheduler-service-alerts/1"


# --- signatures -----------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<raw body>`` with the shared secret."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, *, tolerance_seconds: float | None = 300,
                     now: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, and refuse stale timestamps (replays)."""
    if tolerance_seconds is not None:
        try:
            sent = int(timestamp)
        except ValueError:
            return False
        if abs((time.time() if now is None else now) - sent) > tolerance_seconds:
            return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def delivery_retry_policy(base_seconds: int) -> RetryPolicy:
    """When a failed delivery is tried again: attempt n waits base * 2**(n-1), capped, and the
    ``MAX_ATTEMPTS``-th failure is final (with the default 15 s: 15 s ... 16 min, about 32 min in all)."""
    return RetryPolicy(max_retries=MAX_ATTEMPTS - 1, delay_seconds=base_seconds, max_delay_seconds=RETRY_MAX_SECONDS)



# --- sender: alert rows -> HTTP POSTs (another thread of the engine's process) ----------------


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    error: str = ""


def _describe_error(exc: requests.RequestException) -> str:
    # Never the exception's own text: it carries the URL, whose path may be a credential (Slack-style hooks).
    if isinstance(exc, requests.Timeout):
        return f"timed out ({exc.__class__.__name__})"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect (ConnectionError)"
    return exc.__class__.__name__


def _where(url: str) -> str:
    """Scheme, host and port of a URL: enough to say where, without a path that may be a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class AlertSender:
    """Claims due alerts and POSTs them; its own HTTP session (through the deny list) and short timeouts."""

    def __init__(self, app: Flask, count_delivery: Callable[[str], None]) -> None:
        self.app = app
        self.count_delivery = count_delivery
        self.http = outbound.session(app.config["HTTP_ACTIONS_DENY_NETWORKS"])
        self.http.headers["User-Agent"] = USER_AGENT

    @property
    def retry_policy(self) -> RetryPolicy:
        # Read at each failure, not once: the setting may change after the sender is made (tests).
        return delivery_retry_policy(self.app.config["ALERT_RETRY_BASE_SECONDS"])

    def send_due(self, limit: int = SEND_BATCH, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Send the alerts that are due now; returns how many were attempted."""
        with self.app.app_context():
            try:
                due = db.session.execute(
                    sa.select(Alert.id, Alert.next_attempt_at)
                    .where(Alert.status == "pending", Alert.next_attempt_at <= utcnow())
                    .order_by(Alert.next_attempt_at, Alert.id)
                    .limit(limit)
                ).all()
                db.session.commit()
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("alert sender: database error: %s", exc.__class__.__name__)
                return 0
            attempted = 0
            for alert_id, seen_next_attempt in due:
                if should_stop():
                    break
                try:
                    attempted += self._send_one(alert_id, seen_next_attempt)
                except SQLAlchemyError as exc:
                    db.session.rollback()
                    log.warning("alert %s: database error: %s", alert_id, exc.__class__.__name__)
            return attempted

    def _claim(self, alert_id: int, seen_next_attempt: datetime) -> Alert | None:
        """Take the alert for one attempt; None if another process took it first."""
        now = utcnow()
        taken = db.session.execute(
            sa.update(Alert)
            .where(Alert.id == alert_id, Alert.status == "pending", Alert.next_attempt_at == seen_next_attempt)
            .values(next_attempt_at=now + timedelta(seconds=CLAIM_LEASE_SECONDS), attempts=Alert.attempts + 1)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            db.session.rollback()
            return None
        db.session.commit()
        alert = db.session.get(Alert, alert_id)
        db.session.commit()  # no transaction stays open while the POST waits
        return alert

    def _send_one(self, alert_id: int, seen_next_attempt: datetime) -> int:
        alert = self._claim(alert_id, seen_next_attempt)
        if alert is None:
            return 0
        attempts, url, event, task_id = alert.attempts, alert.url, alert.event, alert.task_id
        body = json.dumps({"id": alert.id, **alert.payload}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with log_context(task_id=task_id, alert_id=alert_id,
                         run_id=(alert.payload.get("run") or {}).get("id")):
            result = self.post(url, event, alert_id, body)
            now = utcnow()
            owned = [Alert.id == alert_id, Alert.status == "pending", Alert.attempts == attempts]
            retry_at = None if result.delivered else self.retry_policy.after_failure(attempts, now)
            if result.delivered:
                values: dict[str, Any] = {"status": "delivered", "delivered_at": now, "last_error": ""}
                outcome = "delivered"
                log.info("alert %s (%s) delivered to %s", alert_id, event, _where(url))
            elif retry_at is None:
                values = {"status": "failed", "last_error": result.error[:ERROR_LIMIT]}
                outcome = "failed"
                log.error("alert %s (%s) to %s failed %d times, giving up: %s",
                          alert_id, event, _where(url), attempts, result.error)
            else:
                wait = (retry_at - now).total_seconds()
                values = {"next_attempt_at": retry_at, "last_error": result.error[:ERROR_LIMIT]}
                outcome = "retrying"
                log.warning("alert %s (%s) to %s failed (attempt %d of %d): %s; again in %.3gs",
                            alert_id, event, _where(url), attempts, MAX_ATTEMPTS, result.error, wait)
            db.session.execute(
                sa.update(Alert).where(*owned).values(**values).execution_options(synchronize_session=False)
            )
            db.session.commit()
        self.count_delivery(outcome)
        return 1

    def post(self, url: str, event: str, alert_id: int, body: bytes) -> DeliveryResult:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event,
            DELIVERY_HEADER: str(alert_id),
            TIMESTAMP_HEADER: timestamp,
        }
        secret = self.app.config.get("ALERT_WEBHOOK_SECRET")
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
        try:
            with self.http.post(
                url, data=body, headers=headers, timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
                allow_redirects=False, stream=True,
            ) as response:
                status = response.status_code
        except outbound.Refused as exc:
            return DeliveryResult(False, str(exc))  # names the host and the rule, never the URL's path
        except requests.RequestException as exc:
            return DeliveryResult(False, _describe_error(exc))
        if 200 <= status < 300:
            return DeliveryResult(True)
        return DeliveryResult(False, f"HTTP {status}")

    def close(self) -> None:
        self.http.close()
