"""Marshmallow schemas for every input and output of the API."""
from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask import current_app
from marshmallow import fields, validate

from . import outbound
from .engine import cron
from .engine.executors.guard_rails import ENV_NAME, ENV_NAME_RULE, callable_refusal
from .masking import mask_action, mask_notify
from .models import CATCHUP_POLICIES, CONCURRENCY_POLICIES, RUN_STATUSES, RUN_TRIGGERS, TASK_STATUSES
# INT_MAX is re-exported: views and the pagination import it from here with the schemas.
from .schema_fields import INT_MAX, Count, QueryId, StrictSchema, Text, UTCTimeField, check_storable  # noqa: F401

# --- actions -------------------------------------------------------------------

StringMap = lambda **kw: fields.Dict(keys=Text(), values=Text(), **kw)  # noqa: E731


def _refused(reason: str) -> ma.ValidationError:
    """A guard rail's refusal (contract: "Guard rails for actions"), naming the setting or rule."""
    return ma.ValidationError(f"Refused: {reason}.")


def _check_url_reachable(url: str | None) -> None:
    """A literal IP address in HTTP_ACTIONS_DENY_NETWORKS; a name is checked when it is resolved, at run time."""
    reason = outbound.literal_refusal(url, current_app.config["HTTP_ACTIONS_DENY_NETWORKS"]) if url else None
    if reason:
        raise _refused(reason)


class ShellActionSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.Equal("shell"))
    command = Text(required=True, validate=validate.Length(min=1, max=65536))
    env = StringMap(load_default=dict)
    cwd = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=4096))

    @ma.validates("env")
    def _check_env_names(self, value: dict[str, str], **kwargs: Any) -> None:
        bad = [name for name in value if not ENV_NAME.match(name)]
        if bad:
            names = ", ".join(map(repr, bad))
            raise ma.ValidationError(f"Not a valid variable name: {names} (names match {ENV_NAME_RULE}).")


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


# RFC 9110: a header name is a token; a value has no line breaks.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
HEADER_VALUE = re.compile(r"[^\r\n\x00]*\Z")


class HttpActionSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.Equal("http"))
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    method = fields.String(load_default="GET", validate=validate.OneOf(HTTP_METHODS))
    headers = fields.Dict(
        keys=Text(validate=validate.Regexp(HEADER_NAME, error="Not a valid header name.")),
        values=Text(validate=validate.Regexp(HEADER_VALUE, error="Must not contain line breaks.")),
        load_default=dict,
    )
    body = fields.Raw(load_default=None, allow_none=True)
    expect_status = fields.Raw(load_default=None, allow_none=True)
    # Absent means false; stored only when sent, so actions written before it read the same.
    follow_redirects = fields.Boolean(metadata={"description": "follow 3xx responses, each hop checked; default false"})

    @ma.validates("url")
    def _check_url(self, value: str, **kwargs: Any) -> None:
        _check_url_reachable(value)

    @ma.validates("expect_status")
    def _check_expect_status(self, value: Any, **kwargs: Any) -> None:
        codes = value if isinstance(value, list) else [value]
        if value is None:
            return
        if not codes or not all(
            isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599 for code in codes
        ):
            raise ma.ValidationError("Must be an HTTP status (100..599) or a non-empty list of them.")

    @ma.validates("body")
    def _check_body(self, value: Any, **kwargs: Any) -> None:
        if value is not None and not isinstance(value, (str, dict, list)):
            raise ma.ValidationError("Must be a string, an object or a list.")


# \Z, not $: "$" also matches before a trailing newline.
CALLABLE_PATTERN = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*\Z")


class PythonActionSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.Equal("python"))
    callable = fields.String(
        required=True,
        validate=validate.Regexp(CALLABLE_PATTERN, error="Must be 'package.module:function'."),
    )
    args = fields.List(fields.Raw(), load_default=list)
    kwargs = fields.Dict(keys=Text(), load_default=dict)

    @ma.validates("callable")
    def _check_module(self, value: str, **kwargs: Any) -> None:
        reason = callable_refusal(value, current_app.config["PYTHON_ACTIONS_MODULES"])
        if reason:
            raise _refused(reason)


ACTION_SCHEMAS: dict[str, type[ma.Schema]] = {
    "shell": ShellActionSchema,
    "http": HttpActionSchema,
    "python": PythonActionSchema,
}


