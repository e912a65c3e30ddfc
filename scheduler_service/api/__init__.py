"""One blueprint per resource; ``register`` mounts them all on the Api."""
from __future__ import annotations

from flask_smorest import Api

from . import alerts, apply, calendars, governance, health, logs, run_control, schedule, stats, task_schedule, tasks


def register(api: Api) -> None:
    # Every operation needs the bearer token unless it says otherwise (health, docs).
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearerAuth": []}]
    for blueprint in (tasks.blp, task_schedule.blp, logs.blp, stats.blp, schedule.blp, calendars.blp, health.blp,
                      governance.blp, apply.blp, alerts.blp, run_control.blp):
        api.register_blueprint(blueprint)
