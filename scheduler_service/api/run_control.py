"""Run control: cancel a run, pause and resume a task, pools."""
from __future__ import annotations

import sqlalchemy as sa
from flask.views import MethodView

from .. import pools, run_control
from ..auth import requires_scope
from ..models import Pool
from ..queries import get_run, get_task
from ..refusals import Invalid
from ..run_control_schemas import PauseSchema, PoolListSchema, PoolSchema, PoolUpdateSchema
from ..schemas import PageArgsSchema, RunSchema, TaskSchema
from .blueprint import Blueprint
from .pagination import paginate_by_name

blp = Blueprint("run_control", __name__, url_prefix="/api", description="Cancel, pause and resume; pools")


@blp.route("/logs/<int:run_id>/cancel/")
class RunCancel(MethodView):
    @requires_scope("run")
    @blp.response(202, RunSchema)
    def post(self, run_id):
        """Cancel a pending or running run: it ends `failed` (`cancelled ...`) and is not retried (scope `run`)."""
        return run_control.cancel_run(get_run(run_id))


@blp.route("/tasks/<int:task_id>/pause/")
class TaskPause(MethodView):
    @requires_scope("run")
    @blp.arguments(PauseSchema)
    @blp.response(200, TaskSchema)
    def post(self, data, task_id):
        """Disable the task with a `note`, until `until` if given, when it resumes by itself (scope `run`)."""
        return run_control.pause(get_task(task_id), data["note"], data["until"])


@blp.route("/tasks/<int:task_id>/resume/")
class TaskResume(MethodView):
    @requires_scope("run")
    @blp.response(200, TaskSchema)
    def post(self, task_id):
        """Enable the task again; its next slot is the first from now (scope `run`)."""
        return run_control.resume(get_task(task_id))


def _with_waiting(items: list[Pool]) -> list[Pool]:
    waiting = pools.waiting_by_pool()
    for pool in items:
        pool.waiting = waiting.get(pool.name, 0)
    return items


@blp.route("/pools/")
class Pools(MethodView):
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, PoolListSchema)
    def get(self, args):
        """List pools by name, a page at a time."""
        page = paginate_by_name(sa.select(Pool), Pool.name, limit=args["limit"], cursor=args.get("cursor"))
        _with_waiting(page["items"])
        return page

    @requires_scope("write")
    @blp.arguments(PoolSchema)
    @blp.response(201, PoolSchema)
    def post(self, data):
        """Create a pool (scope `write`)."""
        return _with_waiting([pools.create_pool(data)])[0]


@blp.route("/pools/<string:name>/")
class PoolItem(MethodView):
    @blp.response(200, PoolSchema)
    def get(self, name):
        """Show one pool: its slots, and how many of its tasks' runs run and wait now."""
        return _with_waiting([pools.get_pool(name)])[0]

    @requires_scope("write")
    @blp.arguments(PoolUpdateSchema)
    @blp.response(200, PoolSchema)
    def put(self, data, name):
        """Change a pool's slots or description (scope `write`); lowering `slots` stops no run."""
        pool = pools.get_pool(name)
        if data.pop("name", name) != name:
            raise Invalid("name", "A pool keeps its name: leave this out or make it the URL's.")
        return _with_waiting([pools.update_pool(pool, data)])[0]

    @requires_scope("write")
    @blp.response(204)
    def delete(self, name):
        """Delete a pool no task uses (scope `write`; 409 while one does)."""
        pools.delete_pool(pools.get_pool(name))
