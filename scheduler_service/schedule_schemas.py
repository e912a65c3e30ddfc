"""The schemas of schedules beyond the task itself: calendars, one task's schedule, backfill."""
from __future__ import annotations

from datetime import date
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from .schema_fields import StrictSchema, Text, UTCTimeField
from .schemas import RunSchema

# \Z, not $: "$" also matches before a final newline.
CALENDAR_NAME = validate.Regexp(r"^[A-Za-z0-9_-]{1,100}\Z", error="1..100 letters, digits, '-' or '_'.")
REPROCESS = ("missing", "failed", "all")
MAX_EXCLUDE_DATES = 10000


class IsoDate(fields.Field):
    """A calendar day as ``YYYY-MM-DD``; kept as that string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ma.ValidationError("Must be a date: YYYY-MM-DD.") from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class CalendarSchema(StrictSchema):
    name = Text(required=True, validate=CALENDAR_NAME)
    description = Text(load_default="", validate=validate.Length(max=10000))
    exclude_dates = fields.List(IsoDate(), load_default=list, validate=validate.Length(max=MAX_EXCLUDE_DATES))
    exclude_weekdays = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=7)), load_default=list,
        metadata={"description": "ISO weekdays, 1 = Monday"},
    )
    created_at = UTCTimeField(dump_only=True)
    updated_at = UTCTimeField(dump_only=True)

    @ma.validates("exclude_weekdays")
    def _check_weekdays(self, value: list[int], **kwargs: Any) -> None:
        if len(set(value)) == 7:
            raise ma.ValidationError("A calendar may not exclude all seven weekdays: no day would be left.")

    @ma.post_load
    def _sorted(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["exclude_dates"] = sorted(set(data["exclude_dates"]))
        data["exclude_weekdays"] = sorted(set(data["exclude_weekdays"]))
        return data


class CalendarUpdateSchema(CalendarSchema):
    """PUT: the name is the URL's; a body may repeat it."""

    name = Text(validate=CALENDAR_NAME)


class CalendarListSchema(ma.Schema):
    items = fields.List(fields.Nested(CalendarSchema))
    next_cursor = fields.String(allow_none=True)


class TaskScheduleArgsSchema(ma.Schema):
    count = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))
    start = UTCTimeField(load_default=None)


class TaskScheduleSchema(ma.Schema):
    description = fields.String()
    next_runs = fields.List(UTCTimeField())


class BackfillSchema(StrictSchema):
    start = UTCTimeField(required=True)
    end = UTCTimeField(required=True)
    reprocess = fields.String(load_default="missing", validate=validate.OneOf(REPROCESS))
    dry_run = fields.Boolean(load_default=False)


class BackfillResultSchema(ma.Schema):
    slots = fields.List(UTCTimeField())
    runs = fields.List(fields.Nested(RunSchema))
