"""The execution log: one entry per run attempt, newest first."""
from __future__ import annotations

from flask.views import MethodView

from .. import listing
from ..models import Run
from ..queries import get_run
from ..schemas import RunPageSchema, RunQueryArgsSchema, RunSchema
from .blueprint import Blueprint
from .pagination import paginate

blp = Blueprint("logs", __name__, url_prefix="/api/logs", description="Execution log")


@blp.route("/")
class Logs(MethodView):
    @blp.arguments(RunQueryArgsSchema, location="query")
    @blp.response(200, RunPageSchema)
    def get(self, args):
        """List runs, newest first."""
        query = listing.run_summary_query(args)
        return paginate(query, Run.id, limit=args["limit"], cursor=args["cursor"], newest_first=True)


@blp.route("/<int:run_id>/")
class LogItem(MethodView):
    @blp.response(200, RunSchema)
    def get(self, run_id):
        """Show one run with its whole kept output."""
        return get_run(run_id)
