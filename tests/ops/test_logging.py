"""Logs: LOG_FORMAT=json lines, request ids, run and alert context, and no secret in any line."""
from __future__ import annotations

import json
import logging
import re

import pytest

from tests.ops.ops_helpers import WEBHOOK_SECRET
from scheduler_service.config import ConfigError, load_settings
from scheduler_service.logcontext import log_context
from scheduler_service.ops.logging import redact

log = logging.getLogger("tests.ops.logging")


@pytest.fixture
def app_config() -> dict:
    return {"SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3, "LOG_FORMAT": "json",
            "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET, "ALERT_RETRY_BASE_SECONDS": 0.2}


def json_lines(captured: str) -> list[dict]:
    lines = [line for line in captured.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        parsed.append(json.loads(line))  # every line is one JSON object
    return parsed


def test_every_line_is_json_with_the_request_id_also_in_the_response(app, client, anonymous, capsys):
    @app.get("/api/echo-log/")
    def echo_log():
        log.warning("inside the view")
        return {"ok": True}

    capsys.readouterr()
    response = client.get("/api/echo-log/", headers={"X-Request-ID": "req-42.abc"})
    assert response.headers["X-Request-ID"] == "req-42.abc"
    generated = client.get("/api/tasks/").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    refused = client.get("/api/tasks/", headers={"X-Request-ID": "no spaces <or> tags" * 3}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", refused)
    unauthorized = anonymous.get("/api/tasks/", headers={"X-Request-ID": "denied-1"})
    assert unauthorized.status_code == 401 and unauthorized.headers["X-Request-ID"] == "denied-1"

    lines = json_lines(capsys.readouterr().err)
    inside = [line for line in lines if line["message"] == "inside the view"]
    assert inside and inside[0]["request_id"] == "req-42.abc"
    assert inside[0]["level"] == "WARNING" and inside[0]["logger"] == "tests.ops.logging"
    assert inside[0]["time"].endswith("+00:00")
    access = {line["request_id"]: line for line in lines if line["logger"] == "scheduler_service.access"}
    assert access["req-42.abc"]["message"].startswith("GET /api/echo-log/ 200 ")
    assert access[generated]["message"].startswith("GET /api/tasks/ 200 ")
    assert access["denied-1"]["message"].startswith("GET /api/tasks/ 401 ")
    assert "task_id" not in access[generated]  # fields appear only where they apply


def test_a_token_sent_as_the_request_id_is_not_echoed(client, token):
    assert client.get("/api/tasks/", headers={"X-Request-ID": token}).headers["X-Request-ID"] != token


def test_no_token_or_webhook_secret_in_any_line(app, client, token, capsys, caplog):
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    log.warning("calling with Authorization: Bearer %s", token)
    log.warning("headers %s", {"Authorization": f"Bearer {token}", "X-Other": "1"})
    log.warning("url https://hooks.example.test/x?token=%s&page=2", token)
    log.warning("the secret is %s", WEBHOOK_SECRET)
    log.warning("config", extra={"task_id": 7})
    try:
        raise RuntimeError(f"signing with {WEBHOOK_SECRET} failed")
    except RuntimeError:
        log.exception("boom")
    client.get("/api/tasks/")  # the real token goes by in a header

    captured = capsys.readouterr().err
    for text in (captured, caplog.text, "\n".join(record.getMessage() for record in caplog.records)):
        assert token not in text and WEBHOOK_SECRET not in text
    lines = json_lines(captured)
    messages = [line["message"] for line in lines]
    assert "calling with Authorization: [REDACTED]" in messages
    assert "url https://hooks.example.test/x?token=[REDACTED]&page=2" in messages
    assert "the secret is [REDACTED]" in messages
    assert [line["task_id"] for line in lines if line["message"] == "config"] == [7]
    [boom] = [line for line in lines if line["message"] == "boom"]
    assert "RuntimeError: signing with [REDACTED] failed" in boom["exception"]


def test_context_fields_bind_to_lines(app, capsys):
    capsys.readouterr()
    with log_context(task_id=3, run_id=99, attempt=2):
        log.warning("in a run")
        with log_context(attempt=3):
            log.warning("nested")
    log.warning("outside")
    lines = {line["message"]: line for line in json_lines(capsys.readouterr().err)}
    assert (lines["in a run"]["task_id"], lines["in a run"]["run_id"], lines["in a run"]["attempt"]) == (3, 99, 2)
    assert (lines["nested"]["run_id"], lines["nested"]["attempt"]) == (99, 3)
    assert not {"task_id", "run_id", "attempt", "request_id"} & set(lines["outside"])


def test_alert_lines_carry_task_run_and_alert_ids(app, client, engine, make_task, webhook, wait_until, capsys):
    task = make_task(action={"type": "shell", "command": "exit 1"}, max_retries=0,
                     notify={"url": webhook.url, "events": ["failure"]})
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: webhook.of("failure"))
    alert_id = webhook.received[0]["json"]["id"]

    def delivered_line():
        lines = json_lines(capsys.readouterr().err)
        delivered_line.seen.extend(lines)
        return [line for line in delivered_line.seen if line["message"].startswith(f"alert {alert_id} (failure) delivered")]

    delivered_line.seen = []
    [line] = wait_until(delivered_line)
    assert (line["task_id"], line["run_id"], line["alert_id"]) == (task["id"], run["id"], alert_id)
    queued = [seen for seen in delivered_line.seen if seen["message"].startswith(f"alert {alert_id} queued")]
    assert queued and queued[0]["task_id"] == task["id"]
    assert all(WEBHOOK_SECRET not in json.dumps(seen) for seen in delivered_line.seen)


def test_log_format_setting():
    assert load_settings({})["LOG_FORMAT"] == "text"
    assert load_settings({"LOG_FORMAT": " JSON "})["LOG_FORMAT"] == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_settings({"LOG_FORMAT": "xml"})


def test_redact():
    assert redact("Authorization: Basic dXNlcjpwYXNz") == "Authorization: [REDACTED]"
    assert redact('{"authorization": "Bearer abc.def-ghi"}') == '{"authorization": "[REDACTED]"}'
    assert redact("bearer abc123==") == "bearer [REDACTED]"
    assert redact("password=hunter2 user=bob") == "password=[REDACTED] user=bob"
    assert redact("nothing to hide in run 42") == "nothing to hide in run 42"
