"""Liveness for load balancers: 200 while the database answers, else 503."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask.views import MethodView
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..schemas import HealthSchema
from .blueprint import Blueprint

blp = Blueprint("health", __name__, url_prefix="/api", description="Health")
log = logging.getLogger(__name__)


@blp.route("/health")
class Health(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema)
    def get(self):
        """Report whether the database answers (no token needed)."""
        try:
            db.session.execute(sa.text("SELECT 1"))
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("health check: database unreachable: %s", exc.__class__.__name__)
            return {"status": "unavailable", "database": "unreachable"}, 503
        return {"status": "ok", "database": "ok"}
