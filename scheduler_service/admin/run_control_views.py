"""The admin's run control: cancel a run, pause and resume a task.

Routes on the admin blueprint (``views.blp``), so the same login and CSRF guard
covers them. Input goes through the API's PauseSchema and the changes through
``run_control`` (the API's own functions: audit entries, the cancel rows each
engine reads), so a button here does what ``/api/logs/{id}/cancel/``,
``/api/tasks/{id}/pause/`` and ``/resume/`` do, and is refused for the same reasons.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flask import flash, redirect, request, url_for
from markupsafe import Markup

from .. import run_control
from ..models import FINISHED_RUN_STATUSES, Task
from ..queries import get_run, get_task
from ..run_control_schemas import PauseSchema
from . import security
from .task_form import FieldErrors, load_inputs
from .task_writes import attempt, refusal_errors, refusal_message
from .views import BackfillForm, render_task_page, blp

PAUSE_FIELDS = ("note", "until")


def is_paused(task: Task) -> bool:
    """Paused rather than merely disabled: disabled with a note, a time to resume, or who paused it."""
    return not task.enabled and bool(task.pause_note or task.paused_until or task.paused_by)


# ``{% if task is paused %}`` in the templates (the task page, the task list).
blp.add_app_template_test(is_paused, "paused")


@dataclass
class PauseForm:
    """The task page's pause form: what was typed and its errors (shown again when refused)."""

    values: dict[str, str] = field(default_factory=lambda: {name: "" for name in PAUSE_FIELDS})
    errors: FieldErrors = field(default_factory=dict)


# --- cancel ------------------------------------------------------------------------------------


@blp.post("/runs/<int:run_id>/cancel")
def run_cancel(run_id: int):
    """Cancel a pending run at once, or ask a running one to stop; back to where the button was."""
    run = get_run(run_id)
    back = security.safe_next(request.form.get("next"), url_for("admin.run_page", run_id=run_id))
    task_name = run.task.name
    cancelled, refusal = attempt(run_control.cancel_run, run)
    if refusal is not None:
        flash(f"Not cancelled: {refusal_message(refusal)}", "error")
    elif cancelled.status in FINISHED_RUN_STATUSES:
        flash(Markup("Run {} of “{}” cancelled.").format(_run_link(run_id), task_name), "success")
    else:
        flash(Markup("Run {} of “{}” asked to stop: it ends within a few seconds, failed as cancelled.").format(
            _run_link(run_id), task_name), "success")
    return redirect(back)


def _run_link(run_id: int) -> Markup:
    return Markup('<a href="{}">#{}</a>').format(url_for("admin.run_page", run_id=run_id), run_id)


# --- pause and resume ----------------------------------------------------------------------------


@blp.post("/tasks/<int:task_id>/pause")
def task_pause(task_id: int):
    """Pause the task with an optional note, until an optional time (it resumes by itself then)."""
    task = get_task(task_id)
    shown = PauseForm(values={name: request.form.get(name, "").strip() for name in PAUSE_FIELDS})
    data, shown.errors = load_inputs(PauseSchema(), shown.values)
    if data is None:
        return render_task_page(task, BackfillForm(), shown), 422
    paused, refusal = attempt(run_control.pause, task, data["note"], data["until"])
    if refusal is not None:
        shown.errors = refusal_errors(refusal)
        return render_task_page(get_task(task_id), BackfillForm(), shown), 422
    if paused.paused_until is not None:
        until = paused.paused_until.strftime("%Y-%m-%d %H:%M:%S UTC")
        flash(f"Task “{paused.name}” paused until {until}; it resumes by itself then.", "success")
    else:
        flash(f"Task “{paused.name}” paused until someone resumes it.", "success")
    return redirect(url_for("admin.task_page", task_id=task_id))


@blp.post("/tasks/<int:task_id>/resume")
def task_resume(task_id: int):
    """Resume a paused task now: its next slot is the first from now (the pause's slots are not run)."""
    task = get_task(task_id)
    back = security.safe_next(request.form.get("next"), url_for("admin.task_page", task_id=task_id))
    if task.enabled:
        # A second click, or a page from before someone else resumed it: resuming again
        # would only drop the slots that queued since.
        flash(f"Task “{task.name}” is not paused: nothing to resume.", "error")
        return redirect(back)
    resumed, refusal = attempt(run_control.resume, task)
    if refusal is not None:
        flash(f"Not resumed: {refusal_message(refusal)}", "error")
    else:
        flash(f"Task “{resumed.name}” resumed; its next slot is the first from now.", "success")
    return redirect(back)
