"""One blueprint per resource; ``register`` mounts them all on the Api."""
from __future__ import annotations

from flask_smorest import Api

from . import alerts, apply, governance, health, logs, schedule, stats, tasks


def register(api: Api) -> None:
    # Every operation needs the bearer token unless it says otherwise (health, docs).
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearerAuth": []}]
    for blueprint in (tasks.blp, logs.blp, stats.blp, schedule.blp, health.blp, governance.blp, apply.blp, alerts.blp):
        api.register_blueprint(blueprint)
