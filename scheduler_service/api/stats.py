"""System statistics: task aggregates, and run counts kept per task (never a scan of the runs)."""
from __future__ import annotations

from flask.views import MethodView

from ..queries import collect_stats, get_task
from ..schemas import StatsQueryArgsSchema, StatsSchema
from .blueprint import Blueprint

blp = Blueprint("stats", __name__, url_prefix="/api/stats", description="Statistics")


@blp.route("/")
class Stats(MethodView):
    @blp.arguments(StatsQueryArgsSchema, location="query")
    @blp.response(200, StatsSchema)
    def get(self, args):
        """System stats, or the same document for one task (`?task_id=`)."""
        task_id = args.get("task_id")
        if task_id is not None:
            get_task(task_id)  # 404 for an unknown task
        return collect_stats(task_id)
