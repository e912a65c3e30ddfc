"""Tasks: list, create, read, replace, change, delete, toggle, run now."""
from __future__ import annotations

from flask.views import MethodView

from .. import listing, services
from ..models import Task
from ..schemas import RunSchema, TaskPageSchema, TaskQueryArgsSchema, TaskSchema, TaskUpdateSchema
from .blueprint import Blueprint
from .pagination import paginate

blp = Blueprint("tasks", __name__, url_prefix="/api/tasks", description="Scheduled tasks")


@blp.route("/")
class Tasks(MethodView):
    @blp.arguments(TaskQueryArgsSchema, location="query")
    @blp.response(200, TaskPageSchema)
    def get(self, args):
        """List tasks, oldest first."""
        query = listing.task_rows_query(args)
        page = paginate(query, Task.id, limit=args["limit"], cursor=args["cursor"], newest_first=False)
        return {**page, "items": listing.with_parent_ids(page["items"])}

    @blp.arguments(TaskSchema)
    @blp.response(201, TaskSchema)
    def post(self, data):
        """Create a task."""
        return services.create_task(data)


@blp.route("/<int:task_id>/")
class TaskItem(MethodView):
    @blp.response(200, TaskSchema)
    def get(self, task_id):
        """Show one task."""
        return services.get_task_or_404(task_id)

    @blp.arguments(TaskSchema)
    @blp.response(200, TaskSchema)
    def put(self, data, task_id):
        """Replace a task."""
        return services.update_task(services.get_task_or_404(task_id), data)

    @blp.arguments(TaskUpdateSchema(partial=True))
    @blp.response(200, TaskSchema)
    def patch(self, data, task_id):
        """Change the fields given."""
        return services.update_task(services.get_task_or_404(task_id), data)

    @blp.response(204)
    def delete(self, task_id):
        """Delete a task and its runs."""
        services.delete_task(services.get_task_or_404(task_id))


@blp.route("/<int:task_id>/toggle/")
class TaskToggle(MethodView):
    @blp.response(200, TaskSchema)
    def post(self, task_id):
        """Flip `enabled`."""
        return services.toggle_task(services.get_task_or_404(task_id))


@blp.route("/<int:task_id>/run/")
class TaskRun(MethodView):
    @blp.response(202, RunSchema)
    def post(self, task_id):
        """Run now, ignoring `enabled` and the dependency gate."""
        return services.request_run(services.get_task_or_404(task_id))
