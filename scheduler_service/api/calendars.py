"""Calendars: the days that tasks naming them have no slots."""
from __future__ import annotations

from flask.views import MethodView

from .. import calendars
from ..auth import requires_scope
from ..refusals import Invalid
from ..schedule_schemas import CalendarListSchema, CalendarSchema, CalendarUpdateSchema
from .blueprint import Blueprint

blp = Blueprint("calendars", __name__, url_prefix="/api/calendars", description="Calendars of excluded days")


@blp.route("/")
class Calendars(MethodView):
    @blp.response(200, CalendarListSchema)
    def get(self):
        """List calendars by name."""
        return {"items": calendars.list_calendars()}

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
