"""Jinja filters: times, durations and rates as a person reads them. Every time is shown in UTC."""
from __future__ import annotations

import json
from datetime import datetime

from flask import Flask

from ..clock import utcnow

DASH = "—"


def utc_time(moment: datetime | None) -> str:
    return DASH if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """"in 5 min", "3 h ago", "just now"."""
    if moment is None:
        return DASH
    seconds = ((now or utcnow()) - moment).total_seconds()
    if abs(seconds) < 5:
        return "just now"
    text = _span(abs(seconds))
    return f"{text} ago" if seconds > 0 else f"in {text}"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400 * 2:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if hours < 10 and rest >= 60 else f"{hours} h"
    return f"{int(seconds // 86400)} days"


def duration(seconds: float | None) -> str:
    """0.42 s, 12.3 s, 3 min 4 s, 1 min, 2 h 5 min, 1 h."""
    if seconds is None:
        return DASH
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def pretty_json(value: object) -> str:
    """Indented JSON in the stored key order (Jinja escapes it; ``tojson`` would show \\u0027 for ')."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def percent(rate: float | None) -> str:
    if rate is None:
        return DASH
    value = round(rate * 100, 1)
    return f"{value:.0f}%" if value == int(value) else f"{value:.1f}%"


def register_filters(app: Flask) -> None:
    for name, function in (
        ("utc_time", utc_time), ("iso_time", iso_time), ("relative_time", relative_time),
        ("duration", duration), ("percent", percent), ("pretty_json", pretty_json),
    ):
        app.jinja_env.filters[name] = function
