"""The field types every schema of the API is built from: text a database can store, counts
that fit its columns, aware UTC times, and schemas that refuse unknown fields."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

# Integers end up in 32-bit columns on PostgreSQL; anything larger is a client error.
INT_MAX = 2**31 - 1


# Free-form JSON (bodies, args, kwargs) deeper than this is refused: it is never a real
# need, and the database layer serializes JSON recursively.
MAX_JSON_DEPTH = 32


def check_storable(value: Any, depth: int = 0) -> None:
    """Refuse what a database cannot store: NUL characters, lone UTF-16 surrogates, deep nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ma.ValidationError(f"Nested more than {MAX_JSON_DEPTH} levels deep.")
    if isinstance(value, str):
        if "\x00" in value:
            raise ma.ValidationError("Must not contain NUL characters.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ma.ValidationError("Must be valid Unicode (no lone surrogates).") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, depth + 1)
            check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_storable(item, depth + 1)


class Text(fields.String):
    """A string every supported database can store."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        check_storable(text)
        return text


def Count(minimum: int = 0, *, strict: bool = True, **kwargs: Any) -> fields.Integer:
    """An integer within the range the database can hold; strict (a JSON number) unless
    it comes from a query string, where every value is text."""
    return fields.Integer(strict=strict, validate=validate.Range(min=minimum, max=INT_MAX), **kwargs)


def QueryId() -> fields.Integer:
    return Count(minimum=1, strict=False)


class UTCTimeField(fields.AwareDateTime):
    """An ISO 8601 time with any offset (naive means UTC), loaded as aware UTC."""

    # Far enough for any schedule; near the ends of datetime's range, converting zones overflows.
    EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
    LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=timezone.utc, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = moment.astimezone(timezone.utc)
        except OverflowError:
            moment = None
        if moment is None or not self.EARLIEST <= moment <= self.LATEST:
            raise ma.ValidationError("Must be between 1970-01-01 and 9000-01-01.")
        return moment


class StrictSchema(ma.Schema):
    """Unknown fields are errors; read-only fields sent by a client are ignored."""

    class Meta:
        unknown = ma.RAISE

    @ma.pre_load
    def _drop_read_only(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        read_only = {name for name, field in self.fields.items() if field.dump_only}
        return {key: value for key, value in data.items() if key not in read_only}
