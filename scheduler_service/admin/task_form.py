"""The task form: HTML form fields to the API's JSON shape and back, and errors to form fields.

The form is flat (``http_url``, ``shell_env`` ...) while a task's JSON nests the
action. Converting here keeps one validator: the JSON goes through the API's
TaskSchema and the writes through ``services``, so the browser and the API
accept exactly the same tasks.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import marshmallow as ma
from werkzeug.datastructures import MultiDict

from ..masking import mask_action
from ..models import Task
from ..engine.schedules import Schedule
from ..schemas import ACTION_SCHEMAS, TaskSchema
from ..task_schedules import anchor_at, load_calendars, schedule_for, schedule_problems

ACTION_TYPES = tuple(ACTION_SCHEMAS)
# The catch-up select's words, in the order of models.CATCHUP_POLICIES.
CATCHUP_LABELS = {
    "latest": "one run, for the latest missed slot",
    "all": "a run for each missed slot, oldest first",
    "none": "no run; the miss logged as skipped",
}
# The concurrency select's words, in the order of models.CONCURRENCY_POLICIES: what a slot that
# comes due while a run of the task is active does.
POLICY_LABELS = {
    "forbid": "skip the new slot",
    "allow": "run it alongside",
    "buffer_one": "run it when the active run ends; at most one waits",
    "buffer_all": "queue it; every waiting slot runs in turn",
    "replace": "cancel the active run and run the new slot",
}
BODY_FORMATS = ("text", "json")
FORM_WIDE = ""  # the key of errors that belong to no one field
# The attributes a schedule is made of (the live preview builds one from them).
SCHEDULE_ATTRIBUTES = ("cron_expression", "interval_seconds", "schedule_anchor", "run_at", "timezone", "calendar")

# Plain task fields shown as they are (text inputs, selects).
TEXT_FIELDS = ("name", "cron_expression", "timezone", "concurrency_policy")
MULTILINE_FIELDS = ("description",)
# An empty (or absent) input is left out of the JSON, which means the API's default: null for
# run_at, calendar and pool (no one-off time, no calendar, no pool). The text of run_at goes to the schema as
# typed, so that an ISO time with an offset works and one without is read as UTC.
OPTIONAL_TEXT_FIELDS = ("run_at", "calendar", "catchup", "pool")
INTEGER_FIELDS = (
    "timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds", "misfire_grace_seconds",
    "interval_seconds", "jitter_seconds", "pause_after_failures",
)

# The action keys each type's part of the form has an input for, named "<type>_<key>".
ACTION_FORM_KEYS = {
    "shell": ("command", "env", "cwd"),
    "http": ("url", "method", "headers", "body", "expect_status", "follow_redirects"),
    "python": ("callable", "args", "kwargs"),
}

FieldErrors = dict[str, list[str]]


def _default(field: str) -> Any:
    # The API's defaults are the form's defaults: read them from the schema, not a copy.
    value = TaskSchema().fields[field].load_default
    return value() if callable(value) else value


def blank_form() -> dict[str, Any]:
    """The values a new task's form starts with."""
    values: dict[str, Any] = {field: "" for field in (*TEXT_FIELDS, *MULTILINE_FIELDS)}
    values.update({field: _as_text(_default(field))
                   for field in (*INTEGER_FIELDS, *OPTIONAL_TEXT_FIELDS, "timezone", "concurrency_policy")})
    values.update(enabled=True, depends_on=[], action_type="shell", http_method="GET", http_body_format="text")
    return values


def form_from_task(task: Task) -> dict[str, Any]:
    """The values that show ``task`` in the form (the reverse of ``payload_from_form``)."""
    values: dict[str, Any] = {
        field: _as_text(getattr(task, field)) for field in (*TEXT_FIELDS, *MULTILINE_FIELDS, *OPTIONAL_TEXT_FIELDS)
    }
    values.update({field: _as_text(getattr(task, field)) for field in INTEGER_FIELDS})
    # ISO with its offset, as the API writes it: saved back unchanged, it is no change of the one-off time.
    values["run_at"] = task.run_at.isoformat() if task.run_at else ""
    values.update(enabled=task.enabled, depends_on=list(task.depends_on), http_method="GET", http_body_format="text")
    # Secret values show as the mask; saving the mask back keeps them (services.restore_secrets).
    action = mask_action(task.action) or {}
    kind = action.get("type", "shell")
    values["action_type"] = kind
    if kind == "shell":
        values.update(
            shell_command=action.get("command", ""),
            shell_env=_lines(action.get("env") or {}, "="),
            shell_cwd=_as_text(action.get("cwd")),
        )
    elif kind == "http":
        body = action.get("body")
        values.update(
            http_url=action.get("url", ""),
            http_method=action.get("method", "GET"),
            http_headers=_lines(action.get("headers") or {}, ": "),
            http_body="" if body is None else body if isinstance(body, str) else json.dumps(body, indent=2),
            http_body_format="text" if body is None or isinstance(body, str) else "json",
            http_expect_status=_status_text(action.get("expect_status")),
            http_follow_redirects=bool(action.get("follow_redirects")),
        )
    elif kind == "python":
        values.update(
            python_callable=action.get("callable", ""),
            python_args=json.dumps(action.get("args") or []),
            python_kwargs=json.dumps(action.get("kwargs") or {}),
        )
    return values