class ActionField(fields.Field):
    """An action object, validated by the schema its ``type`` names."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            metadata={
                "type": "object",
                "description": "What a run does: {type: shell|http|python, ...}",
                "example": {"type": "shell", "command": "echo hello"},
            },
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ma.ValidationError("Must be an object.")
        kind = value.get("type")
        schema = ACTION_SCHEMAS.get(kind) if isinstance(kind, str) else None
        if schema is None:
            raise ma.ValidationError({"type": [f"Must be one of: {', '.join(ACTION_SCHEMAS)}."]})
        if kind == "shell" and not current_app.config["SHELL_ACTIONS_ENABLED"]:
            raise ma.ValidationError({"type": ["Shell actions are disabled (SHELL_ACTIONS_ENABLED=false)."]})
        action = schema().load(value)
        check_storable(action)  # args, kwargs and bodies are free-form JSON
        return action

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return mask_action(value)  # header and env values are write-only


# --- alert settings (scheduler_service/ops/alerts.py sends them) ---------------------

NOTIFY_EVENTS = ("failure", "retry", "success", "recovered", "late", "missed", "slow", "paused")
#: What a task without `notify` (or with `notify` but no `events`) is alerted for.
DEFAULT_NOTIFY_EVENTS = ("failure", "recovered", "missed", "paused")


class NotifySchema(StrictSchema):
    url = fields.Url(
        require_tld=False, schemes={"http", "https"}, load_default=None, allow_none=True,
        validate=validate.Length(max=2048), metadata={"description": "default: ALERT_WEBHOOK_URL"},
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(NOTIFY_EVENTS)), load_default=lambda: list(DEFAULT_NOTIFY_EVENTS),
    )
    late_after_seconds = Count(minimum=1, load_default=None, allow_none=True)
    slow_after_seconds = Count(minimum=1, load_default=None, allow_none=True)

    @ma.validates("url")
    def _check_url(self, value: str | None, **kwargs: Any) -> None:
        _check_url_reachable(value)

    @ma.post_load
    def _dedupe_events(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["events"] = list(dict.fromkeys(data["events"]))
        return data

    @ma.validates_schema
    def _check_complete(self, data: dict[str, Any], **kwargs: Any) -> None:
        events = data.get("events") or []
        for event, threshold in (("late", "late_after_seconds"), ("slow", "slow_after_seconds")):
            if event in events and data.get(threshold) is None:
                raise ma.ValidationError(f"Required when events include '{event}'.", threshold)
        if events and not data.get("url") and not current_app.config.get("ALERT_WEBHOOK_URL"):
            raise ma.ValidationError("Required: no default webhook is configured (ALERT_WEBHOOK_URL).", "url")
        check_storable(data.get("url"))


class NotifyField(fields.Nested):
    """The whole `notify` object, validated in full even in a PATCH (it is replaced, not merged)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NotifySchema, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, partial: Any = None, **kwargs: Any) -> Any:
        return self._load(value, partial=False)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return super()._serialize(mask_notify(value), attr, obj, **kwargs)  # a webhook's path is a credential


# --- tasks ---------------------------------------------------------------------


class TaskSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    name = Text(required=True, validate=validate.Length(min=1, max=200))
    description = Text(load_default="", validate=validate.Length(max=10000))
    cron_expression = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    interval_seconds = Count(minimum=1, load_default=None, allow_none=True)
    run_at = UTCTimeField(load_default=None, allow_none=True, metadata={"description": "a one-off task's time"})
    schedule_anchor = UTCTimeField(dump_only=True)
    timezone = Text(load_default="UTC", validate=validate.Length(min=1, max=64))
    calendar = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=100))
    jitter_seconds = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=3600))
    catchup = fields.String(load_default="latest", validate=validate.OneOf(CATCHUP_POLICIES))
    enabled = fields.Boolean(load_default=True)
    depends_on = fields.List(Count(minimum=1), load_default=list)
    action = ActionField(required=True)
    timeout_seconds = Count(minimum=1, load_default=3600, allow_none=True)
    max_retries = fields.Integer(strict=True, load_default=3, validate=validate.Range(min=0, max=1000))
    retry_delay_seconds = Count(minimum=1, load_default=60)
    retry_max_delay_seconds = Count(minimum=1, load_default=3600)
    concurrency_policy = fields.String(load_default="forbid", validate=validate.OneOf(CONCURRENCY_POLICIES))
    misfire_grace_seconds = Count(minimum=0, load_default=60)
    pool = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=100),
                metadata={"description": "a pool's name: at most its slots of its tasks' runs at once"})
    pause_after_failures = Count(minimum=0, load_default=0, metadata={
        "description": "pause the task after this many final failures in a row (0: never)"})
    # No load_default: a PUT (or the admin form) that leaves it out keeps it; null clears it.
    notify = NotifyField(allow_none=True, metadata={"description": "webhook alerts for this task"})

    status = fields.String(dump_only=True, metadata={"enum": list(TASK_STATUSES)})
    retry_count = fields.Integer(dump_only=True)
    last_run_at = UTCTimeField(dump_only=True, allow_none=True)
    next_run_at = UTCTimeField(dump_only=True, allow_none=True)
    pause_note = fields.String(dump_only=True, allow_none=True)
    paused_until = UTCTimeField(dump_only=True, allow_none=True)
    paused_by = fields.String(dump_only=True, allow_none=True)
    consecutive_failures = fields.Integer(dump_only=True)
    created_at = UTCTimeField(dump_only=True)
    updated_at = UTCTimeField(dump_only=True)

    @ma.validates("cron_expression")
    def _check_cron(self, value: str | None, **kwargs: Any) -> None:
        if value is not None:
            try:
                cron.validate(value)
            except cron.CronError as exc:
                raise ma.ValidationError(str(exc)) from None

    @ma.validates("timezone")
    def _check_timezone(self, value: str, **kwargs: Any) -> None:
        try:
            cron.parse_timezone(value)
        except cron.CronError as exc:
            raise ma.ValidationError(str(exc)) from None


