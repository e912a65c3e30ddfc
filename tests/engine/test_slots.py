"""The slot rules, pure: misfire, concurrency and dependency decisions for a frozen `now`."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from scheduler_service.engine.dependencies import ParentState
from scheduler_service.engine.schedules import Schedule
from scheduler_service.engine.slots import DueTask, plan_slot

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 2, 0, 30, tzinfo=UTC)


def due(**overrides) -> DueTask:
    """A task with a cron schedule (``cron_expression``/``timezone``) or the ``schedule`` given."""
    values = dict(
        task_id=1, cron_expression="* * * * *", timezone="UTC", next_run_at=datetime(2026, 11, 28, 2, 0, tzinfo=UTC),
        misfire_grace_seconds=60, concurrency_policy="forbid", active_runs=0, status="success",
    )
    values.update(overrides)
    if "schedule" not in values:
        values["schedule"] = Schedule(cron_expression=values["cron_expression"], timezone=values["timezone"])
    del values["cron_expression"], values["timezone"]
    values.setdefault("due_at", values["next_run_at"])
    return DueTask(**values)


def test_a_due_slot_runs_and_the_next_one_is_computed():
    plan = plan_slot(due(), [], NOW)
    assert plan.run_slot == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert plan.next_run_at == datetime(2026, 11, 28, 2, 1, tzinfo=UTC)
    assert plan.skips == () and not plan.wait


def test_several_missed_slots_within_grace_run_once_as_the_latest():
    plan = plan_slot(due(next_run_at=datetime(2026, 11, 28, 1, 58, tzinfo=UTC), misfire_grace_seconds=600), [], NOW)
    assert plan.run_slot == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert plan.skips == ()


def test_slots_missed_beyond_grace_are_one_skipped_episode():
    plan = plan_slot(due(cron_expression="0 * * * *", next_run_at=datetime(2026, 11, 27, 20, 0, tzinfo=UTC),
                         misfire_grace_seconds=10), [], NOW + timedelta(minutes=5))
    assert plan.run_slot is None
    assert len(plan.skips) == 1
    assert plan.skips[0].slot == datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    assert "missed" in plan.skips[0].message and "02:00:00" in plan.skips[0].message
    assert plan.next_run_at == datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_old_slots_beyond_grace_are_logged_and_the_latest_within_grace_runs():
    plan = plan_slot(due(next_run_at=datetime(2026, 11, 28, 1, 0, tzinfo=UTC), misfire_grace_seconds=60), [], NOW)
    assert plan.run_slot == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert [skip.slot for skip in plan.skips] == [datetime(2026, 11, 28, 1, 0, tzinfo=UTC)]


def test_forbid_skips_while_a_run_or_a_retry_is_active():
    for active in (due(active_runs=1), due(status="retrying")):
        plan = plan_slot(active, [], NOW)
        assert plan.run_slot is None and "still active" in plan.skips[0].message
        assert plan.next_run_at == datetime(2026, 11, 28, 2, 1, tzinfo=UTC)


def test_allow_runs_alongside_an_active_run():
    assert plan_slot(due(concurrency_policy="allow", active_runs=3), [], NOW).run_slot is not None


def test_gate_waits_within_grace_then_skips_past_it():
    busy = [ParentState("extract", "running")]
    assert plan_slot(due(), busy, NOW).wait
    late = plan_slot(due(misfire_grace_seconds=10), busy, NOW)
    assert not late.wait and late.run_slot is None
    assert late.skips[0].message == "parent 'extract' is running past the misfire grace"


def test_gate_skips_for_a_failed_parent_and_runs_after_success():
    assert plan_slot(due(), [ParentState("extract", "failed")], NOW).skips[0].message == "parent 'extract' failed"
    assert plan_slot(due(), [ParentState("extract", "success")], NOW).run_slot is not None


def test_dependency_trigger_runs_even_late_and_waits_under_forbid():
    trigger = due(cron_expression=None, next_run_at=NOW - timedelta(hours=5))
    plan = plan_slot(trigger, [], NOW)
    assert plan.run_slot == NOW - timedelta(hours=5) and plan.trigger == "dependency" and plan.next_run_at is None
    assert plan_slot(due(cron_expression=None, active_runs=1), [], NOW).wait


def test_fall_back_hour_runs_once_in_new_york():
    # 2026-11-01: 01:30 EDT (05:30Z) happens, then 01:30 EST (06:30Z) must not.
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    plan = plan_slot(due(cron_expression="30 1 * * *", timezone="America/New_York", next_run_at=first),
                     [], first + timedelta(seconds=1))
    assert plan.run_slot == first
    assert plan.next_run_at == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


def test_spring_forward_gap_runs_once_right_after_the_gap():
    # 2026-03-08: 02:30 does not exist in New York; it runs at 03:00 EDT (07:00Z).
    before = datetime(2026, 3, 7, 7, 30, tzinfo=UTC)
    plan = plan_slot(due(cron_expression="30 2 * * *", timezone="America/New_York", next_run_at=before),
                     [], before + timedelta(seconds=1))
    assert plan.next_run_at == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


# --- catch-up, jitter, intervals and one-offs ----------------------------------------------

EVERY_MINUTE_DUE = datetime(2026, 11, 28, 1, 57, tzinfo=UTC)  # three slots before NOW's 02:00


def test_catchup_all_queues_each_missed_slot_within_the_grace_oldest_first():
    plan = plan_slot(due(next_run_at=EVERY_MINUTE_DUE, catchup="all", misfire_grace_seconds=600), [], NOW)
    assert plan.run_slot is None and plan.skips == ()
    assert plan.queue == tuple(EVERY_MINUTE_DUE + timedelta(minutes=n) for n in range(4))
    assert plan.next_run_at == datetime(2026, 11, 28, 2, 1, tzinfo=UTC) == plan.next_due_at


def test_catchup_all_queues_whatever_the_concurrency_policy_and_skips_slots_beyond_the_grace():
    plan = plan_slot(due(next_run_at=EVERY_MINUTE_DUE, catchup="all", misfire_grace_seconds=100, active_runs=1),
                     [], NOW)
    # 01:59 and 02:00 are within 100 s of 02:00:30; 01:57 and 01:58 are not.
    assert plan.queue == (datetime(2026, 11, 28, 1, 59, tzinfo=UTC), datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
    [skip] = plan.skips
    assert skip.slot == EVERY_MINUTE_DUE and "more than 100s late" in skip.message


def test_catchup_all_with_one_slot_due_is_an_ordinary_run():
    plan = plan_slot(due(catchup="all"), [], NOW)
    assert plan.run_slot == datetime(2026, 11, 28, 2, 0, tzinfo=UTC) and plan.queue == ()


def test_catchup_none_runs_nothing_missed_and_logs_the_episode_once():
    late = plan_slot(due(next_run_at=EVERY_MINUTE_DUE, catchup="none", misfire_grace_seconds=600,
                         schedule=Schedule(cron_expression="*/3 * * * *")), [], NOW + timedelta(minutes=1))
    assert late.run_slot is None and late.queue == ()
    [skip] = late.skips
    assert "catchup none" in skip.message and skip.slot == EVERY_MINUTE_DUE
    # The latest slot reached on time still runs; only what was missed is not.
    on_time = plan_slot(due(next_run_at=EVERY_MINUTE_DUE, catchup="none", misfire_grace_seconds=600), [],
                        datetime(2026, 11, 28, 2, 0, 5, tzinfo=UTC))
    assert on_time.run_slot == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert "01:57:00+00:00 to 2026-11-28T01:59:00+00:00" in on_time.skips[0].message


def test_catchup_none_runs_a_slot_reached_on_time_and_skips_one_reached_late():
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    plan = plan_slot(due(catchup="none"), [], slot + timedelta(seconds=5))
    assert plan.run_slot == slot and plan.skips == ()
    late = plan_slot(due(catchup="none"), [], slot + timedelta(seconds=30))  # NOW: 30 s after the slot
    assert late.run_slot is None and "catchup none" in late.skips[0].message


def test_jitter_shifts_the_task_s_clock_so_a_jittered_start_is_neither_late_nor_missed():
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    # Drawn 50 minutes of jitter, a zero grace: at slot + 50 min the slot is on time.
    jittered = due(next_run_at=slot, due_at=slot + timedelta(minutes=50), misfire_grace_seconds=0,
                   schedule=Schedule(cron_expression="0 * * * *"), jitter_seconds=3600)
    plan = plan_slot(jittered, [], slot + timedelta(minutes=50))
    assert plan.run_slot == slot and plan.skips == ()
    assert plan.next_run_at == datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    assert plan.next_run_at <= plan.next_due_at <= plan.next_run_at + timedelta(hours=1)


def test_an_interval_task_runs_its_slot_and_moves_one_interval_on():
    anchor = datetime(2026, 11, 28, 1, 59, 0, tzinfo=UTC)
    plan = plan_slot(due(next_run_at=anchor + timedelta(seconds=90),
                         schedule=Schedule(interval_seconds=90, anchor=anchor)), [], NOW)
    assert plan.run_slot == anchor + timedelta(seconds=90)
    assert plan.next_run_at == anchor + timedelta(seconds=180)


def test_a_one_off_runs_once_and_has_no_next_slot():
    run_at = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    plan = plan_slot(due(next_run_at=run_at, schedule=Schedule(run_at=run_at)), [], NOW)
    assert plan.run_slot == run_at and plan.next_run_at is None and plan.next_due_at is None
