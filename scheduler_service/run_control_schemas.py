"""The schemas of run control: pools, pause."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from .schedule_schemas import CALENDAR_NAME
from .schema_fields import INT_MAX, StrictSchema, Text, UTCTimeField

MAX_NOTE = 2000


class PoolSchema(StrictSchema):
    name = Text(required=True, validate=CALENDAR_NAME)  # the calendar name rules
    slots = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=INT_MAX))
    description = Text(load_default="", validate=validate.Length(max=10000))
    running = fields.Integer(dump_only=True, metadata={"description": "runs of the pool's tasks running now"})
    waiting = fields.Integer(dump_only=True, metadata={"description": "pending runs of the pool's tasks"})
    created_at = UTCTimeField(dump_only=True)
    updated_at = UTCTimeField(dump_only=True)


class PoolUpdateSchema(PoolSchema):
    """PUT: the name is the URL's; a body may repeat it."""

    name = Text(validate=CALENDAR_NAME)


class PoolListSchema(ma.Schema):
    items = fields.List(fields.Nested(PoolSchema))
    next_cursor = fields.String(allow_none=True)


class PauseSchema(StrictSchema):
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=MAX_NOTE))
    until = UTCTimeField(load_default=None, allow_none=True, metadata={"description": "resumes by itself then"})
