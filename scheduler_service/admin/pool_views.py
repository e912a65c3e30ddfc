"""The admin's pool pages: list, create, edit, delete.

Routes on the admin blueprint (``views.blp``), so the same login and CSRF guard
covers them. Input goes through the API's PoolSchema and writes through ``pools``
(audit entries, waiting runs woken when slots are added), so the admin and
``/api/pools/`` refuse the same things.
"""
from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from .. import pools
from ..models import Pool, Task
from ..run_control_schemas import PoolSchema, PoolUpdateSchema
from .named_delete import delete_view
from .queries import tasks_using
from .task_form import FORM_WIDE, FieldErrors, as_integer, load_inputs
from .task_writes import attempt, refusal_errors
from .views import blp


@blp.get("/pools/")
def pool_list():
    return render_template("admin/pools.html", pools=pools.list_pools(), waiting=pools.waiting_by_pool(),
                           users=tasks_using(Task.pool))


@blp.route("/pools/new", methods=["GET", "POST"])
def pool_new():
    if request.method == "GET":
        return _pool_form(None, {"name": "", "slots": "1", "description": ""}, {})
    data, errors = load_inputs(PoolSchema(), _payload_from_form(request.form, with_name=True),
                               keep_empty=True)
    if data is not None:
        pool, refusal = attempt(pools.create_pool, data)
        if refusal is None:
            flash(f"Pool “{pool.name}” created with {_slots_text(pool.slots)}.", "success")
            return redirect(url_for("admin.pool_list"))
        errors = refusal_errors(refusal)
    return _pool_form(None, _form_values(request.form), errors), 422


@blp.route("/pools/<name>/edit", methods=["GET", "POST"])
def pool_edit(name: str):
    pool = pools.get_pool(name)
    if request.method == "GET":
        return _pool_form(pool, {"name": pool.name, "slots": str(pool.slots), "description": pool.description or ""},
                          {})
    data, errors = load_inputs(PoolUpdateSchema(), _payload_from_form(request.form, with_name=False),
                               keep_empty=True)
    if data is not None:
        saved, refusal = attempt(pools.update_pool, pool, data)
        if refusal is None:
            flash(f"Pool “{saved.name}” saved: {_slots_text(saved.slots)}.", "success")
            return redirect(url_for("admin.pool_list"))
        errors = refusal_errors(refusal)
        pool = pools.get_pool(name)  # rolled back: read again for the page
    return _pool_form(pool, _form_values(request.form), errors), 422


@blp.route("/pools/<name>/delete", methods=["GET", "POST"])
def pool_delete(name: str):
    return delete_view(name, kind="pool", column=Task.pool, get=pools.get_pool, delete=pools.delete_pool)


# --- the form --------------------------------------------------------------------------------


def _payload_from_form(form: MultiDict, *, with_name: bool) -> dict[str, Any]:
    """The pool JSON a submitted form means; bad values are passed on for the schema to name."""
    payload: dict[str, Any] = {"description": form.get("description", "").replace("\r\n", "\n")}
    slots = form.get("slots", "").strip()
    if slots:  # empty: missing, which the schema names
        payload["slots"] = as_integer(slots)
    if with_name:
        payload["name"] = form.get("name", "").strip()
    return payload


def _form_values(form: MultiDict) -> dict[str, str]:
    """A submitted form as the values to show again next to its errors."""
    return {key: form.get(key, "") for key in ("name", "slots", "description")}


def _pool_form(pool: Pool | None, values: dict[str, str], errors: FieldErrors) -> str:
    users = tasks_using(Task.pool, [pool.name]).get(pool.name, []) if pool else []
    waiting = pools.waiting_by_pool().get(pool.name, 0) if pool else 0
    return render_template("admin/pool_form.html", pool=pool, values=values, errors=errors, users=users,
                           waiting=waiting, form_wide=FORM_WIDE)


def _slots_text(slots: int) -> str:
    return f"{slots} slot{'' if slots == 1 else 's'}"