def form_values(form: MultiDict) -> dict[str, Any]:
    """A submitted form as the values to show again next to its errors."""
    values: dict[str, Any] = {key: form.get(key, "") for key in form}
    values["enabled"] = "enabled" in form
    values["depends_on"] = [int(value) for value in form.getlist("depends_on") if value.isdigit()]
    return values


def payload_from_form(form: MultiDict) -> tuple[dict[str, Any], FieldErrors]:
    """The task JSON a submitted form means, and errors in fields that could not be read at all.

    Fields that merely hold bad values are passed on as they are, so that
    TaskSchema gives the same message the API would.
    """
    errors: FieldErrors = {}
    payload: dict[str, Any] = {}
    for field in TEXT_FIELDS:
        payload[field] = form.get(field, "").strip()
    payload["description"] = _multiline(form.get("description", ""))
    if not payload["cron_expression"]:
        payload["cron_expression"] = None  # an interval, one-off or dependency-only task
    for field in OPTIONAL_TEXT_FIELDS:
        if form.get(field, "").strip():
            payload[field] = form[field].strip()
    payload["enabled"] = "enabled" in form
    for field in INTEGER_FIELDS:
        raw = form.get(field, "").strip()
        if raw:
            payload[field] = as_integer(raw)
        elif field == "timeout_seconds":
            payload[field] = None  # empty means "no timeout"
    parents = form.getlist("depends_on")
    payload["depends_on"] = [as_integer(value) for value in parents if value.strip()]
    payload["action"] = _action_from_form(form, errors)
    return payload, errors


def preview_schedule(values: dict[str, str], now: datetime) -> Schedule:
    """The schedule the form's typed fields describe (an interval counted from ``now``, as on
    save). ValueError with the API's words when they are not one."""
    fields = {name: as_integer(value) if name == "interval_seconds" else value
              for name, value in values.items() if value}
    try:
        data = TaskSchema(only=tuple(values), partial=True).load(fields)
    except ma.ValidationError as exc:
        field, texts = next(iter(exc.messages.items()))
        raise ValueError(f"{field}: {' '.join(_texts(texts))}") from None
    data.setdefault("timezone", "UTC")
    problems = schedule_problems({**data, "schedule_anchor": anchor_at(now)}, has_parents=True,
                                 run_at_changed=True, now=now)
    if problems:
        raise ValueError("{}: {}".format(*problems[0]))
    data.update(schedule_anchor=anchor_at(now))
    return schedule_for(SimpleNamespace(**{name: data.get(name) for name in SCHEDULE_ATTRIBUTES}),
                        load_calendars([data.get("calendar")]))


def _action_from_form(form: MultiDict, errors: FieldErrors) -> dict[str, Any]:
    kind = form.get("action_type", "")
    action: dict[str, Any] = {"type": kind}
    if kind == "shell":
        action["command"] = _multiline(form.get("shell_command", ""))
        action["env"] = _pairs(form.get("shell_env", ""), "=", "shell_env", "NAME=value", errors)
        cwd = form.get("shell_cwd", "").strip()
        action["cwd"] = cwd or None
    elif kind == "http":
        action["url"] = form.get("http_url", "").strip()
        action["method"] = form.get("http_method", "GET")
        action["headers"] = _pairs(form.get("http_headers", ""), ":", "http_headers", "Name: value", errors)
        action["body"] = _body(form, errors)
        action["expect_status"] = _expect_status(form.get("http_expect_status", ""), errors)
        if "http_follow_redirects" in form:  # unticked: not stored, which means no redirects
            action["follow_redirects"] = True
    elif kind == "python":
        action["callable"] = form.get("python_callable", "").strip()
        action["args"] = _json_field(form, "python_args", [], errors)
        action["kwargs"] = _json_field(form, "python_kwargs", {}, errors)
    return action


