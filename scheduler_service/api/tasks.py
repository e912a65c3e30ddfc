"""Tasks: list, create, read, replace, change, delete, toggle, run now."""
from __future__ import annotations

from flask.views import MethodView

from .. import listing, services
from ..auth import require_action_scope, requires_scope
from ..models import Task
from ..queries import get_task
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

    @requires_scope("write")
    @blp.arguments(TaskSchema)
    @blp.response(201, TaskSchema)
    def post(self, data):
        """Create a task (scope `write`; `admin` for `shell` and `python` actions)."""
        require_action_scope(data["action"])
        return services.create_task(data)


@blp.route("/<int:task_id>/")
class TaskItem(MethodView):
    @blp.response(200, TaskSchema)
    def get(self, task_id):
        """Show one task."""
        return get_task(task_id)

    @requires_scope("write")
    @blp.arguments(TaskSchema)
    @blp.response(200, TaskSchema)
    def put(self, data, task_id):
        """Replace a task (scope `write`; `admin` for `shell` and `python` actions)."""
        return _update(task_id, data)

    @requires_scope("write")
    @blp.arguments(TaskUpdateSchema(partial=True))
    @blp.response(200, TaskSchema)
    def patch(self, data, task_id):
        """Change the fields given (scope `write`; `admin` for `shell` and `python` actions)."""
        return _update(task_id, data)

    @requires_scope("write")
    @blp.response(204)
    def delete(self, task_id):
        """Delete a task and its runs (scope `write`; `admin` for `shell` and `python` actions)."""
        task = get_task(task_id)
        require_action_scope(task.action)
        services.delete_task(task)


def _update(task_id: int, data: dict) -> Task:
    task = get_task(task_id)
    # Both sides: a write token may neither change a shell task nor turn a task into one.
    require_action_scope(task.action, data.get("action"))
    return services.update_task(task, data)


@blp.route("/<int:task_id>/toggle/")
class TaskToggle(MethodView):
    @requires_scope("run")
    @blp.response(200, TaskSchema)
    def post(self, task_id):
        """Flip `enabled` (scope `run`)."""
        return services.toggle_task(get_task(task_id))


@blp.route("/<int:task_id>/run/")
class TaskRun(MethodView):
    @requires_scope("run")
    @blp.response(202, RunSchema)
    def post(self, task_id):
        """Run now, ignoring `enabled` and the dependency gate (scope `run`)."""
        return services.request_run(get_task(task_id))
