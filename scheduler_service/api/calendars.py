"""Calendars: the days that tasks naming them have no slots."""
from __future__ import annotations

import sqlalchemy as sa
from flask.views import MethodView

from .. import calendars
from ..auth import requires_scope
from ..models import Calendar
from ..refusals import Invalid
from ..schedule_schemas import CalendarListSchema, CalendarSchema, CalendarUpdateSchema
from ..schemas import PageArgsSchema
from .blueprint import Blueprint
from .pagination import paginate_by_name

blp = Blueprint("calendars", __name__, url_prefix="/api/calendars", description="Calendars of excluded days")


@blp.route("/")
class Calendars(MethodView):
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, CalendarListSchema)
    def get(self, args):
        """List calendars by name, a page at a time."""
        return paginate_by_name(sa.select(Calendar), Calendar.name, limit=args["limit"], cursor=args.get("cursor"))

    @requires_scope("write")
    @blp.arguments(CalendarSchema)
    @blp.response(201, CalendarSchema)
    def post(self, data):
        """Create a calendar (scope `write`)."""
        return calendars.create_calendar(data)


@blp.route("/<string:name>/")
class CalendarItem(MethodView):
    @blp.response(200, CalendarSchema)
    def get(self, name):
        """Show one calendar."""
        return calendars.get_calendar(name)

    @requires_scope("write")
    @blp.arguments(CalendarUpdateSchema)
    @blp.response(200, CalendarSchema)
    def put(self, data, name):
        """Replace a calendar's days; its tasks' next slots follow at once (scope `write`)."""
        calendar = calendars.get_calendar(name)
        if data.pop("name", name) != name:
            raise Invalid("name", "A calendar keeps its name: leave this out or make it the URL's.")
        return calendars.update_calendar(calendar, data)

    @requires_scope("write")
    @blp.response(204)
    def delete(self, name):
        """Delete a calendar no task uses (scope `write`; 409 while one does)."""
        calendars.delete_calendar(calendars.get_calendar(name))
