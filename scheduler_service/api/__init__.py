"""One blueprint per resource; ``register`` mounts them all on the Api."""
from __future__ import annotations

from flask_smorest import Api

from . import health, logs, schedule, stats, tasks


def register(api: Api) -> None:
    for blueprint in (tasks.blp, logs.blp, stats.blp, schedule.blp, health.blp):
        api.register_blueprint(blueprint)
