"""Who may do what and who did what: the token list (scope `admin`) and the audit trail (scope `read`)."""
from __future__ import annotations

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView
from marshmallow import fields, validate

from ..auth import requires_scope
from ..listing import filtered
from ..models import AUDIT_ACTIONS, TOKEN_SCOPES, ApiToken, AuditEntry
from ..schemas import PageArgsSchema, QueryId, Text, TimeWindowArgsSchema, UTCTimeField
from .blueprint import Blueprint
from .pagination import paginate

blp = Blueprint("governance", __name__, url_prefix="/api", description="Tokens and the audit trail")


class TokenSchema(ma.Schema):
    """A token as listed: never the token, never its hash."""

    name = fields.String()
    scope = fields.String(metadata={"enum": list(TOKEN_SCOPES)})
    created_at = UTCTimeField()
    last_used_at = UTCTimeField(allow_none=True, metadata={"description": "to the minute"})


class TokenPageSchema(ma.Schema):
    items = fields.List(fields.Nested(TokenSchema))
    next_cursor = fields.String(allow_none=True)


class AuditEntrySchema(ma.Schema):
    id = fields.Integer()
    at = UTCTimeField()
    actor = fields.String(metadata={"description": "token:NAME, admin:USER or cli"})
    action = fields.String(metadata={"enum": list(AUDIT_ACTIONS)})
    task_id = fields.Integer(allow_none=True)
    changes = fields.Dict(metadata={"description": "field -> [before, after]; secrets as \"***\""})


class AuditQueryArgsSchema(TimeWindowArgsSchema):
    task_id = QueryId()
    actor = Text(validate=validate.Length(min=1, max=200))
    action = fields.String(validate=validate.OneOf(AUDIT_ACTIONS))


class AuditPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    next_cursor = fields.String(allow_none=True)


@blp.route("/tokens/")
class Tokens(MethodView):
    @requires_scope("admin")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, TokenPageSchema)
    def get(self, args):
        """List API tokens: name, scope, created, last used (scope `admin`)."""
        query = sa.select(ApiToken.id, ApiToken.name, ApiToken.scope, ApiToken.created_at, ApiToken.last_used_at)
        return paginate(query, ApiToken.id, limit=args["limit"], cursor=args["cursor"], newest_first=False)


@blp.route("/audit/")
class Audit(MethodView):
    @blp.arguments(AuditQueryArgsSchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args):
        """The audit trail, newest first (filters `task_id`, `actor`, `action`, `since`, `until`)."""
        query = filtered(sa.select(AuditEntry), AuditEntry, args, equal=("task_id", "actor", "action"),
                         time_column=AuditEntry.at)
        return paginate(query, AuditEntry.id, limit=args["limit"], cursor=args["cursor"], newest_first=True)
