"""Tasks as files over HTTP: make the tasks match a document, as ``flask tasks apply`` does (scope `admin`)."""
from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import fields

from ..auth import requires_scope
from ..task_files import InvalidDocument
from ..task_files_store import apply_document
from .blueprint import Blueprint

blp = Blueprint("apply", __name__, url_prefix="/api/apply", description="Tasks as files")


class ApplyArgsSchema(ma.Schema):
    dry_run = fields.Boolean(load_default=False, metadata={"description": "answer the plan; change nothing"})
    prune = fields.Boolean(load_default=False, metadata={"description": "also delete the tasks the document omits"})


class TaskDocumentSchema(ma.Schema):
    """The document `flask tasks export` writes, as JSON. Checked in full by task_files.py (the
    CLI's own rules), so that a file and a request are refused alike; declared here for the docs."""

    class Meta:
        unknown = ma.INCLUDE  # refused by task_files, naming the key

    tasks = fields.Raw(metadata={
        "type": "object",
        "description": "task name -> the task's fields (as in /api/tasks/, without the read-only ones);"
                       " depends_on by parent names; \"***\" keeps a stored secret",
        "additionalProperties": {"type": "object"},
        "example": {"extract": {"cron_expression": "0 2 * * *", "action": {"type": "http", "url": "http://etl/x"}},
                    "load": {"depends_on": ["extract"], "action": {"type": "http", "url": "http://etl/y"}}},
    })


class ChangeSchema(ma.Schema):
    task = fields.String()
    change = fields.String(metadata={"enum": ["create", "update", "delete"]})
    fields = fields.List(fields.String(), metadata={"description": "the fields an update changes"})


class PlanSchema(ma.Schema):
    dry_run = fields.Boolean()
    changed = fields.Boolean(metadata={"description": "whether the tasks differed from the document"
                                                      " (with dry_run, nothing was written)"})
    changes = fields.List(fields.Nested(ChangeSchema))


@blp.route("/")
class Apply(MethodView):
    @requires_scope("admin")
    @blp.arguments(TaskDocumentSchema)
    @blp.arguments(ApplyArgsSchema, location="query")
    @blp.response(200, PlanSchema)
    def post(self, document, args):
        """Make the tasks match a document: create, change, with `prune` delete; all or nothing (scope `admin`)."""
        try:
            changes = apply_document(document, dry_run=args["dry_run"], prune=args["prune"])
        except InvalidDocument as exc:
            abort(422, message="the document is invalid; nothing was changed", errors={"json": exc.errors()})
        return {"dry_run": args["dry_run"], "changed": bool(changes), "changes": changes}
