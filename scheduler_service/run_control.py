"""Run control that people ask for: cancel a run, pause and resume a task. Shared by the API and the admin."""
from __future__ import annotations

from datetime import datetime

from . import audit
from .clock import utcnow
from .engine import cancels
from .extensions import db, scheduler
from .models import FINISHED_RUN_STATUSES, Run, Task
from .pausing import pause_task, resume_task
from .refusals import Conflict, Invalid


def cancel_run(run: Run) -> Run:
    """A pending run is finished at once; a running one is asked to stop (its process does within
    a second or two). Either way it ends ``failed``, its message starting with ``cancelled``, not retried."""
    if run.status in FINISHED_RUN_STATUSES:
        raise Conflict(f"run {run.id} already finished ({run.status})")
    now = utcnow()
    message = cancels.cancel_message(audit.current_actor())
    status = run.status
    if status == "pending" and cancels.finish_pending([run], message, now):
        pass
    elif cancels.ask_to_stop([run.id], message, now) == 0:
        db.session.rollback()
        db.session.refresh(run)
        if run.status in FINISHED_RUN_STATUSES:  # it finished while we asked
            raise Conflict(f"run {run.id} already finished ({run.status})")
        return run  # already asked to stop: the first request stands, and nothing changed
    audit.record("cancel", run.task_id, {"run_id": [run.id, run.id], "status": [status, "cancelled"]})
    db.session.commit()
    db.session.refresh(run)
    return run


def pause(task: Task, note: str | None, until: datetime | None) -> Task:
    now = utcnow()
    if until is not None and until <= now:
        raise Invalid("until", "Must be in the future.")
    pause_task(task, note, until, now)
    db.session.commit()
    return task


def resume(task: Task) -> Task:
    resume_task(task, utcnow())
    db.session.commit()
    scheduler.wake()
    return task
