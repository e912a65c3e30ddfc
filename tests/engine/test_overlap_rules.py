"""The overlap rules, pure: what ``plan_slot`` does with a slot that may run now, for each
concurrency policy, in each state of the task (idle, active, a run waiting), with and without a pool.

The contract (Run control, overlap policies): forbid skips, allow runs beside, buffer_one waits
(one at most), buffer_all waits (all of them), replace cancels what is active and queues the slot;
a pool task's slots are always queued (the queued-run claimer starts them when the pool has room).
Catch-up ``all`` queues every missed slot whatever the policy; dependency-only tasks wait instead of
skipping. Skip messages name the policy.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from scheduler_service.engine.schedules import Schedule
from scheduler_service.engine.slots import DueTask, SlotPlan, plan_slot
from scheduler_service.models import CONCURRENCY_POLICIES

UTC = timezone.utc
SLOT = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=30)
NEXT = SLOT + timedelta(minutes=1)

# The states of a task whose slot comes due.
STATES = {
    "idle": dict(active_runs=0, status="success", waiting=0),
    "active": dict(active_runs=1, status="running", waiting=0),
    "retry waits": dict(active_runs=0, status="retrying", waiting=0),  # a waiting retry is active too
    "a run waits": dict(active_runs=0, status="success", waiting=1),  # e.g. for a slot of its pool
    "active, a run waits": dict(active_runs=1, status="running", waiting=1),
}
POOLS = [None, "db"]


def due(policy: str = "forbid", state: str = "idle", pool: str | None = None, **overrides) -> DueTask:
    values = dict(
        task_id=7, schedule=Schedule(cron_expression="* * * * *"), next_run_at=SLOT, due_at=SLOT,
        misfire_grace_seconds=60, concurrency_policy=policy, pool=pool, **STATES[state],
    )
    values.update(overrides)
    return DueTask(**values)


def dependency_only(policy: str, state: str = "idle", pool: str | None = None) -> DueTask:
    trigger = SLOT - timedelta(hours=3)  # a parent's success, long ago: never missed, only delayed
    return due(policy, state, pool, schedule=Schedule(), next_run_at=trigger, due_at=trigger)


def outcome(plan: SlotPlan) -> str:
    """What happened to the slot: run, queue, replace (queue and cancel what is active), skip or wait."""
    if plan.wait:
        return "wait"
    if plan.run_slot is not None:
        assert plan.queue == () and not plan.replace
        return "run"
    if plan.queue:
        return "replace" if plan.replace else "queue"
    assert plan.skips, plan
    return "skip"


def is_active(state: str) -> bool:
    return state in ("active", "retry waits", "active, a run waits")


def expected(policy: str, state: str, pool: str | None) -> str:
    """The contract's answer, written out independently of slots._overlap. A pool changes one thing
    here: a slot behind a run of the task that waits (for the pool) waits too, so that they start
    oldest first. Whether a slot that may run finds room in its pool is the tick's to find out."""
    active, waits = is_active(state), state in ("a run waits", "active, a run waits")
    if policy == "forbid":
        return "skip" if active or waits else "run"
    if policy == "allow":
        return "queue" if pool and waits else "run"
    if policy == "buffer_one":
        if waits:
            return "skip"
        return "queue" if active else "run"
    if policy == "buffer_all":
        return "queue" if active or waits else "run"
    assert policy == "replace"
    return "replace" if active or waits else "run"


def test_the_policies_are_the_five_of_the_contract():
    assert set(CONCURRENCY_POLICIES) == {"forbid", "allow", "buffer_one", "buffer_all", "replace"}


@pytest.mark.parametrize("pool", POOLS, ids=["no pool", "pool"])
@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("policy", CONCURRENCY_POLICIES)
def test_each_policy_in_each_state(policy, state, pool):
    plan = plan_slot(due(policy, state, pool), [], NOW)
    assert outcome(plan) == expected(policy, state, pool), plan
    # Whatever happens to this slot, the task moves on to its next one.
    assert (plan.next_run_at, plan.next_due_at) == (NEXT, NEXT)
    assert plan.trigger == "schedule"
    if outcome(plan) == "run":
        assert plan.run_slot == SLOT and plan.skips == ()
    elif outcome(plan) in ("queue", "replace"):
        assert plan.queue == (SLOT,) and plan.skips == ()  # a waiting slot keeps its own scheduled_for
    else:
        [skip] = plan.skips
        assert skip.slot == SLOT and skip.parent is None
        assert f"(concurrency_policy {policy})" in skip.message, skip.message


@pytest.mark.parametrize("pool", POOLS, ids=["no pool", "pool"])
def test_forbid_skips_while_a_run_or_a_retry_is_active_naming_the_policy(pool):
    for state in ("active", "retry waits", "active, a run waits"):
        [skip] = plan_slot(due("forbid", state, pool), [], NOW).skips
        assert skip.message == "previous run still active (concurrency_policy forbid)"


def test_forbid_with_a_run_waiting_for_its_pool_skips_naming_the_pool():
    [skip] = plan_slot(due("forbid", "a run waits", "db"), [], NOW).skips
    assert skip.message == "a run of the task already waits for pool db (concurrency_policy forbid)"


