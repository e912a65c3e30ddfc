"""Alert webhooks go through the outbound guard: HTTP_ACTIONS_DENY_NETWORKS after DNS, and no redirects."""
from __future__ import annotations

import ipaddress
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.ops.ops_helpers import WEBHOOK_SECRET
from scheduler_service.extensions import db
from scheduler_service.ops.delivery import AlertSender
from scheduler_service.ops.models import Alert

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
FAIL = {"type": "shell", "command": "exit 3"}


def alerts(client) -> list[dict]:
    response = client.get("/api/alerts/")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def queue_alert(app, url: str) -> None:
    with app.app_context():
        now = datetime.now(timezone.utc)
        db.session.add(Alert(task_id=None, event="failure", payload={"event": "failure"}, url=url,
                             next_attempt_at=now, created_at=now))
        db.session.commit()


def test_a_webhook_in_a_denied_network_is_refused_and_never_reached(app, client, webhook):
    app.config["HTTP_ACTIONS_DENY_NETWORKS"] = LOOPBACK
    port = webhook.server.server_address[1]
    queue_alert(app, f"http://127.0.0.1:{port}/hook/secret-path")
    queue_alert(app, f"http://localhost:{port}/hook/secret-path")
    sender = AlertSender(app, lambda result: None)
    try:
        assert sender.send_due() == 2
    finally:
        sender.close()
    assert webhook.received == []
    errors = sorted(alert["last_error"] for alert in alerts(client))
    assert errors == [
        "refused: 127.0.0.1 is in HTTP_ACTIONS_DENY_NETWORKS (127.0.0.0/8)",
        "refused: localhost resolves to 127.0.0.1, which is in HTTP_ACTIONS_DENY_NETWORKS (127.0.0.0/8)",
    ]


def test_the_default_deny_list_lets_a_local_webhook_through(app, client, webhook):
    queue_alert(app, webhook.url)
    sender = AlertSender(app, lambda result: None)
    try:
        sender.send_due()
    finally:
        sender.close()
    assert len(webhook.received) == 1
    assert [alert["status"] for alert in alerts(client)] == ["delivered"]


def test_webhooks_never_follow_redirects(app, client, webhook):
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(307)  # 307 would repeat the POST, body and signature included
            self.send_header("Location", webhook.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    sender = AlertSender(app, lambda result: None)
    try:
        queue_alert(app, f"http://127.0.0.1:{httpd.server_address[1]}/moved")
        sender.send_due()
    finally:
        sender.close()
        httpd.shutdown()
        httpd.server_close()
    assert webhook.received == []
    [alert] = alerts(client)
    assert (alert["status"], alert["last_error"]) == ("pending", "HTTP 307")


@pytest.mark.parametrize("app_config", [{
    "SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3, "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "ALERT_RETRY_BASE_SECONDS": 0.2, "HTTP_ACTIONS_DENY_NETWORKS": LOOPBACK,
}], ids=["loopback-denied"])
def test_a_task_webhook_named_by_host_is_accepted_then_refused_when_sent(client, engine, make_task, webhook,
                                                                         wait_until):
    url = f"http://localhost:{webhook.server.server_address[1]}/hook"
    task = make_task(action=FAIL, max_retries=0, notify={"url": url, "events": ["failure"]})  # a name: accepted
    assert client.post(f"/api/tasks/{task['id']}/run/").status_code == 202
    [alert] = wait_until(lambda: [a for a in alerts(client) if a["attempts"] >= 1 and a["last_error"]])
    assert alert["last_error"] == ("refused: localhost resolves to 127.0.0.1, which is in"
                                   " HTTP_ACTIONS_DENY_NETWORKS (127.0.0.0/8)")
    assert webhook.received == []
