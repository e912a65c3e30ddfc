"""One task's schedule, and backfill of its past slots."""
from __future__ import annotations

from flask.views import MethodView

from ..auth import requires_scope
from ..backfill import backfill
from ..clock import utcnow
from ..queries import get_task
from ..schedule_schemas import BackfillResultSchema, BackfillSchema, TaskScheduleArgsSchema, TaskScheduleSchema
from ..task_schedules import task_schedule
from .blueprint import Blueprint

blp = Blueprint("task_schedule", __name__, url_prefix="/api/tasks", description="A task's slots: ahead and past")


@blp.route("/<int:task_id>/schedule/")
class TaskSchedule(MethodView):
    @blp.arguments(TaskScheduleArgsSchema, location="query")
    @blp.response(200, TaskScheduleSchema)
    def get(self, args, task_id):
        """The task's next slots strictly after `start` (default now), every rule applied."""
        return task_schedule(get_task(task_id), args["start"] or utcnow(), args["count"])


@blp.route("/<int:task_id>/backfill/")
class TaskBackfill(MethodView):
    @requires_scope("run")
    @blp.arguments(BackfillSchema)
    @blp.response(202, BackfillResultSchema)
    def post(self, data, task_id):
        """Run the task's slots from `start` to `end` again, one at a time in slot order (scope `run`)."""
        return backfill(get_task(task_id), data)