class TaskUpdateSchema(TaskSchema):
    """PATCH: the same fields, each optional (loaded with ``partial=True``)."""


class PageArgsSchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = Text(load_default=None, validate=validate.Length(max=200))


class TaskQueryArgsSchema(PageArgsSchema):
    enabled = fields.Boolean()
    status = fields.String(validate=validate.OneOf(TASK_STATUSES))
    q = Text(validate=validate.Length(max=200))


class TaskPageSchema(ma.Schema):
    items = fields.List(fields.Nested(TaskSchema))
    next_cursor = fields.String(allow_none=True)


# --- runs ----------------------------------------------------------------------


class RunSchema(ma.Schema):
    id = fields.Integer()
    task_id = fields.Integer()
    task_name = fields.String()
    attempt = fields.Integer()
    trigger = fields.String(metadata={"enum": list(RUN_TRIGGERS)})
    status = fields.String(metadata={"enum": list(RUN_STATUSES)})
    scheduled_for = UTCTimeField()
    started_at = UTCTimeField(allow_none=True)
    finished_at = UTCTimeField(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    exit_code = fields.Integer(allow_none=True)
    http_status = fields.Integer(allow_none=True)
    output = fields.String()
    message = fields.String()


LIST_OUTPUT_CHARS = 1000


class RunSummarySchema(RunSchema):
    """A run in a list: the output is cut to its last characters."""

    output = fields.Function(lambda run: run.output[-LIST_OUTPUT_CHARS:])


class TimeWindowArgsSchema(PageArgsSchema):
    """A page of a list that ``since`` and ``until`` bound (both inclusive)."""

    since = UTCTimeField()
    until = UTCTimeField()


class RunQueryArgsSchema(TimeWindowArgsSchema):
    task_id = QueryId()
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    trigger = fields.String(validate=validate.OneOf(RUN_TRIGGERS))


class RunPageSchema(ma.Schema):
    items = fields.List(fields.Nested(RunSummarySchema))
    next_cursor = fields.String(allow_none=True)


# --- stats and preview -----------------------------------------------------------


class StatsQueryArgsSchema(ma.Schema):
    task_id = QueryId()


def _counts(name: str, statuses: tuple[str, ...]) -> type[ma.Schema]:
    return type(name, (ma.Schema,), {status: fields.Integer() for status in statuses})


TaskCountsSchema = _counts("TaskCountsSchema", TASK_STATUSES)
RunCountsSchema = _counts("RunCountsSchema", RUN_STATUSES)


class TaskStatsSchema(ma.Schema):
    total = fields.Integer()
    enabled = fields.Integer()
    by_status = fields.Nested(TaskCountsSchema)


class RunStatsSchema(ma.Schema):
    total = fields.Integer()
    by_status = fields.Nested(RunCountsSchema)
    success_rate = fields.Float(allow_none=True)
    avg_duration_seconds = fields.Float(allow_none=True)


class NextRunSchema(ma.Schema):
    task_id = fields.Integer()
    name = fields.String()
    next_run_at = UTCTimeField()


class SchedulerStatsSchema(ma.Schema):
    last_tick_at = UTCTimeField(allow_none=True)


class StatsSchema(ma.Schema):
    tasks = fields.Nested(TaskStatsSchema)
    runs = fields.Nested(RunStatsSchema)
    next_runs = fields.List(fields.Nested(NextRunSchema))
    scheduler = fields.Nested(SchedulerStatsSchema)


class PreviewArgsSchema(ma.Schema):
    cron_expression = Text(required=True, validate=validate.Length(min=1, max=200))
    timezone = Text(load_default="UTC", validate=validate.Length(min=1, max=64))
    count = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))
    start = UTCTimeField(load_default=None)

    @ma.validates_schema
    def _check_expression(self, data: dict[str, Any], **kwargs: Any) -> None:
        try:
            cron.parse_timezone(data["timezone"])
        except cron.CronError as exc:
            raise ma.ValidationError(str(exc), "timezone") from None
        try:
            cron.validate(data["cron_expression"], data["timezone"])
        except cron.CronError as exc:
            raise ma.ValidationError(str(exc), "cron_expression") from None


class PreviewSchema(ma.Schema):
    description = fields.String()
    next_runs = fields.List(UTCTimeField())


class HealthSchema(ma.Schema):
    status = fields.String()
    database = fields.String()