def load_inputs(schema: ma.Schema, values: Mapping[str, Any], *,
                keep_empty: bool = False) -> tuple[dict[str, Any] | None, FieldErrors]:
    """A form's inputs read with one of the API's schemas (an empty input is a missing one,
    unless ``keep_empty``: then the schema judges it): the data, or None and the errors by field."""
    try:
        return schema.load({name: value for name, value in values.items() if keep_empty or value != ""}), {}
    except ma.ValidationError as exc:
        return None, errors_from_messages(exc.messages, "")


def errors_from_messages(messages: Any, action_type: str) -> FieldErrors:
    """Map TaskSchema / services error messages (``{"field": [...], "action": {...}}``) to form fields."""
    errors: FieldErrors = {}
    if not isinstance(messages, Mapping):
        errors[FORM_WIDE] = _texts(messages)
        return errors
    for field, message in messages.items():
        if field == "action":
            _action_errors(message, action_type, errors)
        elif field == "_schema" or not isinstance(field, str):
            errors.setdefault(FORM_WIDE, []).extend(_texts(message))
        else:
            errors.setdefault(field, []).extend(_texts(message))
    return errors


def merge_errors(*sources: FieldErrors) -> FieldErrors:
    merged: FieldErrors = {}
    for source in sources:
        for field, messages in source.items():
            merged.setdefault(field, [])
            merged[field].extend(message for message in messages if message not in merged[field])
    return merged


def _action_errors(message: Any, action_type: str, errors: FieldErrors) -> None:
    if not isinstance(message, Mapping):
        errors.setdefault("action_type", []).extend(_texts(message))
        return
    for key, inner in message.items():
        # An action key has the input "<type>_<key>"; anything else belongs to the type select.
        has_input = key in ACTION_FORM_KEYS.get(action_type, ())
        field = f"{action_type}_{key}" if has_input else "action_type"
        errors.setdefault(field, []).extend(_texts(inner))


def _texts(message: Any) -> list[str]:
    """Flatten a marshmallow message (a string, a list, or a dict of them) into lines."""
    if isinstance(message, str):
        return [message]
    if isinstance(message, Mapping):
        return [f"{key}: {text}" for key, inner in message.items() for text in _texts(inner)]
    if isinstance(message, (list, tuple)):
        return [text for item in message for text in _texts(item)]
    return [str(message)]


# --- reading single fields ------------------------------------------------------------------


def as_integer(raw: str) -> int | str:
    """An int, or the text itself so that the schema reports "Not a valid integer."."""
    try:
        return int(raw.strip())
    except ValueError:
        return raw


def _multiline(text: str) -> str:
    # Browsers send textareas with CRLF; a shell script with CRs would break.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _pairs(text: str, separator: str, field: str, shape: str, errors: FieldErrors) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for number, line in enumerate(_multiline(text).split("\n"), start=1):
        if not line.strip():
            continue
        key, found, value = line.partition(separator)
        if not found or not key.strip():
            errors.setdefault(field, []).append(f"Line {number}: expected {shape}.")
            continue
        pairs[key.strip()] = value.strip()
    return pairs


def _body(form: MultiDict, errors: FieldErrors) -> Any:
    text = _multiline(form.get("http_body", ""))
    if not text.strip():
        return None
    if form.get("http_body_format") != "json":
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        errors.setdefault("http_body", []).append(f"Not valid JSON: {exc}.")
        return None


def _expect_status(text: str, errors: FieldErrors) -> int | list[int] | None:
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        return None
    if not all(part.isdigit() for part in parts):
        errors.setdefault("http_expect_status", []).append("Give a status code, or several separated by commas.")
        return None
    codes = [int(part) for part in parts]
    return codes[0] if len(codes) == 1 else codes


def _json_field(form: MultiDict, field: str, empty: Any, errors: FieldErrors) -> Any:
    text = form.get(field, "").strip()
    if not text:
        return empty
    try:
        return json.loads(text)
    except ValueError as exc:
        errors.setdefault(field, []).append(f"Not valid JSON: {exc}.")
        return empty


# --- showing values -------------------------------------------------------------------------


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _lines(mapping: Mapping[str, str], separator: str) -> str:
    return "\n".join(f"{key}{separator}{value}" for key, value in mapping.items())


def _status_text(value: Any) -> str:
    if value is None:
        return ""
    return ", ".join(str(code) for code in value) if isinstance(value, list) else str(value)

