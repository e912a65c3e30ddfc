"""The admin pages. Each view reads its input, calls one helper, and renders or redirects."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from .. import audit, pools, services
from ..backfill import backfill
from ..calendars import list_calendars
from ..clock import utcnow
from ..engine import cron
from ..masking import mask_action
from ..database import db
from ..models import (
    CATCHUP_POLICIES, CONCURRENCY_POLICIES, RUN_STATUSES, RUN_TRIGGERS, TASK_STATUSES, Pool, RunCancel, Task,
)
from ..queries import collect_stats, get_run, get_task
from ..refusals import Conflict, NotFound, Refused
from ..schedule_schemas import REPROCESS, BackfillSchema
from ..schemas import HTTP_METHODS
from ..task_schedules import task_schedule
from . import dashboard, queries, security, task_form, throttle
from .accounts import authenticate
from .task_writes import attempt, refusal_errors, refusal_message, save_task

blp = Blueprint(
    "admin", __name__, url_prefix="/admin",
    template_folder="templates", static_folder="static", static_url_path="/static",
)

PUBLIC_ENDPOINTS = {"admin.login", "admin.static"}
PREVIEW_COUNT = 5
# The admin's words for an id the shared reads did not find (the API's are "task 5 not found").
MISSING = {
    "task": "Task {key} does not exist.",
    "run": "Run {key} does not exist (it may have been deleted with its task).",
    "calendar": "Calendar “{key}” does not exist.",
    "pool": "Pool “{key}” does not exist.",
}
BACKFILL_FIELDS = ("start", "end", "reprocess")
PREVIEW_FIELDS = ("cron_expression", "timezone", "interval_seconds", "run_at", "calendar")


# --- every request ----------------------------------------------------------------------------


@blp.before_request
def _guard():
    """Forms must carry this session's CSRF token; every page but login needs a logged-in user."""
    if request.method == "POST" and not security.csrf_ok():
        return render_template("admin/error.html", title="Form expired",
                               message="This form is no longer valid (its security token does not match). "
                                       "Go back, reload the page and send it again."), 400
    user = security.current_admin()
    if request.endpoint not in PUBLIC_ENDPOINTS and user is None:
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    if user is not None:
        audit.set_actor(f"admin:{user.name}")
    return None


@blp.before_request
def _refuse_unsafe_targets():
    """A page to return to with a control character is a forged link: refused before any form is acted on."""
    if any(security.has_control_character(target) for target in request.values.getlist("next")):
        return render_template("admin/error.html", title="Bad link",
                               message="The page to return to (next) contains a control character."), 400
    return None


@blp.after_request
def _headers(response: Response) -> Response:
    return security.add_security_headers(response)


# Globals rather than a context processor: imported macros (the forms' buttons) see them too.
blp.add_app_template_global(security.csrf_token, "csrf_token")
blp.add_app_template_global(security.current_admin, "current_admin")
blp.add_app_template_global(utcnow, "now")


@blp.errorhandler(404)
def _not_found(error):
    return render_template("admin/error.html", title="Not found", message=error.description), 404


@blp.errorhandler(NotFound)
def _missing(error: NotFound):
    return render_template("admin/error.html", title="Not found",
                           message=MISSING[error.kind].format(key=error.key)), 404


# --- login ---------------------------------------------------------------------------------------


@blp.route("/login", methods=["GET", "POST"])
def login():
    target = security.safe_next(request.values.get("next"), url_for("admin.dashboard_page"))
    if request.method == "GET":
        if security.current_admin() is not None:
            return redirect(target)
        return render_template("admin/login.html", next=target, name="")
    name = request.form.get("name", "")
    login_try = throttle.begin_attempt(throttle.throttle_keys(name, request.remote_addr), utcnow())
    if login_try.retry_after is not None:
        # Refused without checking the password, so that guessing on learns nothing.
        return render_template(
            "admin/login.html", next=target, name=name,
            error=f"Too many failed logins for this name or from this address. "
                  f"Try again in {login_try.retry_after} seconds.",
        ), 429, {"Retry-After": str(login_try.retry_after)}
    user = authenticate(name, request.form.get("password", ""))
    if user is None:
        return render_template("admin/login.html", next=target, name=name,
                               error="Wrong name or password."), 401
    throttle.end_attempt(login_try)
    security.log_in(user)
    return redirect(target)


@blp.post("/logout")
def logout():
    security.log_out()
    flash("You are logged out.", "success")
    return redirect(url_for("admin.login"))


# --- dashboard -----------------------------------------------------------------------------------