@pytest.mark.parametrize("pool", POOLS, ids=["no pool", "pool"])
def test_buffer_one_skips_a_second_waiting_slot_naming_the_policy(pool):
    for state in ("a run waits", "active, a run waits"):
        [skip] = plan_slot(due("buffer_one", state, pool), [], NOW).skips
        assert skip.message == "a slot already waits (concurrency_policy buffer_one)"


def test_buffer_all_queues_however_many_wait():
    for waiting in (1, 5, 500):
        plan = plan_slot(due("buffer_all", "active", waiting=waiting), [], NOW)
        assert plan.queue == (SLOT,) and not plan.replace and plan.skips == ()


def test_replace_only_replaces_when_something_is_active_or_waits():
    assert not plan_slot(due("replace", "idle"), [], NOW).replace
    assert not plan_slot(due("replace", "idle", "db"), [], NOW).replace
    for state in ("active", "retry waits", "a run waits", "active, a run waits"):
        for pool in POOLS:
            plan = plan_slot(due("replace", state, pool), [], NOW)
            assert plan.replace and plan.queue == (SLOT,) and plan.run_slot is None, (state, pool)


def test_allow_runs_beside_any_number_of_active_runs_without_a_pool():
    plan = plan_slot(due("allow", "active", active_runs=12, waiting=3), [], NOW)
    assert plan.run_slot == SLOT


# --- skipped older slots come along, whatever the policy ---------------------------------------


@pytest.mark.parametrize("policy", CONCURRENCY_POLICIES)
def test_older_slots_beyond_the_grace_are_logged_beside_the_policy_s_answer(policy):
    # catchup latest: 01:00 is an hour late (logged), 02:00 is the slot the policy decides about.
    task = due(policy, "active", next_run_at=SLOT - timedelta(hours=1), due_at=SLOT - timedelta(hours=1))
    plan = plan_slot(task, [], NOW)
    assert plan.skips[0].slot == SLOT - timedelta(hours=1) and "late" in plan.skips[0].message
    if policy == "forbid":
        assert [skip.slot for skip in plan.skips] == [SLOT - timedelta(hours=1), SLOT]
    elif policy == "allow":
        assert plan.run_slot == SLOT
    else:
        assert plan.queue == (SLOT,)


# --- catch-up all -----------------------------------------------------------------------------------


MISSED_FROM = SLOT - timedelta(minutes=3)  # 01:57, 01:58, 01:59, 02:00


@pytest.mark.parametrize("pool", POOLS, ids=["no pool", "pool"])
@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("policy", CONCURRENCY_POLICIES)
def test_catchup_all_still_queues_every_missed_slot(policy, state, pool):
    task = due(policy, state, pool, catchup="all", next_run_at=MISSED_FROM, due_at=MISSED_FROM,
               misfire_grace_seconds=600)
    plan = plan_slot(task, [], NOW)
    assert plan.queue == tuple(MISSED_FROM + timedelta(minutes=n) for n in range(4))
    assert plan.run_slot is None and plan.skips == () and not plan.replace and not plan.wait
    assert plan.next_run_at == NEXT


# --- dependency-only tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS, ids=["no pool", "pool"])
@pytest.mark.parametrize("policy", ("forbid", "buffer_one", "buffer_all"))
def test_a_dependency_trigger_waits_while_an_exclusive_task_is_active(policy, pool):
    for state in ("active", "retry waits", "active, a run waits"):
        plan = plan_slot(dependency_only(policy, state, pool), [], NOW)
        assert plan.wait and plan.wait_reason == "previous run still active", (state, plan)
        assert plan.skips == () and plan.queue == () and plan.run_slot is None


@pytest.mark.parametrize("policy", CONCURRENCY_POLICIES)
def test_an_idle_dependency_only_task_runs_its_trigger_late_or_not(policy):
    task = dependency_only(policy)
    plan = plan_slot(task, [], NOW)
    assert plan.run_slot == task.next_run_at and plan.trigger == "dependency"
    assert plan.next_run_at is None and plan.skips == ()


@pytest.mark.parametrize("policy", CONCURRENCY_POLICIES)
def test_a_dependency_trigger_of_an_idle_pool_task_runs_if_its_pool_has_room(policy):
    # The plan runs it; the tick takes a slot of the pool for it, or queues it if there is none.
    task = dependency_only(policy, pool="db")
    plan = plan_slot(task, [], NOW)
    assert plan.run_slot == task.next_run_at and plan.trigger == "dependency" and plan.queue == ()


def test_a_dependency_trigger_under_allow_runs_beside_the_active_run():
    plan = plan_slot(dependency_only("allow", "active"), [], NOW)
    assert plan.run_slot is not None and plan.trigger == "dependency"


@pytest.mark.parametrize("pool", POOLS, ids=["no pool", "pool"])
def test_a_dependency_trigger_under_replace_replaces_the_active_run(pool):
    task = dependency_only("replace", "active", pool)
    plan = plan_slot(task, [], NOW)
    assert plan.replace and plan.queue == (task.next_run_at,) and plan.run_slot is None
