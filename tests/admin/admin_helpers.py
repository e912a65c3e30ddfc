"""Plain helpers of the admin tests: form bodies and reading pages."""
from __future__ import annotations

import re
from html import unescape

ADMIN_NAME = "alice"
ADMIN_PASSWORD = "correct horse battery"

_FORM_DEFAULTS = {
    "description": "",
    "cron_expression": "*/5 * * * *",
    "timezone": "UTC",
    "enabled": "on",
    "action_type": "shell",
    "shell_command": "echo hello",
    "shell_env": "",
    "shell_cwd": "",
    "http_method": "GET",
    "http_body_format": "text",
    "timeout_seconds": "3600",
    "max_retries": "3",
    "retry_delay_seconds": "60",
    "retry_max_delay_seconds": "3600",
    "concurrency_policy": "forbid",
    "misfire_grace_seconds": "60",
}


def task_form(name: str, csrf: str, **fields) -> dict:
    """The fields a browser sends for the task form; a value None leaves the field out (an unticked box)."""
    data = {"csrf_token": csrf, "name": name, **_FORM_DEFAULTS}
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def field_errors(html: str, field: str) -> list[str]:
    """The error messages shown inside the given field's block of the form."""
    block = re.search(rf'<div class="field[^"]*" id="field-{re.escape(field)}">(.*?)</div>', html, re.S)
    assert block, f"no field {field!r} in the page"
    return [unescape(text) for text in re.findall(r'<p class="field-error"[^>]*>(.*?)</p>', block.group(1), re.S)]


def text_of(html: str) -> str:
    """The page's visible text, tags removed and whitespace collapsed (for 'the page says ...' checks)."""
    without_tags = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S))
    return " ".join(unescape(without_tags).split())


def csrf_of(client) -> str:
    """The CSRF token in a test client's session (what every form of the session carries)."""
    with client.session_transaction() as session:
        return session["csrf_token"]