@blp.get("/")
def dashboard_page():
    return render_template("admin/dashboard.html", board=dashboard.build_dashboard(utcnow()),
                           series=dashboard.HOURLY_SERIES)


# --- tasks ---------------------------------------------------------------------------------------


@blp.get("/tasks/")
def task_list():
    filters = queries.task_filters(request.args)
    page = queries.task_page(filters.args)
    return render_template(
        "admin/tasks.html", page=page, filters=filters, statuses=TASK_STATUSES,
        last_runs=queries.last_finished_runs([task.id for task in page["items"]]),
    )


@blp.route("/tasks/new", methods=["GET", "POST"])
def task_new():
    if request.method == "GET":
        return _task_form(None, task_form.blank_form(), {})
    task, errors = save_task(request.form)
    if task is None:
        return _task_form(None, task_form.form_values(request.form), errors), 422
    flash(f"Task “{task.name}” created.", "success")
    return redirect(url_for("admin.task_page", task_id=task.id))


@blp.get("/tasks/<int:task_id>/")
def task_page(task_id: int):
    return render_task_page(get_task(task_id), BackfillForm())


@blp.route("/tasks/<int:task_id>/edit", methods=["GET", "POST"])
def task_edit(task_id: int):
    task = get_task(task_id)
    if request.method == "GET":
        return _task_form(task, task_form.form_from_task(task), {})
    saved, errors = save_task(request.form, task)
    if saved is None:
        return _task_form(task, task_form.form_values(request.form), errors), 422
    flash(f"Task “{saved.name}” saved.", "success")
    return redirect(url_for("admin.task_page", task_id=saved.id))


@blp.post("/tasks/<int:task_id>/toggle")
def task_toggle(task_id: int):
    task = get_task(task_id)
    toggled, refusal = attempt(services.toggle_task, task)
    if refusal is not None:
        flash(refusal_message(refusal), "error")
    else:
        flash(f"Task “{toggled.name}” {'enabled' if toggled.enabled else 'disabled'}.", "success")
    return redirect(_back(task_id))


@blp.post("/tasks/<int:task_id>/run")
def task_run(task_id: int):
    task = get_task(task_id)
    run, refusal = attempt(services.request_run, task)
    if refusal is not None:
        flash(f"Not started: {refusal_message(refusal)}", "error")
        return redirect(_back(task_id))
    link = url_for("admin.run_page", run_id=run.id)
    flash(Markup('Run <a href="{}">#{}</a> of “{}” queued.').format(link, run.id, escape(task.name)), "success")
    return redirect(_back(task_id))


@blp.post("/tasks/<int:task_id>/backfill")
def task_backfill(task_id: int):
    """Preview a backfill (dry run), or queue it once confirmed: only the slots the person saw run."""
    task = get_task(task_id)
    shown = BackfillForm(values={name: request.form.get(name, "").strip() for name in BACKFILL_FIELDS})
    args, shown.errors = task_form.load_inputs(BackfillSchema(), shown.values)
    if args is None:
        return render_task_page(task, shown), 422
    planned, refusal = attempt(backfill, task, {**args, "dry_run": True})
    if refusal is not None:
        return _refused_backfill(task, shown, refusal)
    shown.args, shown.slots = args, planned["slots"]
    if request.form.get("dry_run") == "true" or "slots_digest" not in request.form:
        return render_task_page(task, shown), 200  # the preview, with its confirm button
    if request.form["slots_digest"] != shown.digest:
        # Confirmed other slots than these (a run or the calendar changed since): show them instead.
        shown.note = "The slots to run changed since the preview: check them and confirm again."
        return render_task_page(task, shown), 409
    queued, refusal = attempt(backfill, task, {**args, "dry_run": False})
    if refusal is not None:
        return _refused_backfill(task, shown, refusal)
    count = len(queued["runs"])
    link = url_for("admin.run_list", task_id=task.id, trigger="backfill")
    flash(Markup('{} backfill run{} of “{}” queued: <a href="{}">see them in the run log</a>.').format(
        count, "" if count == 1 else "s", task.name, link), "success")
    return redirect(url_for("admin.task_page", task_id=task.id))


@blp.route("/tasks/<int:task_id>/delete", methods=["GET", "POST"])
def task_delete(task_id: int):
    task = get_task(task_id)
    if request.method == "GET":
        return render_template("admin/task_delete.html", task=task, run_count=queries.count_runs(task.id))
    name = task.name
    _, refusal = attempt(services.delete_task, task)
    if refusal is not None:
        return render_template("admin/task_delete.html", task=task, run_count=queries.count_runs(task.id),
                               refusal=refusal_message(refusal)), 409
    flash(f"Task “{name}” and its runs deleted.", "success")
    return redirect(url_for("admin.task_list"))


