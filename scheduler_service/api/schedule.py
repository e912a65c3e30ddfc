"""Schedule preview: what a cron expression will run, in a zone, from a start."""
from __future__ import annotations

from flask.views import MethodView

from ..clock import utcnow
from ..engine import cron
from ..schemas import PreviewArgsSchema, PreviewSchema
from .blueprint import Blueprint

blp = Blueprint("schedule", __name__, url_prefix="/api/schedule", description="Schedule preview")


@blp.route("/preview/")
class Preview(MethodView):
    @blp.arguments(PreviewArgsSchema, location="query")
    @blp.response(200, PreviewSchema)
    def get(self, args):
        """Describe an expression and list its next fire times, the first strictly after `start`."""
        expression, zone = args["cron_expression"], args["timezone"]
        start = args["start"] or utcnow()
        return {
            "description": cron.describe(expression),
            "next_runs": cron.fire_times(expression, zone, start, args["count"]),
        }
