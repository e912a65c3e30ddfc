"""Structured logs: LOG_FORMAT=json, a request id for API calls, run context, and redaction of secrets.

* ``log_context(task_id=..., run_id=..., attempt=...)`` binds fields to every log
  line written inside it (a context variable, so it is per thread and per request).
* Each request gets a request id (a sane incoming ``X-Request-ID`` is kept), bound
  to its log lines and returned in the ``X-Request-ID`` response header.
* Every log record made in the process, whatever its handler or format, has
  bearer tokens, ``Authorization`` values, ``token=``/``secret=``/``password=``
  values and the configured webhook secret replaced by ``[REDACTED]``: a record
  factory does it when the record is made, before any handler sees it.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Flask, g, request, request_started

from ..logcontext import _context

#: The fields a log line carries when they apply.
CONTEXT_FIELDS = ("request_id", "task_id", "run_id", "attempt", "alert_id")
REDACTED = "[REDACTED]"
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}\Z")  # \Z: "$" passes a final newline
_JSON_HANDLER_NAME = "scheduler-service-json"
_CONTEXT_ATTRIBUTE = "_scheduler_log_context"

access_log = logging.getLogger("scheduler_service.access")


# --- context ------------------------------------------------------------------------------


# --- redaction ----------------------------------------------------------------------------

_PATTERNS = (
    # "Authorization: Bearer abc", "authorization=Basic abc", "'Authorization': 'abc'"
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1" + REDACTED),
    # key=value and "key": "value" pairs whose key names a credential
    (re.compile(
        r"(?i)\b((?:access_token|api_key|apikey|token|secret|password|passwd)[\"']?\s*[=:]\s*[\"']?)"
        r"(?!\[REDACTED\])[^\s&\"',;}]+"
    ), r"\1" + REDACTED),
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def add_secret(secret: str | None) -> None:
    """Redact this exact string from every log line from now on (too short a string is refused)."""
    global _secret_pattern
    if not secret or len(secret) < 4:
        return
    with _secrets_lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(item) for item in ordered))


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential, or is a configured secret, replaced."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


_factory_lock = threading.Lock()
_factory_installed = False


def install_record_factory() -> None:
    """Wrap the process's log record factory (once): redact, and remember the context of the line."""
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            # One private attribute: setting task_id etc. here would make `extra={"task_id": ...}` raise.
            setattr(record, _CONTEXT_ATTRIBUTE, _context.get())
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when the line is emitted
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()
    if record.exc_info and record.exc_info[0] is not None:
        # Formatters reuse exc_text: the traceback is formatted once, here, redacted.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of a record: those bound when it was made, overridden by ``extra=``."""
    fields = dict(getattr(record, _CONTEXT_ATTRIBUTE, None) or {})
    for key in CONTEXT_FIELDS:
        value = record.__dict__.get(key)
        if value is not None:
            fields[key] = value
    return fields


# --- JSON lines ---------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields that apply, exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in context_of(record).items():
            document[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            if not record.exc_text:
                record.exc_text = redact(self.formatException(record.exc_info))
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = redact(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so test capture and reassignments work)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_root_level_before_json: int | None = None


def configure_handlers(log_format: str) -> None:
    """json: one JSON handler on the root logger (and JSON for gunicorn's own loggers); text: as before."""
    global _root_level_before_json
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if handler.get_name() == _JSON_HANDLER_NAME]
    if log_format != "json":
        for handler in ours:
            root.removeHandler(handler)
        if ours and _root_level_before_json is not None:
            root.setLevel(_root_level_before_json)
            _root_level_before_json = None
        return
    if not ours:
        handler = _StderrHandler()
        handler.set_name(_JSON_HANDLER_NAME)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            _root_level_before_json = root.level
            root.setLevel(logging.INFO)
    if logging.getLogger("apscheduler").level == logging.NOTSET:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job run otherwise
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(JsonFormatter())


# --- request ids ----------------------------------------------------------------------------


def _incoming_request_id() -> str | None:
    value = request.headers.get(REQUEST_ID_HEADER, "").strip()
    if not _SANE_REQUEST_ID.match(value):
        return None
    _, _, token = request.headers.get("Authorization", "").partition(" ")
    if token and token.strip() == value:  # never echo (or log) a credential sent as an id
        return None
    return value


def _bind_request_id(sender: Flask, **extra: Any) -> None:
    # The request_started signal fires before any before_request function (the token check
    # included), so every line of the request carries the id.
    request_id = _incoming_request_id() or uuid.uuid4().hex
    g.request_id = request_id
    g.request_started_at = time.monotonic()
    g.log_context_token = _context.set({**_context.get(), "request_id": request_id})


def _add_request_id_header(response):
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
        started = g.get("request_started_at")
        elapsed_ms = (time.monotonic() - started) * 1000 if started is not None else 0.0
        access_log.info("%s %s %s %.1fms", request.method, request.path, response.status_code, elapsed_ms)
    return response


def _unbind_request_id(error: BaseException | None = None) -> None:
    token = g.pop("log_context_token", None)
    if token is not None:
        try:
            _context.reset(token)
        except ValueError:  # set in another context (should not happen); leave it
            pass


def init_app(app: Flask) -> None:
    install_record_factory()
    add_secret(app.config.get("ALERT_WEBHOOK_SECRET"))
    configure_handlers(app.config["LOG_FORMAT"])
    if app.config["LOG_FORMAT"] == "json":
        from flask.logging import default_handler

        app.logger.removeHandler(default_handler)  # the root's JSON handler writes app.logger's lines
    request_started.connect(_bind_request_id, app, weak=False)
    app.after_request(_add_request_id_header)
    app.teardown_request(_unbind_request_id)
