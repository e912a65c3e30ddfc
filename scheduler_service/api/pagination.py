"""Keyset pagination: ``{items, next_cursor}`` pages that stay correct while the list grows."""
from __future__ import annotations

import base64
import binascii
from typing import Any

import sqlalchemy as sa

from ..refusals import Invalid
from ..extensions import db
from ..schemas import INT_MAX


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        last_id = int(value)
        if prefix != "id" or not 0 <= last_id <= INT_MAX:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("cursor", "Not a cursor this service gave out.", location="query") from None
    return last_id


def paginate(query: sa.Select, id_column: Any, *, limit: int, cursor: str | None, newest_first: bool) -> dict:
    """Run ``query`` for one page after ``cursor``, ordered by ``id_column``.

    Ordering by the primary key means rows added meanwhile land before the
    first page (newest first) or after the last one, never inside a page
    already read: nothing repeats and nothing is skipped.
    """
    if cursor is not None:
        last_id = decode_cursor(cursor)
        query = query.where(id_column < last_id if newest_first else id_column > last_id)
    query = query.order_by(id_column.desc() if newest_first else id_column.asc()).limit(limit + 1)
    rows = _fetch(query)
    has_more = len(rows) > limit
    items = rows[:limit]
    return {"items": items, "next_cursor": encode_cursor(items[-1].id) if has_more else None}


def paginate_by_name(query: sa.Select, name_column: Any, *, limit: int, cursor: str | None) -> dict:
    """``paginate`` for rows keyed by a unique name (calendars, pools), in name order: a name
    added meanwhile lands before or after the cursor, never on a page twice."""
    if cursor is not None:
        query = query.where(name_column > _decode_name(cursor))
    rows = _fetch(query.order_by(name_column.asc()).limit(limit + 1))
    items = rows[:limit]
    return {"items": items, "next_cursor": _encode_name(items[-1].name) if len(rows) > limit else None}


def _encode_name(name: str) -> str:
    return base64.urlsafe_b64encode(f"name:{name}".encode()).decode().rstrip("=")


def _decode_name(cursor: str) -> str:
    try:
        prefix, _, name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
        if prefix != "name" or not name:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("cursor", "Not a cursor this service gave out.", location="query") from None
    return name


def _fetch(query: sa.Select) -> list[Any]:
    """ORM objects for ``select(Model)``, plain rows for a select of columns."""
    result = db.session.execute(query)
    if _selects_one_entity(query):
        # unique(): a joined collection (a task's parents) repeats its owner's row.
        return result.unique().scalars().all()
    return result.all()


def _selects_one_entity(query: sa.Select) -> bool:
    described = query.column_descriptions
    return len(described) == 1 and described[0]["entity"] is not None and described[0]["expr"] is described[0]["entity"]