@blp.get("/schedule-preview")
def schedule_preview():
    """The task form's live preview: the slots the typed schedule would have (cron, interval
    or one-off, in its zone, its calendar's days left out), for the session user."""
    values = {name: request.args.get(name, "").strip() for name in PREVIEW_FIELDS}
    try:
        schedule = task_form.preview_schedule(values, utcnow())
    except ValueError as exc:
        return jsonify(error=str(exc)), 422
    if schedule.kind is None:
        return jsonify(description=schedule.describe(), next_runs=[])
    return jsonify(description=schedule.describe(),
                   next_runs=[moment.isoformat() for moment in schedule.upcoming(utcnow(), PREVIEW_COUNT)])


# --- runs ------------------------------------------------------------------------------------------


@blp.get("/runs/")
def run_list():
    filters = queries.run_filters(request.args)
    return render_template(
        "admin/runs.html", page=queries.run_page(filters.args), filters=filters,
        statuses=RUN_STATUSES, triggers=RUN_TRIGGERS, task_choices=queries.task_names(),
    )


@blp.get("/runs/<int:run_id>/")
def run_page(run_id: int):
    # A stop asked for and not yet done (the run's engine reads it within a second or two).
    return render_template("admin/run.html", run=get_run(run_id), stop_asked=db.session.get(RunCancel, run_id))


# --- helpers ---------------------------------------------------------------------------------------


@dataclass
class BackfillForm:
    """The task page's backfill form: what was typed, its errors, and the slots of a preview."""

    values: dict[str, str] = field(default_factory=lambda: {"start": "", "end": "", "reprocess": "missing"})
    errors: task_form.FieldErrors = field(default_factory=dict)
    args: dict[str, Any] | None = None  # the loaded start, end, reprocess: the confirm form's hidden fields
    slots: list[datetime] | None = None  # None: no preview yet
    note: str | None = None

    @property
    def digest(self) -> str:
        """Names the previewed slots, so that a confirmation runs these and no others."""
        text = "\n".join(slot.isoformat() for slot in self.slots or ())
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _refused_backfill(task: Task, shown: BackfillForm, refusal: Refused) -> tuple[str, int]:
    shown.errors = refusal_errors(refusal)
    return render_task_page(task, shown), 409 if isinstance(refusal, Conflict) else 422


def render_task_page(task: Task, backfill_form: BackfillForm, pause_form: Any = None) -> str:
    """The task page; ``pause_form`` (run_control_views.PauseForm) shows a refused pause again."""
    try:
        schedule = task_schedule(task, utcnow(), PREVIEW_COUNT)
    except cron.CronError:  # a zone gone from the system's tz database since the task was saved
        schedule = {"description": None, "next_runs": []}
    return render_template(
        "admin/task.html", task=task, stats=collect_stats(task.id), runs=queries.recent_runs(task.id),
        upcoming=schedule["next_runs"], schedule_text=schedule["description"], action=mask_action(task.action),
        history=queries.task_history(task.id), backfill=backfill_form, reprocess_choices=REPROCESS,
        form_wide=task_form.FORM_WIDE, catchup_labels=task_form.CATCHUP_LABELS,
        policy_labels=task_form.POLICY_LABELS, pool=db.session.get(Pool, task.pool) if task.pool else None,
        pause=pause_form,
    )


def _task_form(task: Task | None, values: dict, errors: task_form.FieldErrors) -> str:
    return render_template(
        "admin/task_form.html", task=task, values=values, errors=errors,
        parent_choices=queries.task_names(exclude=task.id if task else None),
        action_types=task_form.ACTION_TYPES, http_methods=HTTP_METHODS,
        body_formats=task_form.BODY_FORMATS, form_wide=task_form.FORM_WIDE,
        zones=_zone_names(), calendar_names=[calendar.name for calendar in list_calendars()],
        catchup_policies=CATCHUP_POLICIES, catchup_labels=task_form.CATCHUP_LABELS,
        concurrency_policies=CONCURRENCY_POLICIES, policy_labels=task_form.POLICY_LABELS,
        pool_names=[pool.name for pool in pools.list_pools()],
    )


@lru_cache(maxsize=1)
def _zone_names() -> list[str]:
    return sorted(available_timezones())


def _back(task_id: int) -> str:
    """Where a button on a list or a task page returns to."""
    return security.safe_next(request.form.get("next"), url_for("admin.task_page", task_id=task_id))
