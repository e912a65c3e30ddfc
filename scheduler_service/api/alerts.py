"""GET /api/alerts/: the alerts raised and what became of their delivery, newest first."""
from __future__ import annotations

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView
from marshmallow import fields, validate

from ..listing import filtered
from ..masking import mask_url
from ..ops.models import ALERT_STATUSES, Alert
from ..schemas import NOTIFY_EVENTS, PageArgsSchema, QueryId, UTCTimeField
from .blueprint import Blueprint
from .pagination import paginate

blp = Blueprint("alerts", __name__, url_prefix="/api/alerts", description="Alerts sent by webhook")


class AlertSchema(ma.Schema):
    id = fields.Integer()
    task_id = fields.Integer(allow_none=True, metadata={"description": "null once the task is deleted"})
    event = fields.String(metadata={"enum": list(NOTIFY_EVENTS)})
    url = fields.Function(lambda alert: mask_url(alert.url), metadata={"description": "path and query as ***"})
    status = fields.String(metadata={"enum": list(ALERT_STATUSES)})
    attempts = fields.Integer()
    next_attempt_at = UTCTimeField(allow_none=True)
    last_error = fields.String()
    created_at = UTCTimeField()
    delivered_at = UTCTimeField(allow_none=True)
    payload = fields.Dict(metadata={"description": "the JSON body POSTed (the delivery adds `id`)"})


class AlertQueryArgsSchema(PageArgsSchema):
    task_id = QueryId()
    status = fields.String(validate=validate.OneOf(ALERT_STATUSES))
    event = fields.String(validate=validate.OneOf(NOTIFY_EVENTS))


class AlertPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AlertSchema))
    next_cursor = fields.String(allow_none=True)


@blp.route("/")
class Alerts(MethodView):
    @blp.arguments(AlertQueryArgsSchema, location="query")
    @blp.response(200, AlertPageSchema)
    def get(self, args):
        """List alerts, newest first (filters `task_id`, `status`, `event`)."""
        query = filtered(sa.select(Alert), Alert, args, equal=("task_id", "status", "event"))
        return paginate(query, Alert.id, limit=args["limit"], cursor=args["cursor"], newest_first=True)
